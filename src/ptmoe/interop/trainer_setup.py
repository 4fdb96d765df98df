"""`ptmoe train`'s run, handed to transformers' Trainer: the same model (seeded, built and initialised from
the data as `ptmoe train` does), rows in its batch order, optimizer and schedule, and its random state at
the first step, so that N Trainer steps give the adapter N steps of `ptmoe train` give (one process,
tests/test_trainers.py). What stays `ptmoe train`'s own: docs/trainers.md."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import set_seed
from transformers import TrainerCallback, TrainingArguments

from ..adapted import AdaptedModel
from ..config.loading import load_config
from ..config.presets import apply_preset
from ..config.schema import ConfigError
from ..training.optim import optimizer_and_schedule
from ..training.setup import DATA_INIT_ROWS, build_model
from .trainers import AdapterTrainer, TrainingRows, collator_for, training_rows


class StartLikePtmoeTrain(TrainerCallback):
    """Puts torch's random state where `ptmoe train` has it at its first step (right after the model is built
    and initialised), before the first step of a new run: the Trainer reseeds and starts its data loader in
    between, and router noise draws from that state. A resumed run keeps the checkpoint's own state."""

    def __init__(self, cpu_state: torch.Tensor, cuda_states: list | None = None):
        self.cpu_state, self.cuda_states = cpu_state, cuda_states

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0 and self.cpu_state is not None:
            torch.set_rng_state(self.cpu_state)
            if self.cuda_states:
                torch.cuda.set_rng_state_all(self.cuda_states)
            self.cpu_state = None  # once


@dataclass
class PtmoeTrainSetup:
    """What `ptmoe train` builds for a config, ready for a Trainer (`trainer()` wires it all)."""

    config: dict
    model: AdaptedModel
    tokenizer: Any
    rows: TrainingRows
    optimizers: tuple  # (AdamW, schedule), as ptmoe train's
    callback: StartLikePtmoeTrain

    def arguments(self, output_dir: str | os.PathLike, **overrides) -> TrainingArguments:
        """TrainingArguments with ptmoe train's batch, steps, clipping, seed, logging and checkpoint
        intervals; `overrides` (report_to="wandb", bf16=True, ...) win."""
        t = self.config["train"]
        options = {
            "output_dir": str(output_dir),
            "max_steps": t["steps"],
            "per_device_train_batch_size": t["batch_size"],
            "gradient_accumulation_steps": t["grad_accum"],
            "learning_rate": t["lr"],
            "weight_decay": t["weight_decay"],
            "max_grad_norm": t["max_grad_norm"],
            "seed": self.config["seed"],
            "logging_steps": t["log_every"],
            "save_steps": t["save_every"],
            "train_sampling_strategy": "sequential",  # the dataset is already in ptmoe train's order
            "remove_unused_columns": False,  # the collator reads each row's data set
            "report_to": "none",
            **overrides,
        }
        return TrainingArguments(**options)

    def trainer(self, output_dir: str | os.PathLike, trainer_class=AdapterTrainer, **overrides):
        """An AdapterTrainer (or `trainer_class`) on ptmoe train's rows, in its order, with its optimizer."""
        return trainer_class(
            model=self.model,
            args=self.arguments(output_dir, **overrides),
            train_dataset=self.rows.in_training_order(),
            data_collator=collator_for(self.model, self.tokenizer, self.config["data"]["max_length"]),
            optimizers=self.optimizers,
            callbacks=[self.callback],
        )


def ptmoe_train_setup(config: str | os.PathLike | None = None, overrides=(), log=print) -> PtmoeTrainSetup:
    """`config` and `overrides` as `ptmoe train CONFIG key=value ...` takes them. A run that starts from an
    adapter (`--from`, growth) stays `ptmoe train`'s."""
    cfg = load_config(config, list(overrides))
    if cfg.get("init_from"):
        raise ConfigError("init_from: starting from an adapter (ptmoe train --from, growth) is ptmoe train's only")
    cfg = apply_preset(cfg)
    set_seed(cfg["seed"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = build_model(cfg, device)
    if cfg["train"]["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    rows = training_rows(tok, cfg, log=log)
    note = model.init_from_data(rows.train[:DATA_INIT_ROWS], cfg["seed"])
    if note is not None:
        log(f"[train] adapter initialised from {min(len(rows.train), DATA_INIT_ROWS)} training inputs: {note}")
    optimizers = optimizer_and_schedule(model, cfg["train"])
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return PtmoeTrainSetup(cfg, model, tok, rows, optimizers, StartLikePtmoeTrain(torch.get_rng_state(), cuda))
