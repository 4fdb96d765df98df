"""`ptmoe compare CONFIG.yaml`: train and evaluate several methods on the same data and budget;
write a side-by-side table (markdown and JSON) in the layout of the paper's tables.

Config: the keys of a train config (shared by every method) plus
  methods: [{name, method, method_options?, preset?, train?: {...}}, ...]
  seeds: [0, 1, 2]
  sweep: {lrs: [..], steps: N, valid_examples: M}   (optional learning-rate sweep per method,
         scored by validation loss on a slice of the training sources, never on evaluation sets)
  baseline: pt   (paired bootstrap intervals of each method's difference to this one)
An ATTEMPT entry may name `source_runs: {...}` (train-config overrides, often {}): its source prompts
are then `pt` runs, one per training source on that source alone (the entry's prompt length, seed 0,
the shared budget), trained and stored like any other run and reused across seeds and entries.
Every run is stored under output_dir/runs/<hash of its config>/; a finished run is never rerun,
so an interrupted comparison resumes where it stopped. `--report` trains nothing: it builds the
table from the runs that have finished (a comparison spread over sessions, or run in parallel
with --only).

A comparison is planned as steps, one per run (compare_plan.py), each naming the runs its config
needs. Two executors run them: in order in this process (the reference, below), or as Ray tasks
(`--executor ray`, compare_ray.py), where every run whose inputs are ready starts at once. Both read
and write the same run store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

# run_key, method_config, shared_config, run_once: imported from here by older code
from .compare_plan import Plan, method_config, plan_comparison, run_key, run_once, shared_config  # noqa: F401
from .compare_table import build_table, paired_bootstrap, per_question  # noqa: F401
from .config import ConfigError, merge, parse_override, read_config_file

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
        from .compare_ray import RayOptions

        ray_options = RayOptions.from_args(args)
    elif given:
        raise ConfigError(f"{given[0]}: applies to --executor ray only")
    table = compare(raw, str(path), only=only, report=args.report, ray_options=ray_options)
    print(table["markdown"])
    return 1 if table.get("failed") else 0  # the table is printed either way


# ---- the sequential executor (the reference) and the table -------------------------------------------------
def run_in_order(plan: Plan, log=print, report: bool = False) -> list[dict | None]:
    """Every step in this process, one after another; a step whose inputs have not finished
    (report mode) is skipped (None)."""
    results = []
    for step in plan.steps:
        needed = [results[i] for i in step.needs]
        if any(r is None for r in needed):
            results.append(None)
            continue
        cfg = step.config(needed)
        if not report:
            log(step.describe(cfg, needed))
        results.append(run_once(cfg, plan.root, evaluate_it=step.evaluate, log=log, report=report))
    return results


def compare(
    raw: dict, where: str = "compare config", only=None, log=print, report: bool = False, ray_options=None
) -> dict:
    """Plan, run (in order, or on Ray with `ray_options`), and write the table. Ray: a run that fails
    after its retries is shown failed in the table; the others go on."""
    plan = plan_comparison(raw, where, only)
    plan.root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    failed: dict[int, str] = {}
    if ray_options is not None and not report:
        from .compare_ray import run_on_ray

        results, failed = run_on_ray(plan, ray_options, log=log)
    else:
        results = run_in_order(plan, log=log, report=report)
    return write_table(plan, results, failed, raw.get("baseline", "pt"), where, log, t0)


def write_table(plan: Plan, results: list, failed: dict[int, str], baseline: str, where: str, log, t0: float) -> dict:
    """compare.md / compare.json from each entry's finished seed runs and the lines of its failed ones."""
    finished, failures = {}, {}
    for e in plan.entries:
        seeds = plan.seed_steps[e.name]
        runs = [results[i] for i in seeds if results[i] is not None]
        failures[e.name] = [failed[i] for i in seeds if i in failed]
        if runs or failures[e.name]:
            finished[e.name] = runs
        else:
            log(f"[compare] {e.name}: no finished run")
    if not finished:
        raise ConfigError(f"{where}: no finished runs to report under {plan.root}")
    table = build_table(finished, baseline, {k: v for k, v in failures.items() if v})
    used = list({r["key"]: r for r in results if r is not None}.values())  # sweeps and source runs included
    table["run_hours"] = sum(r["train"]["wall_s"] + r.get("eval", {}).get("wall_s", 0) for r in used) / 3600
    table["markdown"] += (
        f"\n\nCompute behind this table: {len(used)} runs (learning-rate sweeps included), "
        f"{table['run_hours']:.1f} h of training and evaluation."
    )
    table["wall_s_this_invocation"] = time.time() - t0
    (plan.root / "compare.json").write_text(json.dumps({k: v for k, v in table.items() if k != "markdown"}, indent=2))
    (plan.root / "compare.md").write_text(table["markdown"])
    return table
