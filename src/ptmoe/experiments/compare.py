"""A comparison (`ptmoe compare`): plan its runs, run them on an executor, write the table."""

from __future__ import annotations

import json
import time

from ..config.presets import apply_preset, resolve_method_options
from ..config.schema import ConfigError
from ..data import check_prepared
from .plan import Plan, plan_comparison
from .sequential import run_in_order
from .tables import build_table


def compare(
    raw: dict, where: str = "compare config", only=None, log=print, report: bool = False, ray_options=None
) -> dict:
    """Plan, run (in order, or on Ray with `ray_options`), and write the table. Ray: a run that fails
    after its retries is shown failed in the table; the others go on."""
    plan = plan_comparison(raw, where, only)
    if not report:
        check_runs_can_start(plan)
    plan.root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    failed: dict[int, str] = {}
    if ray_options is not None and not report:
        # Ray (the `ray` extra) loads only for --executor ray
        from .ray_executor import run_on_ray

        results, failed = run_on_ray(plan, ray_options, log=log)
    else:
        results = run_in_order(plan, log=log, report=report)
    return write_table(plan, results, failed, raw.get("baseline", "pt"), where, log, t0)


def check_runs_can_start(plan: Plan) -> None:
    """Before the first run: every prepared set the entries read exists, and an oracle's evaluation sets
    each find their expert (one line each, not after hours of the runs before it)."""
    check_prepared([spec for e in plan.entries for key in ("train", "eval") for spec in e.cfg["data"][key]])
    for e in plan.entries:
        if e.cfg["method_options"].get("route_by") == "source":
            resolve_method_options(apply_preset(e.cfg))


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
    own = {e.name: e.raw["baseline"] for e in plan.entries if "baseline" in e.raw}
    table = build_table(finished, baseline, {k: v for k, v in failures.items() if v}, own)
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
