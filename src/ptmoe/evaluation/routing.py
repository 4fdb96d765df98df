"""Router health and analysis: expert usage per data set, confidence, entropy; collapse warnings."""

from __future__ import annotations

import math
from collections import defaultdict

import torch


def usage_entropy_bits(counts: list[float]) -> float:
    total = sum(counts)
    if total <= 0:
        return 0.0
    return abs(-sum(c / total * math.log2(c / total) for c in counts if c > 0))  # abs: no "-0.00"


def mutual_information_bits(per_set_usage: dict[str, list[float]]) -> float:
    """I(set; expert) in bits from the expert counts of each data set: H(expert) - H(expert | set).
    1 bit: two equally large sets each served by its own expert; 0: every set shares the same mix."""
    joint = {s: [float(c) for c in counts] for s, counts in per_set_usage.items()}
    total = sum(sum(c) for c in joint.values())
    if total <= 0:
        return 0.0
    experts = [sum(c[e] for c in joint.values()) for e in range(len(next(iter(joint.values()))))]
    conditional = sum(sum(c) / total * usage_entropy_bits(c) for c in joint.values())
    return max(0.0, usage_entropy_bits(experts) - conditional)


class RouterMonitor:
    """Accumulates the routing of each call (its `Routing` record: `Output.routing`, or generate's with
    `return_routing=True`) by data set."""

    def __init__(self, collapse_threshold: float = 0.95, log=print):
        self.threshold, self.log = collapse_threshold, log
        self.window = self._empty()
        self.all = self._empty()
        self.warned = False

    @staticmethod
    def _empty():
        return {
            "usage": defaultdict(lambda: None),
            "conf": defaultdict(float),
            "ent": defaultdict(float),
            "n": defaultdict(int),
        }

    def observe(self, sets: list[str], routing) -> None:
        if routing is None:  # the adapter is not routed
            return
        probs, selected = routing.probs.float().cpu(), routing.selected.float().cpu()
        # an input that uses every expert (a dense mixture: ATTEMPT, top_k = N) counts by its weights,
        # so the share is the mean weight; a selecting router counts the experts it chose
        used = torch.where(selected.bool().all(-1, keepdim=True), probs, selected)
        ent = -(probs.clamp_min(1e-12).log2() * probs).sum(-1)
        conf = probs.max(-1).values
        for acc in (self.window, self.all):
            for i, s in enumerate(sets[: probs.shape[0]]):
                u = acc["usage"][s]
                acc["usage"][s] = used[i].clone() if u is None else u + used[i]
                acc["conf"][s] += float(conf[i])
                acc["ent"][s] += float(ent[i])
                acc["n"][s] += 1

    def _summarise(self, acc) -> dict:
        if not acc["n"]:
            return {}
        usage = sum(u for u in acc["usage"].values())
        n = sum(acc["n"].values())
        share = (usage / usage.sum()).tolist()
        out = {
            "expert_share": share,
            "usage_entropy_bits": usage_entropy_bits(share),
            "router_confidence": sum(acc["conf"].values()) / n,
            "router_entropy_bits": sum(acc["ent"].values()) / n,
        }
        return out

    def summary(self, reset: bool = False) -> dict:
        s = self._summarise(self.window)
        warn = self.threshold > 0 and not self.warned  # 0: no warning (the demo says what routing is worth instead)
        if s and len(s["expert_share"]) > 1 and max(s["expert_share"]) >= self.threshold and warn:
            self.log(
                f"[router] warning: expert {s['expert_share'].index(max(s['expert_share']))} takes "
                f"{max(s['expert_share']):.0%} of examples: the router has collapsed onto one expert "
                f"(docs/routing.md: what each remedy measured; preset: balanced keeps both experts in use)"
            )
            self.warned = True
        if reset:
            self.window = self._empty()
        return s

    def state(self) -> dict:
        """The whole-run counts, JSON-ready: a checkpoint keeps them so a resumed run reports the whole run."""
        a = self.all
        return {
            s: {"usage": a["usage"][s].tolist(), "conf": a["conf"][s], "ent": a["ent"][s], "n": n}
            for s, n in a["n"].items()
        }

    def load_state(self, state: dict) -> None:
        for s, v in state.items():
            self.all["usage"][s] = torch.tensor(v["usage"])
            self.all["conf"][s], self.all["ent"][s], self.all["n"][s] = v["conf"], v["ent"], v["n"]

    def totals(self) -> dict:
        """Usage per data set over the whole run, plus the overall summary."""
        acc = self.all
        per_set = {}
        for s, n in acc["n"].items():
            u = acc["usage"][s]
            per_set[s] = {
                "n": n,
                "expert_share": (u / u.sum()).tolist(),
                "router_confidence": acc["conf"][s] / n,
                "router_entropy_bits": acc["ent"][s] / n,
            }
        if not per_set:
            return {}
        mi = mutual_information_bits({s: acc["usage"][s].tolist() for s in per_set})
        return {**self._summarise(acc), "mutual_information_bits": mi, "per_set": per_set}


def plot_usage(summary: dict, path) -> None:
    """Stacked bars of expert share per data set (PNG)."""
    # matplotlib is slow to import and only the plots need it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_set = summary.get("per_set", {})
    if not per_set:
        return
    names = sorted(per_set)
    shares = torch.tensor([per_set[n]["expert_share"] for n in names])
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(names) + 2), 3.2))
    bottom = torch.zeros(len(names))
    for e in range(shares.shape[1]):
        ax.bar(names, shares[:, e], bottom=bottom, label=f"expert {e}")
        bottom += shares[:, e]
    ax.set_ylabel("share of examples")
    title = "expert usage per data set"
    if "mutual_information_bits" in summary:
        title += f"; MI(set; expert) {summary['mutual_information_bits']:.2f} bit"
    value = (summary.get("routing_value") or {}).get("value")
    if value:
        title += f"\nrouting value {value[0]:+.2f} [{value[1]:+.2f}, {value[2]:+.2f}] F1 vs the best forced routing"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    plt.xticks(rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
