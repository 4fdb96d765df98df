"""Per-question scores of a run's predictions, and the paired bootstrap that compares two runs on the
same questions (the intervals of `ptmoe compare`, `ptmoe continual` and the routing value)."""

from __future__ import annotations

import random

from .metrics import PRIMARY, question_scores


def predictions_scores(predictions: dict, tasks: dict) -> dict[str, list[float]]:
    """Per eval set, each question's primary score (F1 or accuracy); tasks: set -> its task, or the
    set's examples (the task of the first)."""
    out = {}
    for spec, preds in predictions.items():
        task = tasks[spec] if isinstance(tasks[spec], str) else tasks[spec][0].get("task", "qa")
        out[spec] = [question_scores(task, p["prediction"], p["answers"])[PRIMARY[task]] for p in preds]
    return out


def paired_bootstrap(a: dict, b: dict, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean over sets of (a - b) per question, with a 95% interval resampling questions within each set."""
    rng = random.Random(seed)
    sets = [s for s in a if s in b]
    diffs = {s: [x - y for x, y in zip(a[s], b[s])] for s in sets}
    point = sum(sum(d) / len(d) for d in diffs.values()) / len(sets)
    stats = []
    for _ in range(n):
        tot = 0.0
        for d in diffs.values():
            tot += sum(d[rng.randrange(len(d))] for _ in range(len(d))) / len(d)
        stats.append(tot / len(sets))
    stats.sort()
    return point, stats[int(0.025 * n)], stats[int(0.975 * n) - 1]
