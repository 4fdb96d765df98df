"""`ptmoe continual CONFIG.yaml`: learn a sequence of tasks in order, evaluating every task after each
stage (experiments/continual.py; docs/continual.md)."""

from __future__ import annotations

from ..config.loading import merge, parse_override, read_config_file
from ..experiments.continual import continual


def add_arguments(p):
    p.add_argument("config", help="continual YAML (see configs/continual-reachable.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of the shared config")
    p.add_argument("--only", help="comma-separated strategies to train (the table shows every finished one)")
    p.add_argument("--report", action="store_true", help="train nothing: the tables from the finished stages")


def run(args):
    raw = read_config_file(args.config)
    for item in args.overrides:
        raw = merge(raw, parse_override(item))
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    table = continual(raw, str(args.config), only=only, report=args.report)
    print(table["markdown"])
    return 0
