"""Continual learning (`ptmoe continual CONFIG.yaml`; its tables: continual_table.py): learn a sequence of tasks in order and, after each stage, evaluate
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

from ..config.loading import DATA_SUFFIXES, DEFAULTS, merge, validate
from ..config.presets import apply_preset, default_option
from ..config.schema import ConfigError
from ..data import list_sets
from ..evaluation.evaluate import evaluate
from ..methods import get_method
from .continual_table import build_table
from .plan import shared_config
from .store import run_once

CONTINUAL_KEYS = {"sequence", "strategies", "seeds", "pt_options", "strategy_options", "baseline"}
STRATEGIES = ("growth", "growth-noreplay", "seq-pt", "seq-ptmoe", "joint", "oracle")
SEQUENTIAL = ("growth", "growth-noreplay", "seq-pt", "seq-ptmoe")  # each stage starts from the last


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
    if not get_method(shared["method"]).growable:
        raise ConfigError(
            f"{where}: method: the PT-MoE strategies need a method that grows (ptmoe), got {shared['method']!r}"
        )
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
