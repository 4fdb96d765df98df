"""The sequential executor of `ptmoe compare`, the reference: every run in this process, in order."""

from __future__ import annotations

from .plan import Plan
from .store import run_once


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
