"""Training an AdaptedModel with transformers' Trainer (and TRL's SFTTrainer, `trl_sft.py`): the rows and
batches `ptmoe train` builds, and checkpoints that are adapter folders. docs/trainers.md.

- `training_rows`: the encoded rows of a ptmoe config (prepared sets or your own files, read and
  encoded by training/data.py), and `in_training_order`, the order `ptmoe train` feeds them in.
- `PtmoeCollator` / `collator_for`: ptmoe.collate's padding of encoded rows; raw examples are encoded
  with ptmoe.data's prompt format first; each row's data set goes to the router where it reads one.
- `AdapterCheckpoints` (a Trainer mixin) and `AdapterTrainer`: transformers' Trainer saves a model
  that is neither a PreTrainedModel nor a PeftModel as its `state_dict()` in one model.safetensors (for an
  AdaptedModel the adapter and its config, `AdaptedModel.state_dict`); these save the adapter folder
  instead (`AdaptedModel.save_pretrained`: with the model card and a replay store) and resume or pick
  the best checkpoint from it. The optimizer,
  scheduler and RNG files beside it stay the Trainer's own (torch.save; it loads them weights_only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import Trainer

from ..adapted import AdaptedModel
from ..collate import epoch_batches, pad_batch
from ..config.loading import load_config
from ..data.format import encode_row, special_ids
from ..persistence import CONFIG_NAME, AdapterError, read_adapter_config
from ..training.data import load_sources


# ---- rows ---------------------------------------------------------------------------------------------
@dataclass
class TrainingRows:
    """A config's encoded rows: `train` (sources mixed, as `ptmoe train` indexes them), `valid` (the
    slice held back for validation), and the resolved `config`."""

    train: list[dict]
    valid: list[dict]
    config: dict

    def in_training_order(self, steps: int | None = None) -> list[dict]:
        """The rows `ptmoe train` feeds its first `steps` optimizer steps (default train.steps), batch after
        batch: a Trainer with per_device_train_batch_size=train.batch_size, gradient_accumulation_steps=
        train.grad_accum and train_sampling_strategy="sequential" sees the same batches (one process)."""
        t = self.config["train"]
        lengths = [len(r["input_ids"]) for r in self.train]
        batches = epoch_batches(lengths, t["batch_size"], self.config["seed"], t["length_grouped"])
        return [self.train[i] for _ in range((steps or t["steps"]) * t["grad_accum"]) for i in next(batches)]


def training_rows(tokenizer, config: str | os.PathLike | dict | None = None, overrides=(), log=print) -> TrainingRows:
    """The rows `ptmoe train` trains and validates on: `config` a YAML file (or an already resolved config
    dict), `overrides` its key=value overrides (`["data.train=['my.jsonl']", "data.eval=[]"]`); the data
    options of docs/config.md, a bad file or key a one-line error."""
    cfg = config if isinstance(config, dict) else load_config(config, list(overrides))
    train, valid = load_sources(cfg, tokenizer, log=log)
    return TrainingRows(train, valid, cfg)


# ---- batches ------------------------------------------------------------------------------------------
@dataclass
class PtmoeCollator:
    """Rows -> the batch AdaptedModel's forward takes (input_ids, attention_mask, labels; right padding).
    A row is either encoded ({"input_ids", "labels"}: `training_rows`, ptmoe.data.format) or an example
    ({"question", "context", "answers"} or {"question", "task": "math", "answer"}, encoded here as `ptmoe
    train` encodes it, labels on the answer only). `row_sources`: also pass each row's data set ("set")
    for the router (build it with `collator_for`, which checks the adapter reads them)."""

    tokenizer: Any
    max_length: int = 512
    row_sources: bool = False

    def __post_init__(self):
        self.pad_id = special_ids(self.tokenizer)[0]

    def __call__(self, rows: list[dict]) -> dict:
        batch = pad_batch([self._encoded(i, r) for i, r in enumerate(rows)], self.pad_id)
        if self.row_sources:
            missing = [i for i, r in enumerate(rows) if not r.get("set")]
            if missing:
                raise ValueError(f"row {missing[0]} of the batch: no 'set' (its data set) for row_sources=True")
            batch["row_sources"] = [r["set"] for r in rows]
        return batch

    def _encoded(self, i: int, row: dict) -> dict:
        where = f"row {i} of the batch"
        if "input_ids" in row:
            if "labels" not in row:
                raise ValueError(f"{where}: 'input_ids' without 'labels' (give 'question' and 'answers' instead)")
            return {"input_ids": row["input_ids"], "labels": row["labels"]}
        if "question" not in row:
            raise ValueError(
                f"{where}: neither encoded ('input_ids', 'labels') nor an example ('question'); keys: {sorted(row)}"
            )
        return encode_row(
            row, self.tokenizer, train=True, max_length=self.max_length, where=f"{where} ({row['question'][:40]!r})"
        )


def collator_for(model: AdaptedModel, tokenizer, max_length: int = 512, row_sources: bool | None = None):
    """The collator for `model`. row_sources None: pass each row's data set exactly when the adapter reads
    it (routing by source, source supervision); True for an adapter that does not is an error."""
    reads = model.adapter.reads_row_sources
    if row_sources and not reads:
        raise ValueError(
            f"row_sources=True: the {model.method!r} adapter does not read row sources (only a routed adapter "
            f"with route_by: source or source_supervision does)"
        )
    return PtmoeCollator(tokenizer, max_length, reads if row_sources is None else row_sources)


# ---- checkpoints --------------------------------------------------------------------------------------
def save_adapter(model: AdaptedModel, folder, extra: dict | None = None, overwrite: bool = False) -> Path:
    """The adapter folder's files into `folder`, never over an adapter already there unless `overwrite`.
    A new or empty folder is written at once (one rename, fsutil.atomic_dir); a folder holding other
    things (the Trainer's output_dir with its checkpoints) keeps them: the files are built beside and
    moved in one by one, the config last, so a folder with a config always has its weights."""
    folder = Path(folder)
    if (folder / CONFIG_NAME).exists() and not overwrite:
        raise AdapterError(f"{folder} already holds an adapter: save elsewhere, or pass overwrite_adapter=True")
    if not folder.is_dir() or not any(folder.iterdir()):
        return model.save_pretrained(folder, extra)
    staged = model.save_pretrained(folder / ".adapter.tmp", extra)
    for name in sorted(os.listdir(staged), key=lambda n: n == CONFIG_NAME):
        os.replace(staged / name, folder / name)
    staged.rmdir()
    return folder


class AdapterCheckpoints:
    """Mixin for transformers' Trainer (and subclasses such as TRL's SFTTrainer) training an AdaptedModel:
    `save_model` and every checkpoint write the adapter folder (adapter_config.json, the safetensors
    weights, the model card, a replay store where there is one), never the frozen base; resuming and
    `load_best_model_at_end` read it back. `overwrite_adapter=True` lets a save replace an adapter that
    this trainer did not write."""

    def __init__(self, *args, overwrite_adapter: bool = False, **kwargs):
        self.overwrite_adapter, self._written, self._best_step = overwrite_adapter, set(), None
        super().__init__(*args, **kwargs)
        if not isinstance(self._adapted(), AdaptedModel):
            raise TypeError(f"{type(self).__name__} trains a ptmoe AdaptedModel, got {type(self._adapted()).__name__}")
        # Trainer.train would align the tokenizer's special tokens into `model.config` as into a transformers
        # config (an AdaptedModel's is its method's options); ptmoe passes special ids explicitly where it needs them
        self.processing_class = None
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if self.is_fsdp_enabled or (plugin is not None and plugin.zero_stage == 3):
            raise ValueError(
                f"{type(self).__name__}: FSDP and DeepSpeed ZeRO-3 shard the adapter's parameters, and the adapter is "
                f"saved from one process's copy: use DDP or ZeRO-1/2 (docs/trainers.md)"
            )

    def train(self, resume_from_checkpoint=None, **kwargs):
        """Refuses at once, not at the first save, a run whose checkpoints would land on adapters that
        are already in the output folder (a finished run, or checkpoints after the one resumed from)."""
        if not self.overwrite_adapter and self.args.should_save and resume_from_checkpoint is not True:
            start = _step(resume_from_checkpoint) if resume_from_checkpoint else -1
            folders = sorted(Path(self.args.output_dir).glob("checkpoint-*"), key=_step)
            taken = [c.name for c in folders if _step(c) > start and (c / CONFIG_NAME).exists()]
            if taken:
                raise AdapterError(
                    f"{self.args.output_dir} already holds {', '.join(taken)}: resume from the last one "
                    f"(train(resume_from_checkpoint=True)), choose another output_dir, or pass overwrite_adapter=True"
                )
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _adapted(self, model=None) -> AdaptedModel:
        return self.accelerator.unwrap_model(model or self.model, keep_torch_compile=False)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        folder = Path(output_dir or self.args.output_dir).resolve()
        args = self.args
        training = {
            "trainer": type(self).__name__,
            "steps": self.state.max_steps or args.max_steps,
            "batch_size": args.per_device_train_batch_size,
            "grad_accum": args.gradient_accumulation_steps,
            "lr": args.learning_rate,
            "seed": args.seed,
        }
        # after load_best_model_at_end the weights are the best checkpoint's
        extra = {"step": self._best_step or self.state.global_step, "training": training}
        save_adapter(self._adapted(), folder, extra, overwrite=self.overwrite_adapter or folder in self._written)
        self._written.add(folder)

    def _restore_adapter(self, folder, model=None) -> None:
        """A checkpoint's adapter into the model: the same method and base model, or a one-line error."""
        target = self._adapted(model)
        where = Path(folder) / CONFIG_NAME
        meta = read_adapter_config(folder)
        if meta["method"] != target.method:
            raise AdapterError(f"{where}: a {meta['method']!r} adapter, and this model's is {target.method!r}")
        target.check_base(meta, where)
        target.load_weights(folder)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        self._restore_adapter(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        self._restore_adapter(self.state.best_model_checkpoint)
        self._best_step = self.state.best_global_step

    def create_model_card(self, *args, **kwargs) -> None:
        """The adapter folder carries ptmoe's own model card (README.md); the Trainer's would replace it."""


class AdapterTrainer(AdapterCheckpoints, Trainer):
    """transformers' Trainer for a ptmoe AdaptedModel: checkpoints and `save_model` are adapter folders."""


def _step(checkpoint) -> int:
    """N of a Trainer's checkpoint-N folder (-1 for any other name)."""
    tail = Path(checkpoint).name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1
