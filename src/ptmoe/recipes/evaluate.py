"""`ptmoe eval [CONFIG] [--adapter DIR]`: score the base model or an adapter (evaluation/evaluate.py)."""

from __future__ import annotations

from pathlib import Path

from ..adapted import AdaptedModel
from ..config.loading import load_config
from ..data import check_prepared
from ..evaluation.evaluate import evaluate, format_table
from ..model_card import CARD_NAME, add_results


def add_arguments(p):
    p.add_argument("config", nargs="?", help="YAML config (its model, data.eval and eval sections)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.add_argument("--adapter", help="adapter folder (default: the base model alone)")
    p.add_argument("--out", help="results folder (default: RUN/eval for the adapter RUN/best; none: not written)")


def run(args):
    cfg = load_config(args.config, args.overrides)
    check_prepared(cfg["data"]["eval"])  # a set that is not prepared fails before the model loads
    if args.adapter:  # a wrong folder fails before the model loads
        AdaptedModel.read_adapter_config(args.adapter)
    results = evaluate(cfg, args.adapter, args.out)
    print(format_table(results))
    if results.get("results_path"):
        print(f"wrote {results['results_path']}")
    if args.adapter and add_results(args.adapter, results):
        print(f"added these results to the model card {Path(args.adapter) / CARD_NAME}")
    return 0
