"""`ptmoe train CONFIG.yaml [key=value ...]`: train any method with accelerate.

One process on CPU or GPU, or several (`accelerate launch -m ptmoe.cli train ...`: DDP, FSDP,
DeepSpeed through accelerate's own config). The batch order is fixed by the seed and each batch
is split across processes, so the global batch is `train.batch_size` whatever the process count.
Checkpoints (adapter, optimizer, RNG, step) are written atomically; `--resume` continues. The run
folder rules (never overwrite a run unless asked) are in runs.py. A non-finite loss stops the run
with the last finite checkpoint and best adapter kept; nothing non-finite is saved.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from transformers import get_scheduler

from ..adapted import AdaptedModel
from ..base_models import load_base_model
from ..collate import epoch_batches, pad_batch
from ..data.format import special_ids
from ..device import resolve_dtype
from . import grow
from .config import ConfigError, dump, load_config
from .presets import apply_preset, resolve_method_options
from .routing import RouterMonitor
from .runs import (
    NON_FINITE,
    RunStopped,
    check_run_folder,
    checkpoint_note,
    clear_run,
    load_checkpoint,
    non_finite,
    save_checkpoint,
)
from .train_data import encode_sources, read_sources


def add_arguments(p):
    p.add_argument("config", nargs="?", help="YAML config (see configs/ and docs/config.md)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=0.1 method=pt")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in output_dir")
    p.add_argument(
        "--from", dest="init_from", help="start from this adapter (grow it with a grow: section; docs/continual.md)"
    )


def run(args):
    if not args.config and not args.overrides:
        raise ConfigError(
            "give a config file or key=value overrides (docs/config.md; `ptmoe config show` prints every default)"
        )
    from_adapter = [f"init_from={json.dumps(args.init_from)}"] if args.init_from else []  # a quoted YAML string
    cfg = load_config(args.config, args.overrides + from_adapter)
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:  # one summary, not one per process
        print(json.dumps({k: summary[k] for k in ("output_dir", "steps", "best_valid_loss", "wall_s")}, indent=2))
    return 0


# ---- building blocks --------------------------------------------------------------------------
# train.schedule -> transformers' scheduler (constant keeps the warm-up)
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
DATA_INIT_ROWS = 512  # training inputs an adapter that starts from the data (router_init: kmeans) sees


def output_dir(cfg: dict) -> Path:
    return Path(str(cfg["output_dir"]).format(method=cfg["method"], seed=cfg["seed"]))


def build_model(cfg: dict, device: torch.device):
    options = resolve_method_options(cfg)  # may read the data: its errors come before the model loads
    base, tok = load_base_model(cfg["model"], resolve_dtype(cfg["dtype"], device))
    model = AdaptedModel(base.to(device), cfg["method"], options, tok, seed=cfg["seed"])
    return model, tok


def param_groups(model: AdaptedModel, lr: float, lr_groups: dict, weight_decay: float):
    """AdamW groups: a parameter whose name contains a lr_groups key gets that learning rate."""
    groups: dict[float, list] = {}
    matched = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        short = name.split(".")[-1]
        group_lr = lr
        for key, value in lr_groups.items():
            if key == short or f".{key}." in f".{name}.":
                group_lr = float(value)
                matched.add(key)
                break
        groups.setdefault(group_lr, []).append(p)
    unused = sorted(set(lr_groups) - matched)
    if unused:
        raise ConfigError(f"train.lr_groups: no trainable parameter matches {unused}")
    return [{"params": ps, "lr": glr, "initial_lr": glr, "weight_decay": weight_decay} for glr, ps in groups.items()]


# ---- the loop ------------------------------------------------------------------------------------
def interrupt_at_step_end():
    """-> (event, restore). Ctrl-C during training sets the event, which the loop reads once a step is
    done, so the interrupt never lands inside a save, a log write or TensorBoard's writer (a
    KeyboardInterrupt there can leave a lock held, and the exit then hangs); a second Ctrl-C interrupts
    at once. restore() puts the previous handler back."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # handlers live on the main thread
        return requested, lambda: None

    def on_sigint(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    return requested, lambda: signal.signal(signal.SIGINT, previous)


@torch.no_grad()
def validation_loss(model, rows, batch_size, pad_id, accelerator) -> float | None:
    if not rows:
        return None
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        b = {k: v.to(accelerator.device) for k, v in pad_batch(rows[i : i + batch_size], pad_id).items()}
        accelerator.unwrap_model(model).set_row_sources([r["set"] for r in rows[i : i + batch_size]])
        out = accelerator.unwrap_model(model)(b["input_ids"], b["attention_mask"], b["labels"])
        total += float(out.loss) * out.num_label_tokens
        count += out.num_label_tokens
    model.train()
    return total / max(count, 1)


def train(cfg: dict, resume: bool = False, overwrite: bool = False, log=print, stop_after: int | None = None) -> dict:
    """Train per cfg; returns a summary. `stop_after` ends the loop early (tests of resume).
    Raises RunStopped on a non-finite loss or Ctrl-C (the message says what is kept)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg, source = grow.from_adapter(apply_preset(cfg))  # --from: its options (and growth); checked here
    t = cfg["train"]
    out = output_dir(cfg)
    ckpt = out / "checkpoint"
    check_run_folder(out, resume, overwrite)
    if resume and not (ckpt / "trainer_state.json").exists() and not (out / "checkpoint.old").exists():
        raise ConfigError(f"--resume: no checkpoint in {ckpt}")
    accelerator = Accelerator(split_batches=True, mixed_precision="no", cpu=not torch.cuda.is_available())
    is_main = accelerator.is_main_process
    main_log = log if is_main else (lambda *a: None)
    sources, valid, rng = read_sources(cfg, log=main_log)  # bad data fails here, before the model loads
    set_seed(cfg["seed"])
    model, tok = build_model(cfg, accelerator.device)
    if t["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    pad_id = special_ids(tok)[0]
    train_rows, valid_rows = encode_sources(cfg, sources, valid, rng, tok, log=main_log)
    growth = grow.start(cfg, source, model, train_rows, pad_id, log=main_log)
    optimizer = torch.optim.AdamW(param_groups(model, t["lr"], t["lr_groups"], t["weight_decay"]))
    if growth is not None:  # frozen parts exactly as they were after every step (weight decay moves them)
        optimizer.register_step_post_hook(growth.restore)
    warmup = int(t["warmup_ratio"] * t["steps"])
    scheduler = get_scheduler(
        SCHEDULES[t["schedule"]], optimizer, num_warmup_steps=warmup, num_training_steps=t["steps"]
    )
    step, best, bad_evals, history, state = 0, None, 0, [], {}
    if not resume:
        note = model.init_from_data(train_rows[:DATA_INIT_ROWS], cfg["seed"])
        if note is not None:
            main_log(f"[train] adapter initialised from {min(len(train_rows), DATA_INIT_ROWS)} training inputs: {note}")
    if resume:
        state = load_checkpoint(ckpt, model, optimizer)
        step, best, bad_evals, history = state["step"], state["best"], state["bad_evals"], state.get("history", [])
        scheduler.last_epoch = step
        log(f"[train] resumed at step {step} from {ckpt}")
    # everything is validated and loaded: only now does the run folder change
    if is_main:
        if overwrite:
            clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump(cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)
    monitor = RouterMonitor(inner, t["collapse_threshold"], log=main_log)
    monitor.load_state(state.get("router", {}))
    # a resumed run's summary covers the whole run: time, history, routing
    wall_s = lambda: state.get("wall_s", 0.0) + time.time() - start_time
    world = accelerator.num_processes
    # each optimizer step takes grad_accum micro-batches of batch_size examples
    lengths = [len(r["input_ids"]) for r in train_rows]
    batches = epoch_batches(lengths, t["batch_size"], cfg["seed"], t["length_grouped"])
    for _ in range(step * t["grad_accum"]):  # replay the order up to where we stopped
        next(batches)
    writer = log_file = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        # one run per folder (a new run needs --overwrite, which clears it); a resumed run drops the
        # events logged after its checkpoint
        writer = SummaryWriter(str(out / "tensorboard"), purge_step=step + 1 if resume else None)
        log_file = open(out / "log.jsonl", "a" if resume else "w")  # noqa: SIM115 (closed in the loop's finally)

    def record(entry: dict, prefix: str) -> None:
        if is_main:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()
            for k, v in entry.items():
                if isinstance(v, (int, float)) and k != "step":
                    writer.add_scalar(f"{prefix}/{k.removeprefix('valid_')}", v, entry["step"])

    def stop_if_not_finite(value: float | None, what: str, at: int) -> None:
        """A NaN/inf loss, or NaN/inf weights about to be saved, ends the run (on every process)."""
        bad = (value is not None and not math.isfinite(value)) or (value is None and bool(non_finite(inner)))
        if world > 1:
            flag = accelerator.reduce(torch.tensor([float(bad)], device=accelerator.device), "sum")
            bad = bool(flag.item() > 0)
        if bad:
            raise RunStopped(
                f"non-finite {what} at step {at}: training stopped, nothing from this step was "
                f"saved; {checkpoint_note(out)}. Lower train.lr or check the data",
                exit_code=NON_FINITE,
            )

    from tqdm.auto import tqdm

    bar = tqdm(total=t["steps"], initial=step, disable=not is_main, desc=f"train {cfg['method']}", file=sys.stderr)
    model.train()
    t0, tokens_seen, window_loss, window_n = time.time(), 0, 0.0, 0
    start_time = time.time()
    interrupt, restore_sigint = interrupt_at_step_end()
    try:
        while step < t["steps"]:
            for _ in range(t["grad_accum"]):
                idx = next(batches)
                full = pad_batch([train_rows[i] for i in idx], pad_id)
                # split_batches: this process's slice of the global batch
                rank, per = accelerator.process_index, len(idx) // world
                b = {k: v[rank * per : (rank + 1) * per].to(accelerator.device) for k, v in full.items()}
                global_n = int((full["labels"][:, 1:] != -100).sum())
                inner_sets = [train_rows[i]["set"] for i in idx][rank * per : (rank + 1) * per]
                accelerator.unwrap_model(model).set_row_sources(inner_sets)
                out_ = model(b["input_ids"], b["attention_mask"], b["labels"])
                # token-mean over the global batch: DDP averages over processes, so scale by world
                loss = out_.loss * out_.num_label_tokens * world / max(global_n, 1)
                aux = inner.aux_loss()
                if aux is not None:
                    loss = loss + aux
                stop_if_not_finite(float(loss.detach()), "loss", step + 1)
                accelerator.backward(loss / t["grad_accum"])
                window_loss += float(out_.loss.detach()) * out_.num_label_tokens
                window_n += out_.num_label_tokens
                tokens_seen += int(b["attention_mask"].sum())
                monitor.observe(inner_sets)
            if t["max_grad_norm"]:
                accelerator.clip_grad_norm_(inner.trainable_parameters(), t["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step % t["log_every"] == 0 or step == t["steps"]:
                dt = time.time() - t0
                entry = {
                    "step": step,
                    "loss": window_loss / max(window_n, 1),
                    "lr": scheduler.get_last_lr()[0],
                    "tokens_per_s": tokens_seen * world / dt,
                    "steps_per_s": t["log_every"] / dt,
                }
                entry.update(monitor.summary(reset=True))
                bar.set_postfix(loss=f"{entry['loss']:.3f}", tok_s=f"{entry['tokens_per_s']:.0f}")
                record(entry, "train")
                t0, tokens_seen, window_loss, window_n = time.time(), 0, 0.0, 0
            if (t["eval_every"] and step % t["eval_every"] == 0) or step == t["steps"]:
                vl = validation_loss(model, valid_rows, t["batch_size"], pad_id, accelerator)
                if vl is not None:
                    stop_if_not_finite(vl, "validation loss", step)
                    history.append({"step": step, "valid_loss": vl})
                    record({"step": step, "valid_loss": vl}, "valid")
                    if best is None or vl < best:
                        best, bad_evals = vl, 0
                        stop_if_not_finite(None, "weights", step)
                        if is_main:
                            inner.save_pretrained(out / "best", extra={"step": step, "valid_loss": vl})
                    else:
                        bad_evals += 1
                if t["early_stopping_patience"] and bad_evals >= t["early_stopping_patience"]:
                    log(f"[train] early stop at step {step}: no improvement in {bad_evals} evaluations")
                    break
            if step % t["save_every"] == 0 or step == t["steps"]:
                stop_if_not_finite(None, "weights", step)
                if is_main:
                    save_checkpoint(
                        ckpt,
                        inner,
                        optimizer,
                        {
                            "step": step,
                            "best": best,
                            "bad_evals": bad_evals,
                            "wall_s": wall_s(),
                            "history": history,
                            "router": monitor.state(),
                        },
                    )
            if stop_after is not None and step >= stop_after:
                break
            requested = interrupt.is_set()
            if world > 1:  # every process stops after the same step, or the next collective would hang
                votes = accelerator.reduce(torch.tensor([float(requested)], device=accelerator.device), "sum")
                requested = bool(votes.item() > 0)
            if requested:
                raise KeyboardInterrupt
        stop_if_not_finite(None, "weights", step)
    except KeyboardInterrupt:
        raise RunStopped(
            f"interrupted at step {step}; {checkpoint_note(out)}",
            exit_code=130,
            resumable=(ckpt / "trainer_state.json").exists(),
        ) from None
    finally:
        restore_sigint()
        bar.close()
        if is_main:
            log_file.close()
            writer.close()
    accelerator.wait_for_everyone()
    summary = {
        "output_dir": str(out),
        "steps": step,
        "best_valid_loss": best,
        "history": history,
        "wall_s": wall_s(),
        "num_trainable": inner.num_trainable(),
        "router": monitor.totals(),
    }
    if is_main:
        inner.save_pretrained(out / "final", extra={"step": step})
        if not (out / "best").exists():  # no validation data: the final adapter is the best we know
            inner.save_pretrained(out / "best", extra={"step": step})
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
