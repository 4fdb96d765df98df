"""`ptmoe compare CONFIG.yaml`: train and evaluate several methods on the same data and budget;
write a side-by-side table (markdown and JSON) in the layout of the paper's tables.

Config: the keys of a train config (shared by every method) plus
  methods: [{name, method, method_options?, preset?, train?: {...}}, ...]
  seeds: [0, 1, 2]
  sweep: {lrs: [..], steps: N, valid_examples: M}   (optional learning-rate sweep per method,
         scored by validation loss on a slice of the training sources, never on evaluation sets)
  baseline: pt   (paired bootstrap intervals of each method's difference to this one; an entry's own
                  `baseline: NAME` pairs its row with that entry instead, as a budget sweep does)
An ATTEMPT entry may name `source_runs: {...}` (train-config overrides, often {}): its source prompts
are then `pt` runs, one per training source on that source alone (the entry's prompt length, seed 0,
the shared budget), trained and stored like any other run and reused across seeds and entries.
Every run is stored under output_dir/runs/<hash of its config>/; a finished run is never rerun,
so an interrupted comparison resumes where it stopped. `--report` trains nothing: it builds the
table from the runs that have finished (a comparison spread over sessions, or run in parallel
with --only).

A comparison is planned as steps, one per run (experiments/plan.py), each naming the runs its config
needs. Two executors run them: in order in this process (the reference, experiments/sequential.py), or
as Ray tasks (`--executor ray`, experiments/ray_executor.py), where every run whose inputs are ready
starts at once. Both read and write the same run store (experiments/store.py).
"""

from __future__ import annotations

from pathlib import Path

from ..config.loading import merge, parse_override, read_config_file
from ..config.schema import ConfigError
from ..experiments.compare import compare

EXECUTORS = ("sequential", "ray")
RAY_FLAGS = {
    "address": "--address",
    "gpus_per_run": "--gpus-per-run",
    "cpus_per_run": "--cpus-per-run",
    "retries": "--retries",
}


def add_arguments(p):
    p.add_argument("config", help="compare YAML (see configs/compare-*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of the shared config")
    p.add_argument("--only", help="comma-separated method names to run (the table shows only these)")
    p.add_argument(
        "--report", action="store_true", help="train nothing: build the table from the finished runs of every method"
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="sequential",
        help="sequential: one run after another in this process; ray: every run a Ray task, as many at once as "
        "the resources allow (pip install -e .[ray])",
    )
    p.add_argument(
        "--address", help="ray: a running Ray cluster (host:port, ray://host:port or auto); default a local one"
    )
    p.add_argument("--gpus-per-run", type=float, help="ray: GPUs per run, a fraction shares one (e.g. 0.1); default 0")
    p.add_argument("--cpus-per-run", type=float, help="ray: CPU cores per run, also its thread count; default 1")
    p.add_argument(
        "--retries", type=int, help="ray: times a failed run is retried before the table shows it failed; default 1"
    )


def run(args):
    path = Path(args.config)
    raw = read_config_file(path)
    for item in args.overrides:
        raw = merge(raw, parse_override(item))
    only = None
    if args.only:
        names = [m.get("name") for m in raw.get("methods") or []]
        only = [args.only] if args.only in names else [n.strip() for n in args.only.split(",")]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"--only: no method named {unknown[0]!r} in {path}; known: {', '.join(map(str, names))}")
    ray_options = None
    given = [flag for key, flag in RAY_FLAGS.items() if getattr(args, key, None) is not None]
    if args.executor == "ray":
        # on use: `ptmoe --help` and each command start without torch, loading only what they run
        from ..experiments.ray_cluster import RayOptions

        ray_options = RayOptions.from_args(args)
    elif given:
        raise ConfigError(f"{given[0]}: applies to --executor ray only")
    table = compare(raw, str(path), only=only, report=args.report, ray_options=ray_options)
    print(table["markdown"])
    return 1 if table.get("failed") else 0  # the table is printed either way
