"""`ptmoe continual CONFIG.yaml`: learn a sequence of tasks in order and, after each stage, evaluate
every task of the sequence: the accuracy matrix R[stage][task], the final average accuracy, backward
transfer and forgetting, forward transfer, with paired intervals over questions and seeds, written as
continual.md / continual.json (docs/continual.md).

Config: the keys of a train config (shared by every stage; its data.train / data.eval are replaced by
the sequence's) plus
  sequence: [{train: squad/train, eval: squad/heldout}, ...]   (a task per stage, in order)
  strategies: [growth, growth-noreplay, seq-pt, seq-ptmoe, joint, oracle]
  seeds: [0, 1, 2]
  pt_options: {num_tokens: 40}          (method options of the pt strategies)
  strategy_options: {seq-pt: {train: {lr: 0.03}}}   (train-config overrides per strategy)
  baseline: seq-pt                      (the strategy every other one is compared with)
Strategies, on the same sequence and per-stage budget (train.steps):
  growth           PT-MoE; each later stage grows the adapter by grow.experts experts, old parts frozen,
                   the router replaying the stored inputs of earlier stages (grow.replay_weight)
  growth-noreplay  the same without the replay loss
  seq-pt           one pt prompt, fine-tuned stage after stage
  seq-ptmoe        one PT-MoE adapter (method_options.experts), fine-tuned stage after stage
  joint            one PT-MoE adapter with growth's final number of experts, trained on every task at
                   once for (tasks x train.steps) steps: the upper bound (its R has one row, the last)
  oracle           one pt prompt per task trained on that task alone, each task answered by its own
                   prompt (the true task id picks it); before a task's stage it is answered by the base
Every stage is a run of `compare`'s store (output_dir/runs/<hash of its config>/, the hash covering
the adapter it starts from and so the previous stage); finished stages are never retrained, so a
stopped run resumes stage by stage. Stage 0 of growth, growth-noreplay and seq-ptmoe is one run (the
same config), and so is stage 0 of seq-pt and oracle.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from ..metrics import PRIMARY, question_scores
from .compare_plan import run_once, shared_config
from .compare_table import paired_bootstrap
from .config import DATA_SUFFIXES, DEFAULTS, merge, parse_override, read_config_file, validate
from .schema import ConfigError

CONTINUAL_KEYS = {"sequence", "strategies", "seeds", "pt_options", "strategy_options", "baseline"}
STRATEGIES = ("growth", "growth-noreplay", "seq-pt", "seq-ptmoe", "joint", "oracle")
SEQUENTIAL = ("growth", "growth-noreplay", "seq-pt", "seq-ptmoe")  # each stage starts from the last


def add_arguments(p):
    p.add_argument("config", help="continual YAML (see configs/continual-qa.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of the shared config")
    p.add_argument("--only", help="comma-separated strategies to train (the table shows every finished one)")
    p.add_argument("--report", action="store_true", help="train nothing: the tables from the finished stages")


def run(args):
    raw = read_config_file(args.config)
    for item in args.overrides:
        raw = merge(raw, parse_override(item))
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    table = continual(raw, str(args.config), only=only, report=args.report)
    print(table["markdown"])
    return 0


# ---- the plan: every stage's config, checked before anything trains ------------------------------
def read_plan(raw: dict, where: str, only=None) -> dict:
    shared = shared_config({k: v for k, v in raw.items() if k not in CONTINUAL_KEYS}, where)
    sequence = raw.get("sequence")
    if not isinstance(sequence, list) or len(sequence) < 2:
        raise ConfigError(
            f"{where}: sequence: a list of at least two tasks ({{train: SET, eval: SET}}), got {sequence!r}"
        )
    tasks = []
    for i, t in enumerate(sequence):
        if not isinstance(t, dict) or set(t) - {"train", "eval", "name"} or not {"train", "eval"} <= set(t):
            raise ConfigError(f"{where}: sequence[{i}]: a mapping {{train: SET, eval: SET}}, got {t!r}")
        for key in ("train", "eval"):
            check_set(t[key], f"{where}: sequence[{i}].{key}")
        tasks.append({"name": str(t.get("name") or task_name(t["train"])), "train": t["train"], "eval": t["eval"]})
    strategies = raw.get("strategies") or list(STRATEGIES)
    unknown = [s for s in strategies + (only or []) if s not in STRATEGIES]
    if unknown:
        raise ConfigError(f"{where}: strategies: unknown {unknown[0]!r}; known: {', '.join(STRATEGIES)}")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(type(x) is int for x in seeds):
        raise ConfigError(f"{where}: seeds: must be a non-empty list of integers, got {seeds!r}")
    options = raw.get("strategy_options") or {}
    if not isinstance(options, dict) or set(options) - set(STRATEGIES):
        raise ConfigError(f"{where}: strategy_options: a mapping strategy -> train-config overrides")
    baseline = raw.get("baseline", "seq-pt")
    if shared["method"] != "ptmoe":
        raise ConfigError(f"{where}: method: the PT-MoE strategies need method ptmoe, got {shared['method']!r}")
    if any(s.startswith("growth") for s in strategies) and not (
        shared["grow"]["experts"] and shared["grow"]["store_size"]
    ):
        raise ConfigError(f"{where}: grow: the growth strategies need grow.experts >= 1 and grow.store_size >= 1")
    plan = {"shared": shared, "tasks": tasks, "strategies": strategies, "seeds": seeds, "baseline": baseline}
    pt_options = raw.get("pt_options") or {}
    plan["stages"] = {
        s: stage_configs(shared, s, tasks, pt_options, options.get(s) or {}, f"{where}: {s}") for s in strategies
    }
    return plan


def check_set(spec, where: str) -> None:
    """A prepared `set/split` that exists, or a data file (validate names a missing file)."""
    from ..data import list_sets

    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{where}: a data set name or file, got {spec!r}")
    if spec.startswith("hf:") or spec.endswith(DATA_SUFFIXES) or Path(spec).expanduser().exists():
        return
    name, _, split = spec.partition("/")
    known = list_sets()
    if split not in known.get(name, {}):
        listed = ", ".join(f"{s}/{sp}" for s, sps in known.items() for sp in sps) or "none: run `ptmoe data prepare`"
        raise ConfigError(f"{where}: no prepared set {spec!r} (known: {listed})")


def task_name(spec: str) -> str:
    """squad/train -> squad; data/qa.jsonl -> qa."""
    return Path(spec).name.split(".")[0] if spec.endswith(DATA_SUFFIXES) else spec.split("/")[0]


def stage_configs(shared: dict, strategy: str, tasks: list, pt_options: dict, over: dict, where: str) -> list[dict]:
    """The train configs of one strategy's stages (init_from is filled in as the stages finish)."""
    evals = [t["eval"] for t in tasks]
    g, T = shared["grow"], len(tasks)
    out = []
    for i, task in enumerate(tasks if strategy != "joint" else [None]):
        cfg = copy.deepcopy(shared)
        cfg["data"]["eval"] = evals
        cfg["data"]["train"] = [task["train"]] if task else [t["train"] for t in tasks]
        cfg["grow"] = copy.deepcopy(DEFAULTS["grow"])
        if strategy in ("seq-pt", "oracle"):
            cfg.update(method="pt", method_options=dict(pt_options), preset=None)
        elif strategy == "joint":
            cfg["method_options"] = {
                **cfg["method_options"],
                "experts": first_option(shared, "experts") + (T - 1) * g["experts"],
            }
            if g["rank"]:  # and growth's final rank, where its stages add B rows
                cfg["method_options"]["rank"] = first_option(shared, "rank") + (T - 1) * g["rank"]
            cfg["train"]["steps"] = T * shared["train"]["steps"]
        else:  # the PT-MoE sequences keep a replay store from stage 0 on (it changes no training)
            cfg["grow"]["store_size"] = g["store_size"]
        if strategy == "oracle" and i > 0:  # stage j's prompt answers only task j (stage 1 is seq-pt's run)
            cfg["data"]["eval"] = [task["eval"]]
        if strategy in SEQUENTIAL and i > 0:  # the adapter it starts from fixes the number of experts
            cfg["method_options"].pop("experts", None)
            if g["rank"]:  # and, where growth adds B rows, the rank
                cfg["method_options"].pop("rank", None)
        if strategy.startswith("growth") and i > 0:
            cfg["grow"] = {**g, "replay_weight": g["replay_weight"] if strategy == "growth" else 0.0}
        if over:
            cfg = merge(cfg, over, where)
        out.append(cfg)
    for i, cfg in enumerate(out):  # a later stage starts from the one before (filled in when it finished)
        validate({**copy.deepcopy(cfg), "init_from": "previous stage" if i and strategy in SEQUENTIAL else None})
    return out


def first_option(shared: dict, name: str) -> int:
    """A method option of the first stage, its preset expanded and its default filled in."""
    from .presets import apply_preset, default_option

    cfg = apply_preset(shared)
    return cfg["method_options"].get(name, default_option(cfg["method"], name))


# ---- running ----------------------------------------------------------------------------------------
def continual(raw: dict, where: str = "continual config", only=None, log=print, report: bool = False) -> dict:
    plan = read_plan(raw, where, only)
    root = Path(str(plan["shared"]["output_dir"]).format(method="continual", seed=0))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    finished = {}
    for seed in plan["seeds"]:  # every strategy at one seed before the next seed
        for strategy in plan["strategies"]:
            quiet = report or (only is not None and strategy not in only)
            stages = run_stages(plan["stages"][strategy], strategy, seed, root, log, quiet)
            if stages is not None:
                finished.setdefault(strategy, []).append(stages)
    if not finished:
        raise ConfigError(f"{where}: no finished strategy to report under {root}")
    base = base_scores(plan, root, log, report)  # after training, so processes side by side don't both run it
    table = build_table(finished, plan, base)
    table["wall_s_this_invocation"] = time.time() - t0
    (root / "continual.json").write_text(json.dumps({k: v for k, v in table.items() if k != "markdown"}, indent=2))
    (root / "continual.md").write_text(table["markdown"])
    return table


def run_stages(configs: list[dict], strategy: str, seed: int, root: Path, log, quiet: bool) -> list | None:
    """One strategy and seed: each stage's stored result (trained and evaluated unless stored), or None
    when a stage is missing and `quiet` (report mode, or a strategy another process runs)."""
    results, previous = [], None
    for i, cfg in enumerate(configs):
        cfg = copy.deepcopy(cfg)
        cfg["seed"] = seed
        if strategy in SEQUENTIAL and previous is not None:
            cfg["init_from"] = str(Path(previous["train"]["output_dir"]) / "best")
        if not quiet:
            log(f"[continual] {strategy} seed {seed} stage {i + 1}/{len(configs)} ({', '.join(cfg['data']['train'])})")
        res = run_once(cfg, root, log=log, report=quiet)
        if res is None:
            return None
        results.append(res)
        previous = res
    return results


def base_scores(plan: dict, root: Path, log, report: bool) -> dict | None:
    """The base model alone on every task (the b_i of forward transfer), stored once."""
    from .evaluate import evaluate

    done = root / "base" / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    if report:
        return None
    cfg = copy.deepcopy(plan["shared"])
    cfg["data"]["eval"] = [t["eval"] for t in plan["tasks"]]
    log("[continual] the base model alone on every task")
    res = evaluate(cfg, None, str(root / "base"), log=log)
    result = {k: res[k] for k in ("sets", "predictions", "wall_s")}
    done.write_text(json.dumps(result))
    return result


# ---- the tables ---------------------------------------------------------------------------------------
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
    baseline = plan["baseline"]
    for strategy, row in rows.items():
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
        "min / seed",
    ]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, r in t["rows"].items():
        m = r["metrics"]
        cells = [s, str(len(r["seeds"]))] + [
            pm(m[k]) if k in m else "" for k in ("acc", "bwt", "forgetting", "fwt", "first_task_drop")
        ]
        cells += [ci(r.get("acc_vs_baseline")), f"{r['wall_s_per_seed'] / 60:.1f}"]
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
