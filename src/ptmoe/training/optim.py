"""The optimizer and schedule of a training run: AdamW with per-group learning rates (`train.lr_groups`)
and transformers' schedule, from the config's train section. `ptmoe train` and the Trainer route
(interop/trainer_setup.py) build theirs here."""

from __future__ import annotations

import torch
from transformers import get_scheduler

from ..config.schema import ConfigError

# train.schedule -> transformers' scheduler (constant keeps the warm-up)
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def param_groups(model, lr: float, lr_groups: dict, weight_decay: float):
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


def optimizer_and_schedule(model, t: dict):
    """AdamW with per-group learning rates and transformers' schedule, from the config's train section
    (`ptmoe train`, and the Trainer route: interop/trainer_setup.py)."""
    optimizer = torch.optim.AdamW(param_groups(model, t["lr"], t["lr_groups"], t["weight_decay"]))
    warmup = int(t["warmup_ratio"] * t["steps"])
    scheduler = get_scheduler(
        SCHEDULES[t["schedule"]], optimizer, num_warmup_steps=warmup, num_training_steps=t["steps"]
    )
    return optimizer, scheduler
