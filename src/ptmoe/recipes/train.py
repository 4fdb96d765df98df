"""`ptmoe train CONFIG.yaml [key=value ...]`: train any method (the loop: training/loop.py)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from ..config.loading import load_config
from ..config.schema import ConfigError
from ..training.loop import train


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
        print(next_step(args, Path(summary["output_dir"])))
    return 0


def next_step(args, run: Path) -> str:
    """The command that scores the adapter just trained on the run's own evaluation sets."""
    adapter = run / "best" if (run / "best").is_dir() else run / "final"
    again = ([args.config] if args.config else []) + list(args.overrides)
    return f"next: ptmoe eval {shlex.join([*again, '--adapter', str(adapter)])}"
