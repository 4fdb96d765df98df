"""The tables of `ptmoe continual`: the accuracy matrix R[stage][task] per strategy, average accuracy,
backward and forward transfer, forgetting, expert shares, with paired intervals over questions and seeds."""

from __future__ import annotations

from ..evaluation.metrics import PRIMARY, question_scores
from ..evaluation.paired import paired_bootstrap


def question_row(ev: dict, spec: str) -> list[float]:
    """Each question's primary score (F1 or accuracy, 0-100) of one evaluation on one set."""
    task = ev["sets"][spec]["task"]
    return [question_scores(task, p["prediction"], p["answers"])[PRIMARY[task]] for p in ev["predictions"][spec]]


def matrix(stages: list, strategy: str, evals: list[str], base: dict | None) -> list[list[list[float]]]:
    """R[stage][task] as per-question scores. The oracle answers task j by stage j's prompt (before its
    stage, by the base model); joint has one row."""
    rows = []
    for i, res in enumerate(stages):
        if strategy == "oracle":
            row = [
                question_row(stages[j]["eval"], s) if j <= i else (question_row(base, s) if base else None)
                for j, s in enumerate(evals)
            ]
        else:
            row = [question_row(res["eval"], s) for s in evals]
        rows.append(row)
    return rows


def expert_shares(stages: list, names: list[str]) -> list[list[list[float] | None]]:
    """[stage][task]: the share of the task's evaluation questions the router sent to each expert."""
    per_set = [(res["eval"].get("router") or {}).get("per_set", {}) for res in stages]
    return [[sets.get(n, {}).get("expert_share") for n in names] for sets in per_set]


def mean(xs):
    return sum(xs) / len(xs)


def growth_routing(shares: list[list[list[float] | None]]) -> list[dict]:
    """After each stage that added experts: the mean share of the earlier tasks' questions on the experts
    they had (old on old) and of the new task's questions on the experts added for it (new on new)."""
    out = []
    for i in range(1, len(shares)):
        if not shares[i][i] or not shares[i - 1][0]:
            continue
        n_old = len(shares[i - 1][0])
        if len(shares[i][i]) == n_old:  # no expert added (a sequence without growth)
            continue
        old = [sum(shares[i][j][:n_old]) for j in range(i) if shares[i][j]]
        out.append({"stage": i + 1, "old_on_old": mean(old), "new_on_new": sum(shares[i][i][n_old:])})
    return out


def transfer(R: list[list[float]], b: list[float] | None) -> dict:
    """Lopez-Paz & Ranzato (GEM) and Chaudhry et al. (as L2P and Progressive Prompts report them) on R of
    mean scores: ACC = mean_j R[T][j]; BWT = mean_{j<T} R[T][j] - R[j][j]; forgetting = mean_{j<T}
    max_{l<T} R[l][j] - R[T][j]; FWT = mean_{j>1} R[j-1][j] - b_j (b: the base model)."""
    T, last = len(R[0]), R[-1]
    out = {"acc": mean(last)}
    if len(R) == T:
        out["bwt"] = mean([last[j] - R[j][j] for j in range(T - 1)])
        out["forgetting"] = mean([max(R[l][j] for l in range(j, T - 1)) - last[j] for j in range(T - 1)])
        out["first_task_drop"] = R[0][0] - last[0]
        if b is not None:
            out["fwt"] = mean([R[j - 1][j] - b[j] for j in range(1, T)])
    return out


T_975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def seed_interval(values: list[float]) -> list[float]:
    """Mean and a 95% t interval over seeds ([mean, mean, mean] with one seed)."""
    m = mean(values)
    if len(values) < 2:
        return [m, m, m]
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    h = T_975.get(len(values) - 1, 1.96) * sd / len(values) ** 0.5
    return [m, m - h, m + h]


def build_table(finished: dict, plan: dict, base: dict | None) -> dict:
    evals = [t["eval"] for t in plan["tasks"]]
    names = [t["name"] for t in plan["tasks"]]
    b = [mean(question_row(base, s)) for s in evals] if base else None
    rows, final_q = {}, {}
    for strategy, runs in finished.items():
        per_seed = [matrix(stages, strategy, evals, base) for stages in runs]
        means = [[[mean(q) if q else float("nan") for q in row] for row in m] for m in per_seed]
        metrics = [transfer(R, b) for R in means]
        R = [[mean([m[i][j] for m in means]) for j in range(len(evals))] for i in range(len(means[0]))]
        # per question, averaged over seeds: the final row (paired with the baseline's questions)
        final_q[strategy] = {s: [mean(x) for x in zip(*[m[-1][j] for m in per_seed])] for j, s in enumerate(evals)}
        wall = mean([sum(r["train"]["wall_s"] + r["eval"]["wall_s"] for r in stages) for stages in runs])
        rows[strategy] = {
            "R": R,
            "R_per_seed": means,
            "seeds": [stages[0]["config"]["seed"] for stages in runs],
            "metrics": {k: seed_interval([m[k] for m in metrics]) for k in metrics[0]},
            "metrics_per_seed": metrics,
            "wall_s_per_seed": wall,
            "stage_keys": [[r["key"] for r in stages] for stages in runs],
        }
        shares = [expert_shares(stages, names) for stages in runs]
        if any(x for row in shares[0] for x in row):  # a routed strategy: where each task went, mean over seeds
            rows[strategy]["expert_share"] = [
                [[mean(e) for e in zip(*[seed[i][j] for seed in shares])] for j in range(len(names))]
                for i in range(len(shares[0]))
            ]
            kept = [growth_routing(seed) for seed in shares]
            if kept[0]:  # per stage, the lowest over seeds: the targets are met only if every seed meets them
                rows[strategy]["growth_routing"] = [
                    {"stage": g["stage"], **{k: min(seed[i][k] for seed in kept) for k in ("old_on_old", "new_on_new")}}
                    for i, g in enumerate(kept[0])
                ]
    baseline = plan["baseline"]
    for strategy, row in rows.items():
        if "joint" in rows and strategy != "joint":  # the upper bound growth is read against
            row["acc_vs_joint"] = paired_bootstrap(final_q[strategy], final_q["joint"])
        if strategy != baseline and baseline in rows:
            row["acc_vs_baseline"] = paired_bootstrap(final_q[strategy], final_q[baseline])
            paired = [
                a["acc"] - c["acc"]
                for a, c, sa, sc in zip(
                    row["metrics_per_seed"], rows[baseline]["metrics_per_seed"], row["seeds"], rows[baseline]["seeds"]
                )
                if sa == sc
            ]
            row["acc_vs_baseline_seeds"] = seed_interval(paired) if paired else None
    table = {"tasks": names, "evals": evals, "base": b, "baseline": baseline, "rows": rows}
    table["markdown"] = markdown(table)
    return table


def markdown(t: dict) -> str:
    names, f = t["tasks"], lambda x: "" if x is None or x != x else f"{x:.2f}"
    ci = lambda v: f"{v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]" if v else ""
    pm = lambda v: f"{v[0]:.2f}" + (f" [{v[1]:.2f}, {v[2]:.2f}]" if v[1] != v[2] else "")
    out = ["## Summary", ""]
    head = [
        "strategy",
        "seeds",
        "ACC",
        "BWT",
        "forgetting",
        "FWT",
        "first task lost",
        f"ΔACC vs {t['baseline']} [95% CI]",
    ]
    joint = any("acc_vs_joint" in r for r in t["rows"].values())
    head += ["ΔACC vs joint [95% CI]"] * joint + ["min / seed"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, r in t["rows"].items():
        m = r["metrics"]
        cells = [s, str(len(r["seeds"]))] + [
            pm(m[k]) if k in m else "" for k in ("acc", "bwt", "forgetting", "fwt", "first_task_drop")
        ]
        cells += [ci(r.get("acc_vs_baseline"))] + [ci(r.get("acc_vs_joint"))] * joint
        cells += [f"{r['wall_s_per_seed'] / 60:.1f}"]
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Scores: F1 (QA) or accuracy (math), 0-100, primary metric per task. ACC: mean over tasks after the "
        "last stage. BWT (Lopez-Paz & Ranzato 2017): mean over earlier tasks of R[last][j] - R[j][j]. "
        "Forgetting (Chaudhry et al. 2018, as in L2P): mean over earlier tasks of the best earlier score minus "
        "the last. FWT (Lopez-Paz & Ranzato): mean over later tasks of R[j-1][j] minus the base model's score. "
        "First task lost: R[1][1] - R[last][1]. Brackets: 95% t interval over seeds (shown with 2+ seeds). "
        "ΔACC: paired bootstrap over questions (per-question scores averaged over seeds, mean over tasks).",
        "",
    ]
    grown = {s: r["growth_routing"] for s, r in t["rows"].items() if r.get("growth_routing")}
    if grown:
        out += [
            "Routing after growth: earlier tasks' questions on their old experts / the new task's on its new "
            "experts, % (the lowest seed):",
            "",
        ]
        out += [
            f"- {s}: "
            + ", ".join(f"stage {g['stage']} {100 * g['old_on_old']:.0f} / {100 * g['new_on_new']:.0f}" for g in stages)
            for s, stages in grown.items()
        ]
        out.append("")
    if t["base"]:
        out += ["Base model alone: " + ", ".join(f"{n} {f(x)}" for n, x in zip(names, t["base"])), ""]
    for s, r in t["rows"].items():
        out += [f"## R[stage][task]: {s} (mean over {len(r['seeds'])} seed(s))", ""]
        out += ["| after stage | " + " | ".join(names) + " | avg |", "|---|" + "---|" * (len(names) + 1)]
        for i, row in enumerate(r["R"]):
            label = "all tasks (joint)" if len(r["R"]) == 1 else f"{i + 1} ({names[i]})"
            valid = [x for x in row if x == x]
            out.append(f"| {label} | " + " | ".join(f(x) for x in row) + f" | {f(mean(valid)) if valid else ''} |")
        out.append("")
        if r.get("expert_share"):
            out += [f"Where the router sent each task's questions ({s}): % per expert, expert 0 first", ""]
            out += ["| after stage | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for i, row in enumerate(r["expert_share"]):
                label = "all tasks (joint)" if len(r["expert_share"]) == 1 else f"{i + 1} ({names[i]})"
                out.append(f"| {label} | " + " | ".join(" / ".join(f"{100 * x:.0f}" for x in c) for c in row) + " |")
            out.append("")
    return "\n".join(out)
