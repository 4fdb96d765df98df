"""The training loop behind `ptmoe train` (and `ptmoe compare` / `ptmoe continual`, which call `train`).

One process on CPU or GPU, or several (`accelerate launch -m ptmoe.cli train ...`: DDP, FSDP,
DeepSpeed through accelerate's own config). The batch order is fixed by the seed and each batch
is split across processes, so the global batch is `train.batch_size` whatever the process count.
Checkpoints (adapter, optimizer, RNG, step) are written atomically; `--resume` continues. Run folder
rules (never overwrite a run unless asked): run_folder.py. A non-finite loss stops the run with the
last finite checkpoint and best adapter kept; nothing non-finite is saved.
"""

from __future__ import annotations

import json
import math
import sys
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..collate import epoch_batches, pad_batch
from ..config.loading import dump
from ..config.presets import apply_preset
from ..config.schema import ConfigError
from ..data.format import special_ids
from ..evaluation.routing import RouterMonitor
from . import grow, grow_source
from .data import encode_sources, read_sources
from .optim import optimizer_and_schedule
from .run_folder import (
    NON_FINITE,
    RunStopped,
    check_run_folder,
    checkpoint_note,
    clear_run,
    load_checkpoint,
    non_finite,
    save_checkpoint,
)
from .setup import DATA_INIT_ROWS, build_model, interrupt_at_step_end, output_dir


@torch.no_grad()
def validation_loss(model, rows, batch_size, pad_id, accelerator) -> float | None:
    if not rows:
        return None
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        b = {k: v.to(accelerator.device) for k, v in pad_batch(rows[i : i + batch_size], pad_id).items()}
        sets = [r["set"] for r in rows[i : i + batch_size]]
        out = accelerator.unwrap_model(model)(b["input_ids"], b["attention_mask"], b["labels"], row_sources=sets)
        total += float(out.label_loss) * out.num_label_tokens
        count += out.num_label_tokens
    model.train()
    return total / max(count, 1)


def train(cfg: dict, resume: bool = False, overwrite: bool = False, log=print, stop_after: int | None = None) -> dict:
    """Train per cfg; returns a summary. `stop_after` ends the loop early (tests of resume).
    Raises RunStopped on a non-finite loss or Ctrl-C (the message says what is kept)."""
    run = TrainingRun(cfg, resume, overwrite, log)  # everything checked and loaded; only then the folder
    interrupt, restore_sigint = interrupt_at_step_end()
    run.open_logs()
    try:
        while run.step < run.t["steps"]:
            run.optimizer_step()
            run.log_progress()
            if not run.validate():  # early stopping
                break
            run.save_checkpoint_when_due()
            if stop_after is not None and run.step >= stop_after:
                break
            if run.all_processes_agree(interrupt.is_set()):
                raise KeyboardInterrupt
        run.stop_if_not_finite(None, "weights", run.step)
    except KeyboardInterrupt:
        raise RunStopped(
            f"interrupted at step {run.step}; {checkpoint_note(run.out)}",
            exit_code=130,
            resumable=(run.ckpt / "trainer_state.json").exists(),
        ) from None
    finally:
        restore_sigint()
        run.close_logs()
    return run.finish()


class TrainingRun:
    """One training run, in the order it happens: set up (checks, data, model, optimizer, checkpoint, run
    folder), steps, logs, validation choosing `best/`, checkpoints, the final adapters and summary."""

    def __init__(self, cfg: dict, resume: bool, overwrite: bool, log=print):
        cfg, source = grow_source.from_adapter(apply_preset(cfg))  # --from: its options (and growth); checked here
        self.cfg, self.t, self.log = cfg, cfg["train"], log
        self.out = output_dir(cfg)
        self.ckpt = self.out / "checkpoint"
        check_run_folder(self.out, resume, overwrite)
        if resume and not (self.ckpt / "trainer_state.json").exists() and not (self.out / "checkpoint.old").exists():
            raise ConfigError(f"--resume: no checkpoint in {self.ckpt}")
        self.resume = resume
        self.accelerator = Accelerator(split_batches=True, mixed_precision="no", cpu=not torch.cuda.is_available())
        self.is_main = self.accelerator.is_main_process
        self.world = self.accelerator.num_processes
        self.main_log = log if self.is_main else (lambda *a: None)
        self.build(source, set_seed)
        self.restore_or_init()
        # everything is validated and loaded: only now does the run folder change
        if self.is_main:
            if overwrite:
                clear_run(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(dump(cfg))
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.inner = self.accelerator.unwrap_model(self.model)
        self.monitor = RouterMonitor(self.t["collapse_threshold"], log=self.main_log)
        self.monitor.load_state(self.state.get("router", {}))
        self.batches = self.batch_order()

    # ---- set-up ---------------------------------------------------------------------------------
    def build(self, source, set_seed) -> None:
        """Data (bad rows fail here, before the model loads), model, optimizer and schedule."""
        cfg, t = self.cfg, self.t
        sources, valid, rng = read_sources(cfg, log=self.main_log)
        set_seed(cfg["seed"])
        self.model, tok = build_model(cfg, self.accelerator.device)
        if t["gradient_checkpointing"]:
            self.model.gradient_checkpointing_enable()
        self.pad_id = special_ids(tok)[0]
        self.train_rows, self.valid_rows = encode_sources(cfg, sources, valid, rng, tok, log=self.main_log)
        self.growth = grow.start(cfg, source, self.model, self.train_rows, self.pad_id, log=self.main_log)
        self.optimizer, self.scheduler = optimizer_and_schedule(self.model, t)
        if self.growth is not None:  # frozen parts exactly as they were after every step (weight decay moves them)
            self.optimizer.register_step_post_hook(self.growth.restore)

    def restore_or_init(self) -> None:
        """A resumed run takes its checkpoint; a new one lets the adapter start from the data if it does."""
        self.step, self.best, self.bad_evals, self.history, self.state = 0, None, 0, [], {}
        if not self.resume:
            note = self.model.init_from_data(self.train_rows[:DATA_INIT_ROWS], self.cfg["seed"])
            if note is not None:
                n = min(len(self.train_rows), DATA_INIT_ROWS)
                self.main_log(f"[train] adapter initialised from {n} training inputs: {note}")
            return
        self.state = s = load_checkpoint(self.ckpt, self.model, self.optimizer)
        self.step, self.best, self.bad_evals, self.history = s["step"], s["best"], s["bad_evals"], s.get("history", [])
        self.scheduler.last_epoch = self.step
        self.log(f"[train] resumed at step {self.step} from {self.ckpt}")

    def batch_order(self):
        """Each optimizer step takes grad_accum micro-batches of batch_size examples, in an order fixed by
        the seed; a resumed run replays it up to where it stopped."""
        t = self.t
        lengths = [len(r["input_ids"]) for r in self.train_rows]
        batches = epoch_batches(lengths, t["batch_size"], self.cfg["seed"], t["length_grouped"])
        for _ in range(self.step * t["grad_accum"]):
            next(batches)
        return batches

    def open_logs(self) -> None:
        self.writer = self.log_file = None
        if self.is_main:
            # tensorboard is slow to import; only the main process writes events
            from torch.utils.tensorboard import SummaryWriter

            # one run per folder (a new run needs --overwrite, which clears it); a resumed run drops the
            # events logged after its checkpoint
            purge = self.step + 1 if self.resume else None
            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=purge)
            self.log_file = open(self.out / "log.jsonl", "a" if self.resume else "w")  # noqa: SIM115 (close_logs)
        desc = f"train {self.cfg['method']}"
        self.bar = tqdm(total=self.t["steps"], initial=self.step, disable=not self.is_main, desc=desc, file=sys.stderr)
        self.model.train()
        self.window_start, self.tokens_seen, self.window_loss, self.window_n = time.time(), 0, 0.0, 0
        self.start_time = time.time()

    def close_logs(self) -> None:
        self.bar.close()
        if self.is_main:
            self.log_file.close()
            self.writer.close()

    # ---- one step ---------------------------------------------------------------------------------
    def optimizer_step(self) -> None:
        """grad_accum micro-batches (this process's slice of each global batch), then one update."""
        t = self.t
        self.accumulate([next(self.batches) for _ in range(t["grad_accum"])])
        if t["max_grad_norm"]:
            self.accelerator.clip_grad_norm_(self.inner.trainable_parameters(), t["max_grad_norm"])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.bar.update(1)

    def accumulate(self, micro_batches: list[list[int]]) -> None:
        """Gradients of the step's token mean over all its label tokens on every process (`_objective`, the
        Trainer's), one micro-batch at a time. Each process pads the whole global batch (split_batches), so the
        label count needs no collective; DDP averages gradients over processes, so each loss is x world."""
        accelerator, world, rank = self.accelerator, self.world, self.accelerator.process_index
        fulls, slices = [], []
        for idx in micro_batches:
            per = len(idx) // world  # split_batches: rows past world * per are left out on every process
            fulls.append(pad_batch([self.train_rows[i] for i in idx[: world * per]], self.pad_id))
            slices.append((idx, slice(rank * per, (rank + 1) * per)))
        step_n = sum(int((full["labels"][:, 1:] != -100).sum()) for full in fulls)
        for full, (idx, mine) in zip(fulls, slices):
            b = {k: v[mine].to(accelerator.device) for k, v in full.items()}
            sets = [self.train_rows[i]["set"] for i in idx][mine]
            out = self.model(
                b["input_ids"], b["attention_mask"], b["labels"], num_items_in_batch=step_n, row_sources=sets
            )
            loss = out.loss * world if world > 1 else out.loss
            self.stop_if_not_finite(float(loss.detach()), "loss", self.step + 1)
            accelerator.backward(loss)
            self.window_loss += float(out.label_loss.detach()) * out.num_label_tokens
            self.window_n += out.num_label_tokens
            self.tokens_seen += int(b["attention_mask"].sum())
            self.monitor.observe(sets, out.routing)

    def log_progress(self) -> None:
        t, step = self.t, self.step
        if not (step % t["log_every"] == 0 or step == t["steps"]):
            return
        dt = time.time() - self.window_start
        entry = {
            "step": step,
            "loss": self.window_loss / max(self.window_n, 1),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens_per_s": self.tokens_seen * self.world / dt,
            "steps_per_s": t["log_every"] / dt,
        }
        entry.update(self.monitor.summary(reset=True))
        self.bar.set_postfix(loss=f"{entry['loss']:.3f}", tok_s=f"{entry['tokens_per_s']:.0f}")
        self.record(entry, "train")
        self.window_start, self.tokens_seen, self.window_loss, self.window_n = time.time(), 0, 0.0, 0

    def validate(self) -> bool:
        """The validation loss when due; a better one saves `best/`. False: stop early."""
        t, step = self.t, self.step
        if not ((t["eval_every"] and step % t["eval_every"] == 0) or step == t["steps"]):
            return True
        vl = validation_loss(self.model, self.valid_rows, t["batch_size"], self.pad_id, self.accelerator)
        if vl is not None:
            self.stop_if_not_finite(vl, "validation loss", step)
            self.history.append({"step": step, "valid_loss": vl})
            self.record({"step": step, "valid_loss": vl}, "valid")
            if self.best is None or vl < self.best:
                self.best, self.bad_evals = vl, 0
                self.stop_if_not_finite(None, "weights", step)
                if self.is_main:
                    self.inner.save_pretrained(self.out / "best", extra={"step": step, "valid_loss": vl})
            else:
                self.bad_evals += 1
        if t["early_stopping_patience"] and self.bad_evals >= t["early_stopping_patience"]:
            self.log(f"[train] early stop at step {step}: no improvement in {self.bad_evals} evaluations")
            return False
        return True

    def save_checkpoint_when_due(self) -> None:
        if not (self.step % self.t["save_every"] == 0 or self.step == self.t["steps"]):
            return
        self.stop_if_not_finite(None, "weights", self.step)
        if self.is_main:
            save_checkpoint(self.ckpt, self.inner, self.optimizer, self.checkpoint_state())

    def checkpoint_state(self) -> dict:
        return {
            "step": self.step,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "wall_s": self.wall_s(),
            "history": self.history,
            "router": self.monitor.state(),
        }

    # ---- shared by the steps --------------------------------------------------------------------
    def wall_s(self) -> float:
        """A resumed run's time covers the whole run."""
        return self.state.get("wall_s", 0.0) + time.time() - self.start_time

    def record(self, entry: dict, prefix: str) -> None:
        if self.is_main:
            self.log_file.write(json.dumps(entry) + "\n")
            self.log_file.flush()
            for k, v in entry.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(f"{prefix}/{k.removeprefix('valid_')}", v, entry["step"])

    def all_processes_agree(self, flag: bool) -> bool:
        """True on every process when it is true on any (every process stops after the same step, or
        the next collective would hang)."""
        if self.world > 1:
            votes = self.accelerator.reduce(torch.tensor([float(flag)], device=self.accelerator.device), "sum")
            return bool(votes.item() > 0)
        return flag

    def stop_if_not_finite(self, value: float | None, what: str, at: int) -> None:
        """A NaN/inf loss, or NaN/inf weights about to be saved, ends the run (on every process)."""
        bad = (value is not None and not math.isfinite(value)) or (value is None and bool(non_finite(self.inner)))
        if self.all_processes_agree(bad):
            raise RunStopped(
                f"non-finite {what} at step {at}: training stopped, nothing from this step was "
                f"saved; {checkpoint_note(self.out)}. Lower train.lr or check the data",
                exit_code=NON_FINITE,
            )

    # ---- the end ----------------------------------------------------------------------------------
    def finish(self) -> dict:
        """The final adapter (and `best/` when nothing was validated) and the run's summary."""
        self.accelerator.wait_for_everyone()
        summary = {
            "output_dir": str(self.out),
            "steps": self.step,
            "best_valid_loss": self.best,
            "history": self.history,
            "wall_s": self.wall_s(),
            "num_trainable": self.inner.num_trainable(),
            "router": self.monitor.totals(),
        }
        if self.is_main:
            if self.growth is not None:  # the router alone first, where grow.router_fit_steps asks (grow.py)
                self.growth.fit_router(self.inner, self.out / "best")
            self.inner.save_pretrained(self.out / "final", extra={"step": self.step})
            if not (self.out / "best").exists():  # no validation data: the final adapter is the best we know
                self.inner.save_pretrained(self.out / "best", extra={"step": self.step})
            (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2))
        return summary
