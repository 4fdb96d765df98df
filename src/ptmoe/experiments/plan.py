"""The runs of a comparison (`ptmoe compare`), for either executor (where they are stored: store.py).

A comparison is planned as steps, one per run, each naming the steps whose results its config needs:
an ATTEMPT entry's source prompt runs, then the learning-rate sweep's runs before the seeds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config.loading import DEFAULTS, merge, switch_method, validate
from ..config.schema import ConfigError
from ..methods import get_method
from ..methods.attempt import NO_SOURCE
from .store import run_key

COMPARE_KEYS = {"methods", "seeds", "sweep", "baseline"}


def _without(entry, key):
    return {k: v for k, v in entry.items() if k != key} if isinstance(entry, dict) else entry


def method_config(shared: dict, entry: dict, where: str) -> dict:
    if not isinstance(entry, dict) or "name" not in entry or "method" not in entry:
        raise ConfigError(f"{where}: each methods entry needs 'name' and 'method'")
    over = {k: v for k, v in entry.items() if k not in ("name", "baseline")}  # baseline: the table's, not training's
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
    check_baselines(raw, methods, where)
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


def check_baselines(raw: dict, methods: list[dict], where: str) -> None:
    """The comparison's `baseline` (when given) names an entry, and an entry's own `baseline` another one."""
    names = [m["name"] for m in methods]
    wanted = [("baseline", raw["baseline"], None)] if "baseline" in raw else []
    wanted += [(f"methods[{m['name']}]: baseline", m["baseline"], m["name"]) for m in methods if "baseline" in m]
    for key, name, own in wanted:
        if name not in names or name == own:
            raise ConfigError(f"{where}: {key}: {name!r} is not another methods entry (entries: {', '.join(names)})")


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
