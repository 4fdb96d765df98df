"""`ptmoe config show [CONFIG] [key=value ...]` prints a resolved config, every default included;
`ptmoe config doc` writes docs/config.md."""

from __future__ import annotations

from pathlib import Path

from ..config.loading import dump, load_config, resolved
from ..config.reference import markdown


def add_arguments(p):
    p.add_argument(
        "action",
        choices=["show", "doc"],
        help="show: the resolved config with every default; doc: docs/config.md (markdown)",
    )
    p.add_argument("config", nargs="?", help="YAML config (show)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides (show)")


def run(args):
    if args.action == "doc":
        print(markdown(), end="")
        return 0
    cfg = load_config(args.config, args.overrides)
    preset = cfg["preset"]
    items = ([] if args.config is None or Path(args.config).exists() else [args.config]) + args.overrides
    source = args.config if args.config and Path(args.config).exists() else "the defaults"
    print(
        f"# resolved from {source}{' with ' + ' '.join(items) if items else ''}"
        + (f"; preset {preset!r} expanded into method_options and train.lr" if preset else "")
    )
    print(dump(resolved(cfg)), end="")
    return 0
