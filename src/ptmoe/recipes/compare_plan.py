"""The runs of a comparison (`ptmoe compare`) and where they are stored, for either executor.

A comparison is planned as steps, one per run, each naming the steps whose results its config needs:
an ATTEMPT entry's source prompt runs, then the learning-rate sweep's runs before the seeds. A run is
stored under output_dir/runs/<hash of its config>/ (result.json once finished) and never rerun.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..methods import get_method
from ..methods.attempt import NO_SOURCE
from .config import DEFAULTS, ConfigError, merge, switch_method, validate
from .evaluate import evaluate
from .presets import apply_preset
from .runs import NON_FINITE, RunStopped

COMPARE_KEYS = {"methods", "seeds", "sweep", "baseline"}


# Methods whose prompt reads the input. Their runs from before the routing fix (main ec6a8ec) pooled
# each training row's answer too; the rule's name in their key means such a run is never reused.
ROUTED = ("ptmoe", "smop", "attempt")
ROUTING_RULE = "context_mask"
# method options added after runs were stored: at these values a run hashes as before they existed
ADDED_OPTIONS = {
    "z_loss": 0.0,
    "assignment": "top_k",
    "router_init": "normal",
    "groups": 1,
    "route_by": "input",
    "sources": [],
    "source_supervision": 0.0,
    "stage_experts": None,
    "router_input": "embeddings",
    "router_pool": "mean",
}


def run_key(cfg: dict) -> str:
    """Runs are identified by everything that changes their result (not by where they are written).
    A preset is hashed by what it expands to, so redefining a preset never reuses a stale run, and a
    method written out option by option shares its runs with the preset it equals."""
    ident = {k: v for k, v in apply_preset(cfg).items() if k != "output_dir"}
    if ident.get("method") in ROUTED:
        ident["routing_rule"] = ROUTING_RULE
    # keys added after runs were stored hash as before while unset, so stored runs are still found
    added = {"columns": None, "task": None, "eval_sample": "first", "train_max_length": None}
    ident["data"] = {k: v for k, v in ident["data"].items() if not (k in added and v == added[k])}
    # routing value only adds evaluations of a routed adapter: unkeyed at its default or without a router
    unkeyed = ident["eval"].get("routing_value") is True or ident.get("method") not in ROUTED
    ident["eval"] = {k: v for k, v in ident["eval"].items() if not (k == "routing_value" and unkeyed)}
    opts = ident["method_options"]
    ident["method_options"] = {k: v for k, v in opts.items() if not (k in ADDED_OPTIONS and v == ADDED_OPTIONS[k])}
    if "grow" in ident:
        ident["grow"] = grow_ident(ident["grow"])
    for key in ("init_from", "grow"):  # top-level keys added later, likewise
        if ident.get(key) == (grow_ident(DEFAULTS[key]) if key == "grow" else DEFAULTS[key]):
            ident.pop(key, None)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


def grow_ident(g: dict) -> dict:
    """The grow keys that change a run: those added later drop out at the value runs had before them
    (route_weight 0, gate shared), and the gate drops out where the run does not grow."""
    later = {"route_weight": 0.0, "gate": "shared", "rank": 0}
    return {
        k: v for k, v in g.items() if not ((k in later and v == later[k]) or (k == "gate" and not g.get("experts")))
    }


def run_folder(root: Path, cfg: dict) -> Path:
    return root / "runs" / run_key(cfg)


def stored_result(root: Path, cfg: dict) -> dict | None:
    done = run_folder(root, cfg) / "result.json"
    return json.loads(done.read_text()) if done.exists() else None


def run_once(cfg: dict, root: Path, evaluate_it: bool = True, log=print, report: bool = False) -> dict | None:
    """Train (and evaluate) one config, or return its stored result if it already finished
    (report=True: None instead of training)."""
    from .train import train

    key = run_key(cfg)
    folder = root / "runs" / key
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    if report:
        return None
    cfg = copy.deepcopy(cfg)
    cfg["output_dir"] = str(folder / "train")
    resume = (folder / "train" / "checkpoint" / "trainer_state.json").exists()
    t0 = time.time()
    try:
        summary = train(cfg, resume=resume, overwrite=not resume, log=log)  # an unfinished run of ours: no result yet
    except RunStopped as e:
        if e.exit_code != NON_FINITE or evaluate_it:
            raise
        # a learning-rate sweep run that diverged: the worst score, stored so it is not retried
        log(f"[compare] {e}")
        summary = {
            "output_dir": cfg["output_dir"],
            "best_valid_loss": float("inf"),
            "wall_s": time.time() - t0,
            "stopped": str(e),
        }
    result = {"key": key, "config": cfg, "train": summary}
    if evaluate_it:
        adapter = str(Path(summary["output_dir"]) / "best")
        res = evaluate(cfg, adapter, str(folder / "eval"), log=log)
        result["eval"] = {k: res[k] for k in ("sets", "average", "num_trainable", "predictions", "wall_s")}
        result["eval"]["router"] = res.get("router")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(done)
    return result


def _without(entry, key):
    return {k: v for k, v in entry.items() if k != key} if isinstance(entry, dict) else entry


def method_config(shared: dict, entry: dict, where: str) -> dict:
    if not isinstance(entry, dict) or "name" not in entry or "method" not in entry:
        raise ConfigError(f"{where}: each methods entry needs 'name' and 'method'")
    over = {k: v for k, v in entry.items() if k != "name"}
    cfg = merge(shared, over, f"{where}: methods[{entry['name']}]")
    if cfg["method"] != shared["method"]:  # the shared options and preset of another method don't apply
        switch_method(cfg, shared["method"], shared["preset"], set(over.get("method_options") or {}), lambda m: None)
    return validate(cfg)


def shared_config(raw: dict, where: str) -> dict:
    """The train config every method of a compare config starts from."""
    return merge(DEFAULTS, {k: v for k, v in raw.items() if k not in COMPARE_KEYS}, where)


# ---- the plan: every run of a comparison and what it waits for ------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One methods entry, checked: its config before source prompts and sweep are filled in."""

    name: str
    raw: dict  # the entry as written, without source_runs
    cfg: dict
    shared: dict
    where: str
    source_runs: dict | None  # ATTEMPT: overrides of its source prompt runs (None: no such runs)
    sweep: dict | None

    def config(self, sources: list[dict]) -> dict:
        """The entry's config once its source prompt runs (if any) have finished."""
        if self.source_runs is None:
            return copy.deepcopy(self.cfg)
        paths = [str(Path(r["train"]["output_dir"]) / "best") for r in sources]
        entry = {**self.raw, "method_options": {**(self.raw.get("method_options") or {}), "source_prompts": paths}}
        return method_config(self.shared, entry, self.where)

    def source_configs(self) -> list[tuple[str, dict]]:
        """ATTEMPT's source prompts as its paper makes them: one prompt-tuning run per training source."""
        T = (self.raw.get("method_options") or {}).get("num_tokens", 40)
        out = []
        for spec in self.shared["data"]["train"]:
            over = merge(
                {
                    "method": "pt",
                    "preset": None,
                    "method_options": {"num_tokens": T},
                    "seed": 0,
                    "data": {"train": [spec]},
                },
                self.source_runs,
            )
            out.append((spec, validate(merge(self.shared, over, f"methods[{self.name}]: source_runs"))))
        return out

    def sweep_rates(self) -> list[float]:
        lrs = (self.sweep or {}).get("lrs", {})
        lrs = lrs.get(self.cfg["method"], lrs.get("default")) if isinstance(lrs, dict) else lrs
        return [float(lr) for lr in lrs or []]

    def sweep_point(self, cfg: dict, lr: float) -> dict:
        """A short run at one learning rate, scored by its validation loss."""
        c = copy.deepcopy(cfg)
        c["train"].update(lr=lr, steps=int(self.sweep.get("steps", 30)), save_every=10**9)
        c["data"]["valid_examples"] = int(self.sweep.get("valid_examples", c["data"]["valid_examples"]))
        return c


def sweep_scores(results: list[dict]) -> dict[float, float]:
    """Validation loss per learning rate of finished sweep runs."""
    return {r["config"]["train"]["lr"]: r["train"]["best_valid_loss"] for r in results}


@dataclass(frozen=True)
class Step:
    """One run of a comparison. Its config is `cfg` when known from the config file alone, else
    built from the results of the steps it needs: the entry's source prompt runs, then its sweep runs."""

    method: str  # the methods entry it belongs to (the first one, when entries share a run)
    role: str  # "source" (an ATTEMPT source prompt), "sweep" (one learning rate) or "seed"
    param: object  # the training source, the learning rate or the seed
    evaluate: bool
    needs: tuple = ()
    n_sources: int = 0  # how many of `needs` are source prompt runs
    cfg: dict | None = None
    entry: Entry | None = None

    def config(self, results: list[dict]) -> dict:
        if self.cfg is not None:
            return copy.deepcopy(self.cfg)
        cfg = self.entry.config(results[: self.n_sources])
        if self.role == "sweep":
            return self.entry.sweep_point(cfg, self.param)
        scores = sweep_scores(results[self.n_sources :])
        if scores:
            cfg["train"]["lr"] = min(scores, key=lambda k: scores[k])
        cfg["seed"] = self.param
        return cfg

    def label(self) -> str:
        what = {"source": "source prompt run (pt on {})", "sweep": "sweep lr {}", "seed": "seed {}"}[self.role]
        return f"{self.method}: {what.format(self.param)}"

    def describe(self, cfg: dict, results: list[dict]) -> str:
        """The line said when the run starts."""
        if self.role != "seed":
            return f"[compare] {self.label()}"
        scores = sweep_scores(results[self.n_sources :])
        sweep = f"; sweep valid loss {scores} -> lr {cfg['train']['lr']}" if scores else ""
        return f"[compare] {self.method} seed {self.param} (lr {cfg['train']['lr']}{sweep})"


@dataclass
class Plan:
    root: Path
    entries: list[Entry]
    steps: list[Step] = field(default_factory=list)
    seed_steps: dict[str, list[int]] = field(default_factory=dict)  # entry name -> its seed runs
    index: dict[str, int] = field(default_factory=dict)  # a run's identity -> its step

    def add(self, step: Step) -> int:
        """The step's index; a run two entries share (the same config) is one step, so that two
        Ray tasks never train into the same folder. A config known now is identified by its key,
        one built later by what builds it (the sweep's rate left out: the sweep chooses it)."""
        if step.cfg is not None:
            ident = run_key(step.cfg)
        else:
            blank = copy.deepcopy(step.entry.cfg)
            blank["train"]["lr"] = 0.0 if step.entry.sweep_rates() else blank["train"]["lr"]
            ident = json.dumps([step.role, step.param, run_key(blank), step.needs, step.evaluate])
        if ident not in self.index:
            self.index[ident] = len(self.steps)
            self.steps.append(step)
        return self.index[ident]


def plan_comparison(raw: dict, where: str, only=None) -> Plan:
    """Check every entry (before anything trains) and list the runs with what each waits for."""
    shared = shared_config(raw, where)
    methods = raw.get("methods") or []
    if not methods:
        raise ConfigError(f"{where}: 'methods' is empty")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(type(x) is int for x in seeds):
        raise ConfigError(f"{where}: seeds: must be a non-empty list of integers, got {seeds!r}")
    root = Path(str(shared["output_dir"]).format(method="compare", seed=0))
    # every entry checked before anything trains (an ATTEMPT entry's source runs are filled in later)
    configs = [(entry, method_config(shared, _without(entry, "source_runs"), where)) for entry in methods]
    plan = Plan(root, [])
    for entry, cfg in configs:  # source prompts (ATTEMPT's): checked before anything trains
        check_sources(entry, cfg, where)
    for entry, cfg in configs:
        if only and entry.get("name") not in only:
            continue
        sources = (entry["source_runs"] or {}) if "source_runs" in entry else None
        e = Entry(entry["name"], _without(entry, "source_runs"), cfg, shared, where, sources, raw.get("sweep"))
        plan.entries.append(e)
        add_entry_steps(plan, e, seeds)
    return plan


def check_sources(entry: dict, cfg: dict, where: str) -> None:
    takes_sources = "source_prompts" in {f.name for f in dataclasses.fields(get_method(cfg["method"]).config_cls)}
    if "source_runs" in entry and (not takes_sources or not isinstance(entry["source_runs"] or {}, dict)):
        raise ConfigError(
            f"{where}: methods[{entry.get('name')}]: 'source_runs' is a mapping of "
            f"train-config overrides, for methods with source prompts (attempt) only"
        )
    if takes_sources and "source_runs" not in entry:
        opts = cfg["method_options"]
        if not opts.get("source_prompts") and not opts.get("num_random_sources"):
            raise ConfigError(f"{where}: methods[{entry.get('name')}]: {NO_SOURCE}")


def add_entry_steps(plan: Plan, e: Entry, seeds: list[int]) -> None:
    """The entry's runs: source prompts, then sweep points, then seeds (each needing all before it)."""
    static = e.source_runs is None  # without source prompts every config is known now
    sources = () if static else tuple(plan.add(Step(e.name, "source", s, False, cfg=c)) for s, c in e.source_configs())
    n = len(sources)
    sweeps = tuple(
        plan.add(Step(e.name, "sweep", lr, False, sources, n, e.sweep_point(e.cfg, lr) if static else None, e))
        for lr in e.sweep_rates()
    )
    plan.seed_steps[e.name] = [
        plan.add(
            Step(
                e.name,
                "seed",
                seed,
                True,
                sources + sweeps,
                n,
                {**e.cfg, "seed": seed} if static and not sweeps else None,
                e,
            )
        )
        for seed in seeds
    ]
