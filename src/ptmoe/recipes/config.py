"""Run configs: YAML files with dotted key=value overrides on the command line.

Every key has a default here, so a config file names only what differs; an unknown key is an
error that names it (a typo never silently does nothing).
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

DEFAULTS: dict = {
    "model": "smollm2-135m-instruct",
    "dtype": "auto",  # auto: bf16 on GPU and on CPUs with bf16 instructions, else fp32 (device.py); or bf16 / fp32
    "method": "ptmoe",
    "method_options": {},
    "preset": None,  # named recipe for routed methods (see presets.py): paper, default
    "seed": 0,
    "output_dir": "runs/{method}",
    "data": {
        "train": ["squad/train"],  # prepared "set/split" names or local files
        "eval": ["squad/heldout"],
        "mix_temperature": 1.0,  # multi-source sampling: p_i ∝ n_i^(1/T)
        "max_train_examples": None,  # per source
        "max_eval_examples": 200,  # per eval set
        "valid_examples": 64,  # held back from training sources for validation / selection
        "max_length": 512,
        "skip_bad": False,
    },
    "train": {
        "steps": 200,
        "batch_size": 8,
        "grad_accum": 1,
        "lr": 0.3,
        "lr_groups": {},  # e.g. {router: 0.01, A: 0.3, B: 0.3} by parameter-name pattern
        "weight_decay": 0.0,
        "warmup_ratio": 0.06,
        "schedule": "linear",  # linear, cosine, constant
        "max_grad_norm": 1.0,
        "gradient_checkpointing": False,
        "length_grouped": True,
        "log_every": 10,
        "eval_every": 0,  # steps; 0: only at the end
        "save_every": 50,
        "early_stopping_patience": 0,  # evaluations without improvement; 0: off
        "collapse_threshold": 0.95,  # warn when one expert takes this share of examples
    },
    "eval": {
        "batch_size": 16,
        "max_new_tokens": {"qa": 24, "math": 200},
    },
}


class ConfigError(ValueError):
    pass


def _merge(base: dict, over: dict, where: str, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{path}{k}"
        if k not in base:
            raise ConfigError(f"{where}: unknown key {key!r}")
        if isinstance(base[k], dict) and k not in ("method_options", "lr_groups", "max_new_tokens") and v is not None:
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: key {key!r} must be a mapping")
            out[k] = _merge(base[k], v, where, key + ".")
        elif isinstance(base[k], dict) and v is not None:
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: key {key!r} must be a mapping")
            out[k] = {**base[k], **v}
        else:
            out[k] = v
    return out


def parse_override(item: str) -> dict:
    """'train.lr=0.1' -> {'train': {'lr': 0.1}} (values parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, value = item.split("=", 1)
    try:
        value = yaml.safe_load(value)
    except yaml.YAMLError:
        pass
    node: dict = {}
    cur = node
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return node


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> dict:
    if path and "=" in str(path) and not Path(path).exists():  # no config file, only overrides
        path, overrides = None, [str(path), *(overrides or [])]
    cfg = copy.deepcopy(base or DEFAULTS)
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise ConfigError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        cfg = _merge(cfg, data, str(path))
    for item in overrides or []:
        cfg = _merge(cfg, parse_override(item), f"override {item!r}")
    validate(cfg)
    return cfg


def validate(cfg: dict) -> None:
    t = cfg["train"]
    for key in ("steps", "batch_size", "grad_accum"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise ConfigError(f"train.{key}: must be a positive integer, got {t[key]!r}")
    if not isinstance(t["lr"], (int, float)) or t["lr"] <= 0:
        raise ConfigError(f"train.lr: must be a positive number, got {t['lr']!r}")
    if t["schedule"] not in ("linear", "cosine", "constant"):
        raise ConfigError(f"train.schedule: must be linear, cosine or constant, got {t['schedule']!r}")
    if cfg["dtype"] not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"dtype: must be auto, bf16 or fp32, got {cfg['dtype']!r}")
    for key in ("train", "eval"):
        v = cfg["data"][key]
        if isinstance(v, str):
            cfg["data"][key] = [v]
        elif not isinstance(v, list) or not v:
            raise ConfigError(f"data.{key}: must be a list of data sets, got {v!r}")


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
