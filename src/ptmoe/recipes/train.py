"""`ptmoe train CONFIG.yaml [key=value ...]`: train any method with accelerate.

One process on CPU or GPU, or several (`accelerate launch -m ptmoe.cli train ...`: DDP, FSDP,
DeepSpeed through accelerate's own config). The batch order is fixed by the seed and each batch
is split across processes, so the global batch is `train.batch_size` whatever the process count.
Checkpoints (adapter, optimizer, RNG, step) are written atomically; `--resume` continues.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import get_scheduler

from ..adapted import AdaptedModel
from ..base_models import load_base_model
from ..collate import epoch_batches, pad_batch
from ..data.format import special_ids
from ..device import resolve_dtype
from ..fsutil import atomic_dir, recover_dir
from .config import ConfigError, dump, load_config
from .presets import apply_preset
from .routing import RouterMonitor


def add_arguments(p):
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=0.1 method=pt")
    p.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoint")


def run(args):
    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # one summary, not one per process
        print(json.dumps({k: summary[k] for k in ("output_dir", "steps", "best_valid_loss", "wall_s")}, indent=2))
    return 0


# ---- building blocks --------------------------------------------------------------------------
# train.schedule -> transformers' scheduler (constant keeps the warm-up)
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def output_dir(cfg: dict) -> Path:
    return Path(str(cfg["output_dir"]).format(method=cfg["method"], seed=cfg["seed"]))


def build_model(cfg: dict, device: torch.device):
    base, tok = load_base_model(cfg["model"], resolve_dtype(cfg["dtype"], device))
    model = AdaptedModel(base.to(device), cfg["method"], cfg["method_options"], tok, seed=cfg["seed"])
    return model, tok


def load_sources(cfg: dict, tok, log=print):
    """Training and validation examples, encoded. Validation is held back from the training
    sources (never from evaluation sets). Several sources are mixed with temperature sampling."""
    from ..data import load_examples
    from ..data.format import encode_dataset

    d = cfg["data"]
    rng = random.Random(cfg["seed"])
    per_source, valid = [], []
    for spec in d["train"]:
        ex = list(load_examples(spec, skip_bad=d["skip_bad"], log=log))
        rng.shuffle(ex)
        n_valid = min(d["valid_examples"] // len(d["train"]), len(ex) // 5)
        valid += ex[:n_valid]
        ex = ex[n_valid:]
        if d["max_train_examples"]:
            ex = ex[: d["max_train_examples"]]
        enc, dropped = encode_dataset(ex, tok, d["max_length"], train=True)
        if dropped:
            log(f"[data] {spec}: dropped {dropped} of {len(ex)} examples longer than max_length={d['max_length']}")
        if not enc:
            raise ConfigError(f"data.train: {spec} has no usable examples")
        for e in enc:
            e["set"] = ex[e["index"]].get("set", spec)
        per_source.append(enc)
    train_rows = mix_sources(per_source, d["mix_temperature"], rng)
    valid_rows, _ = encode_dataset(valid, tok, d["max_length"], train=True)
    return train_rows, valid_rows


def mix_sources(per_source: list[list], temperature: float, rng: random.Random) -> list:
    """Resample each source to a share p_i ∝ n_i^(1/T) of the total (T=1: plain concatenation)."""
    if len(per_source) == 1 or temperature == 1.0:
        return [r for src in per_source for r in src]
    sizes = [len(s) for s in per_source]
    weights = [n ** (1.0 / temperature) for n in sizes]
    total = sum(sizes)
    out = []
    for src, w in zip(per_source, weights):
        k = max(1, round(total * w / sum(weights)))
        out += [src[i % len(src)] for i in rng.sample(range(len(src)), len(src))] * (k // len(src)) + \
            rng.sample(src, k % len(src))
    return out


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


# ---- checkpoints: safetensors + JSON, never pickle -----------------------------------------------
def save_checkpoint(path: Path, model: AdaptedModel, optimizer, state: dict) -> None:
    tensors, groups = {}, []
    for gi, group in enumerate(optimizer.param_groups):
        groups.append({k: v for k, v in group.items() if k != "params"})
        for pi, p in enumerate(group["params"]):
            for k, v in optimizer.state.get(p, {}).items():
                tensors[f"{gi}.{pi}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp / "adapter")
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps({**state, "param_groups": groups}, indent=2))


def load_checkpoint(path: Path, model: AdaptedModel, optimizer) -> dict:
    recover_dir(path)
    state = json.loads((path / "trainer_state.json").read_text())
    model.load_weights(path / "adapter")
    tensors = load_file(str(path / "optimizer.safetensors"))
    for gi, group in enumerate(optimizer.param_groups):
        group.update(state["param_groups"][gi])
        for pi, p in enumerate(group["params"]):
            st = {k.split(".", 2)[2]: v.to(p.device) for k, v in tensors.items() if k.startswith(f"{gi}.{pi}.")}
            if st:
                optimizer.state[p] = st
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state


# ---- the loop ------------------------------------------------------------------------------------
@torch.no_grad()
def validation_loss(model, rows, batch_size, pad_id, accelerator) -> float | None:
    if not rows:
        return None
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        b = {k: v.to(accelerator.device) for k, v in pad_batch(rows[i:i + batch_size], pad_id).items()}
        out = accelerator.unwrap_model(model)(b["input_ids"], b["attention_mask"], b["labels"])
        total += float(out.loss) * out.num_label_tokens
        count += out.num_label_tokens
    model.train()
    return total / max(count, 1)


def train(cfg: dict, resume: bool = False, log=print, stop_after: int | None = None) -> dict:
    """Train per cfg; returns a summary. `stop_after` ends the loop early (tests of resume)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg = apply_preset(cfg)
    t = cfg["train"]
    accelerator = Accelerator(split_batches=True, mixed_precision="no", cpu=not torch.cuda.is_available())
    set_seed(cfg["seed"])
    out = output_dir(cfg)
    is_main = accelerator.is_main_process
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump(cfg))
    model, tok = build_model(cfg, accelerator.device)
    if t["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    pad_id = special_ids(tok)[0]
    train_rows, valid_rows = load_sources(cfg, tok, log=log if is_main else (lambda *a: None))
    optimizer = torch.optim.AdamW(param_groups(model, t["lr"], t["lr_groups"], t["weight_decay"]))
    warmup = int(t["warmup_ratio"] * t["steps"])
    scheduler = get_scheduler(SCHEDULES[t["schedule"]], optimizer, num_warmup_steps=warmup,
                              num_training_steps=t["steps"])
    step, best, bad_evals, history, state = 0, None, 0, [], {}
    ckpt = out / "checkpoint"
    if resume:
        recover_dir(ckpt)
        if not (ckpt / "trainer_state.json").exists():
            raise ConfigError(f"--resume: no checkpoint in {ckpt}")
        state = load_checkpoint(ckpt, model, optimizer)
        step, best, bad_evals, history = state["step"], state["best"], state["bad_evals"], state.get("history", [])
        scheduler.last_epoch = step
        log(f"[train] resumed at step {step} from {ckpt}")
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)
    monitor = RouterMonitor(inner, t["collapse_threshold"], log=log if is_main else (lambda *a: None))
    monitor.load_state(state.get("router", {}))
    # a resumed run's summary covers the whole run: time, history, routing
    wall_s = lambda: state.get("wall_s", 0.0) + time.time() - start_time
    world = accelerator.num_processes
    # each optimizer step takes grad_accum micro-batches of batch_size examples
    lengths = [len(r["input_ids"]) for r in train_rows]
    batches = epoch_batches(lengths, t["batch_size"], cfg["seed"], t["length_grouped"])
    for _ in range(step * t["grad_accum"]):  # replay the order up to where we stopped
        next(batches)
    writer = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tensorboard"))
    log_file = open(out / "log.jsonl", "a" if resume else "w") if is_main else None
    from tqdm.auto import tqdm
    bar = tqdm(total=t["steps"], initial=step, disable=not is_main, desc=f"train {cfg['method']}", file=sys.stderr)
    model.train()
    t0, tokens_seen, window_loss, window_n = time.time(), 0, 0.0, 0
    start_time = time.time()
    while step < t["steps"]:
        for _ in range(t["grad_accum"]):
            idx = next(batches)
            full = pad_batch([train_rows[i] for i in idx], pad_id)
            # split_batches: this process's slice of the global batch
            rank, per = accelerator.process_index, len(idx) // world
            b = {k: v[rank * per:(rank + 1) * per].to(accelerator.device) for k, v in full.items()}
            global_n = int((full["labels"][:, 1:] != -100).sum())
            out_ = model(b["input_ids"], b["attention_mask"], b["labels"])
            # token-mean over the global batch: DDP averages over processes, so scale by world
            loss = out_.loss * out_.num_label_tokens * world / max(global_n, 1)
            aux = inner.aux_loss()
            if aux is not None:
                loss = loss + aux
            accelerator.backward(loss / t["grad_accum"])
            window_loss += float(out_.loss.detach()) * out_.num_label_tokens
            window_n += out_.num_label_tokens
            tokens_seen += int(b["attention_mask"].sum())
            monitor.observe([train_rows[i]["set"] for i in idx][rank * per:(rank + 1) * per])
        if t["max_grad_norm"]:
            accelerator.clip_grad_norm_(inner.trainable_parameters(), t["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % t["log_every"] == 0 or step == t["steps"]:
            dt = time.time() - t0
            record = {"step": step, "loss": window_loss / max(window_n, 1), "lr": scheduler.get_last_lr()[0],
                      "tokens_per_s": tokens_seen * world / dt, "steps_per_s": t["log_every"] / dt}
            record.update(monitor.summary(reset=True))
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if is_main:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                for k, v in record.items():
                    if isinstance(v, (int, float)) and k != "step":
                        writer.add_scalar(f"train/{k}", v, step)
            t0, tokens_seen, window_loss, window_n = time.time(), 0, 0.0, 0
        if (t["eval_every"] and step % t["eval_every"] == 0) or step == t["steps"]:
            vl = validation_loss(model, valid_rows, t["batch_size"], pad_id, accelerator)
            if vl is not None:
                history.append({"step": step, "valid_loss": vl})
                if is_main:
                    writer.add_scalar("valid/loss", vl, step)
                    log_file.write(json.dumps({"step": step, "valid_loss": vl}) + "\n")
                if best is None or vl < best:
                    best, bad_evals = vl, 0
                    if is_main:
                        inner.save_pretrained(out / "best", extra={"step": step, "valid_loss": vl})
                else:
                    bad_evals += 1
            if t["early_stopping_patience"] and bad_evals >= t["early_stopping_patience"]:
                log(f"[train] early stop at step {step}: no improvement in {bad_evals} evaluations")
                break
        if is_main and (step % t["save_every"] == 0 or step == t["steps"]):
            save_checkpoint(ckpt, inner, optimizer, {"step": step, "best": best, "bad_evals": bad_evals,
                                                     "wall_s": wall_s(),
                                                     "history": history, "router": monitor.state()})
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    accelerator.wait_for_everyone()
    summary = {"output_dir": str(out), "steps": step, "best_valid_loss": best, "history": history,
               "wall_s": wall_s(), "num_trainable": inner.num_trainable(),
               "router": monitor.totals()}
    if is_main:
        inner.save_pretrained(out / "final", extra={"step": step})
        if not (out / "best").exists():  # no validation data: the final adapter is the best we know
            inner.save_pretrained(out / "best", extra={"step": step})
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
        log_file.close()
        writer.close()
    return summary
