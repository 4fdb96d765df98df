"""Routing value: what a routed adapter's per-input routing is worth on its evaluation questions."""

from __future__ import annotations

from ..methods.router import UNIFORM, replaced_routing, routers
from .paired import paired_bootstrap, predictions_scores


def routing_value(model, loaded: dict, routed_predictions: dict, answer, max_new: dict, log=print) -> dict:
    """The same questions with the routing replaced: each expert forced for every input, and the uniform
    mix (the weight each row got is kept; only which expert serves it changes). Routing value = routed
    minus the best of those, per question, mean over sets, with a paired bootstrap 95% interval. Picking
    the best replacement after the fact favours it, so the value is, if anything, understated."""
    n = routers(model)[0].experts  # (the caller checked there is one)
    routed = predictions_scores(routed_predictions, loaded)
    forced = {}
    for replace in [*range(n), UNIFORM]:
        name = f"expert {replace}" if replace != UNIFORM else UNIFORM
        with replaced_routing(model, replace):
            preds = {}
            for spec, examples in loaded.items():
                texts = answer(examples, max_new[spec])
                preds[spec] = [{"answers": ex["answers"], "prediction": t} for ex, t in zip(examples, texts)]
        forced[name] = predictions_scores(preds, loaded)
    mean = lambda per_set: sum(sum(v) / len(v) for v in per_set.values()) / len(per_set)
    best = max(forced, key=lambda k: mean(forced[k]))
    value = paired_bootstrap(routed, forced[best])
    log(
        f"[router] routing value {value[0]:+.2f} [{value[1]:+.2f}, {value[2]:+.2f}] (routed {mean(routed):.2f} "
        f"against the best replacement, {best}: {mean(forced[best]):.2f})"
    )
    return {
        "routed": mean(routed),
        "replaced": {k: mean(v) for k, v in forced.items()},
        "replaced_per_set": {k: {s: sum(v) / len(v) for s, v in per_set.items()} for k, per_set in forced.items()},
        "best_replacement": best,
        "best_replacement_scores": forced[best],  # per question: compare pools seeds with them
        "value": list(value),
    }
