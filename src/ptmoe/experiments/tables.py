"""The table of `ptmoe compare`: per-question scores of finished runs, paired bootstrap intervals of
each method's difference to the baseline, and the markdown / JSON layout of the paper's tables."""

from __future__ import annotations

from ..config.presets import apply_preset
from ..evaluation.paired import paired_bootstrap, predictions_scores


def per_question(runs: list[dict]) -> dict[str, list[float]]:
    """Per eval set, each question's primary score (F1 or accuracy) averaged over seeds."""
    out = {}
    for r in runs:
        tasks = {spec: v["task"] for spec, v in r["eval"]["sets"].items()}
        for spec, scores in predictions_scores(r["eval"]["predictions"], tasks).items():
            prev = out.setdefault(spec, [0.0] * len(scores))
            out[spec] = [a + b / len(runs) for a, b in zip(prev, scores)]
    return out


def build_table(finished: dict, baseline: str, failed: dict | None = None, row_baselines: dict | None = None) -> dict:
    """finished: method name -> its finished seed runs (none when all failed); failed: method name ->
    one line per run that failed (the Ray executor), shown in the table, never dropped; row_baselines:
    method name -> the row its Δ is against, where not `baseline` (a budget sweep: each budget's own)."""
    failed, row_baselines = failed or {}, row_baselines or {}
    sets = []
    for runs in finished.values():
        for s in runs[0]["eval"]["sets"] if runs else []:
            if s not in sets:
                sets.append(s)
    rows = {}
    scores_of = {name: per_question(runs) for name, runs in finished.items() if runs}
    for name, runs in finished.items():
        if not runs:
            rows[name] = {"failed": failed[name]}
            continue
        mean = lambda f: sum(f(r) for r in runs) / len(runs)
        # lr: the rate the run trained at (after a preset scaled it); wall: train + eval per run
        row = {
            "method": runs[0]["config"]["method"],
            "params": runs[0]["eval"]["num_trainable"],
            "seeds": len(runs),
            "lr": apply_preset(runs[0]["config"])["train"]["lr"],
            "wall_s": mean(lambda r: r["train"]["wall_s"] + r["eval"]["wall_s"]),
            "sets": {},
        }
        for s in sets:
            r0 = runs[0]["eval"]["sets"].get(s)
            if r0 is None:
                continue
            keys = ("f1", "em") if r0["task"] == "qa" else ("accuracy",)
            row["sets"][s] = {k: mean(lambda r: r["eval"]["sets"][s][k]) for k in keys}
        row["average"] = {k: mean(lambda r: r["eval"]["average"][k]) for k in runs[0]["eval"]["average"]}
        if (runs[0]["eval"].get("router") or {}).get("usage_entropy_bits") is not None:
            row["usage_entropy_bits"] = mean(lambda r: r["eval"]["router"]["usage_entropy_bits"])
            row["train_usage_entropy_bits"] = mean(lambda r: r["train"]["router"]["usage_entropy_bits"])
            # eval expert share per set, per seed (expert numbers mean nothing across seeds)
            row["router_per_set"] = {
                str(r["config"]["seed"]): {s: v["expert_share"] for s, v in r["eval"]["router"]["per_set"].items()}
                for r in runs
            }
        values = [(r["eval"].get("router") or {}).get("routing_value") for r in runs]
        if values and all(values):
            # routed against each seed's best replacement, question by question, averaged over seeds
            forced = {
                s: [sum(v["best_replacement_scores"][s][i] for v in values) / len(values) for i in range(len(q))]
                for s, q in values[0]["best_replacement_scores"].items()
            }
            row["routing_value"] = paired_bootstrap(scores_of[name], forced)
        if all("mutual_information_bits" in (r["eval"].get("router") or {}) for r in runs):
            row["mutual_information_bits"] = mean(lambda r: r["eval"]["router"]["mutual_information_bits"])
        against = row_baselines.get(name, baseline)
        if against in scores_of and name != against:
            row["diff_vs_baseline"] = paired_bootstrap(scores_of[name], scores_of[against])
            row["baseline"] = against
        if failed.get(name):
            row["failed"] = failed[name]
        rows[name] = row
    return {
        "baseline": baseline,
        "sets": sets,
        "rows": rows,
        "failed": {n: r["failed"] for n, r in rows.items() if r.get("failed")},
        "markdown": markdown(rows, sets, baseline, mixed=bool(row_baselines)),
    }


def seeds_cell(row: dict) -> str:
    return f"{row['seeds']} ({len(row['failed'])} failed)" if row.get("failed") else str(row["seeds"])


def short(s: str) -> str:
    return s.replace("squad_shifts_", "").replace("/heldout", "").replace("/test", "")


def markdown(rows: dict, sets: list[str], baseline: str, mixed: bool = False) -> str:
    """mixed: some rows have a baseline of their own, so each Δ cell names the row it is against."""
    metric = lambda r, s: (
        f"{r['sets'][s]['f1']:.2f} / {r['sets'][s]['em']:.2f}"
        if "f1" in r["sets"].get(s, {})
        else f"{r['sets'][s]['accuracy']:.2f}"
        if s in r["sets"]
        else ""
    )
    head = (
        ["method", "params"]
        + [short(s) for s in sets]
        + ["avg", "Δ vs baseline [95% CI]" if mixed else f"Δ vs {baseline} [95% CI]"]
        + ["routing value [95% CI]", "MI set;expert (bits)"]
        + ["seeds", "lr", "usage H train / eval (bits)", "min / run"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        if "average" not in r:  # every run of the method failed
            lines.append("| " + " | ".join([name, "failed"] + [""] * (len(head) - 2)) + " |")
            continue
        a = r["average"]
        avg = f"{a['f1']:.2f} / {a['em']:.2f}" if "f1" in a else f"{a.get('accuracy', 0):.2f}"
        d = r.get("diff_vs_baseline")
        diff = f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]" + (f" vs {r['baseline']}" if mixed else "") if d else ""
        h = f"{r['train_usage_entropy_bits']:.2f} / {r['usage_entropy_bits']:.2f}" if "usage_entropy_bits" in r else ""
        v = r.get("routing_value")
        value = f"{v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]" if v else ""
        mi = f"{r['mutual_information_bits']:.2f}" if "mutual_information_bits" in r else ""
        lines.append(
            "| "
            + " | ".join(
                [name, f"{r['params']:,}"]
                + [metric(r, s) for s in sets]
                + [avg, diff, value, mi, seeds_cell(r), f"{r['lr']:g}", h, f"{r['wall_s'] / 60:.1f}"]
            )
            + " |"
        )
    lines.append("")
    lines.append(
        "QA cells: F1 / EM; math cells: accuracy. Δ: paired bootstrap over questions "
        "(F1 or accuracy, mean over sets). lr: the learning rate trained at (after the sweep and "
        "any preset scaling). Usage H: entropy of the expert shares over the training run and over "
        "the evaluation questions (1 bit = two experts used equally). Routing value: routed minus the "
        "best replacement of the routing (one expert forced for every input, or the uniform mix), per "
        "question, averaged over seeds. MI: mutual information between evaluation set and chosen expert. "
        "min / run: train + evaluate."
    )
    failed = {n: r["failed"] for n, r in rows.items() if r.get("failed")}
    if failed:
        lines += ["", "Failed runs (after their retries; the rows above average the runs that finished):", ""]
        lines += [f"- {name}: {line}" for name, msgs in failed.items() for line in msgs]
    routed = {n: r for n, r in rows.items() if r.get("router_per_set")}
    if routed:
        lines += ["", "Expert share per evaluation set, per seed:", ""]
        for name, r in routed.items():
            for seed, per_set in r["router_per_set"].items():
                cells = ", ".join(f"{short(s)} " + "/".join(f"{x:.0%}" for x in v) for s, v in per_set.items())
                lines.append(f"- {name}, seed {seed}: {cells}")
    return "\n".join(lines)
