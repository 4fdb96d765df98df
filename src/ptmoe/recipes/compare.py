"""`ptmoe compare CONFIG.yaml`: train and evaluate several methods on the same data and budget;
write a side-by-side table (markdown and JSON) in the layout of the paper's tables.

Config: the keys of a train config (shared by every method) plus
  methods: [{name, method, method_options?, preset?, train?: {...}}, ...]
  seeds: [0, 1, 2]
  sweep: {lrs: [..], steps: N, valid_examples: M}   (optional learning-rate sweep per method,
         scored by validation loss on a slice of the training sources, never on evaluation sets)
  baseline: pt   (paired bootstrap intervals of each method's difference to this one)
An ATTEMPT entry may name `source_runs: {...}` (train-config overrides, often {}): its source prompts
are then `pt` runs, one per training source on that source alone (the entry's prompt length, seed 0,
the shared budget), trained and stored like any other run and reused across seeds and entries.
Every run is stored under output_dir/runs/<hash of its config>/; a finished run is never rerun,
so an interrupted comparison resumes where it stopped. `--report` trains nothing: it builds the
table from the runs that have finished (a comparison spread over sessions, or run in parallel
with --only).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from pathlib import Path

from ..methods import get_method
from ..methods.attempt import NO_SOURCE
from .compare_table import build_table, paired_bootstrap, per_question  # noqa: F401
from .config import DEFAULTS, ConfigError, merge, parse_override, read_config_file, switch_method, validate
from .evaluate import evaluate
from .presets import apply_preset
from .runs import NON_FINITE, RunStopped

COMPARE_KEYS = {"methods", "seeds", "sweep", "baseline"}


def add_arguments(p):
    p.add_argument("config", help="compare YAML (see configs/compare-*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of the shared config")
    p.add_argument("--only", help="comma-separated method names to run (the table shows only these)")
    p.add_argument(
        "--report", action="store_true", help="train nothing: build the table from the finished runs of every method"
    )


def run(args):
    path = Path(args.config)
    raw = read_config_file(path)
    for item in args.overrides:
        raw = merge(raw, parse_override(item))
    only = None
    if args.only:
        names = [m.get("name") for m in raw.get("methods") or []]
        only = [args.only] if args.only in names else [n.strip() for n in args.only.split(",")]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"--only: no method named {unknown[0]!r} in {path}; known: {', '.join(map(str, names))}")
    table = compare(raw, str(path), only=only, report=args.report)
    print(table["markdown"])
    return 0


# Methods whose prompt reads the input. Their runs from before the routing fix (main ec6a8ec) pooled
# each training row's answer too; the rule's name in their key means such a run is never reused.
ROUTED = ("ptmoe", "smop", "attempt")
ROUTING_RULE = "context_mask"


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
    for key in ("init_from", "grow"):  # top-level keys added later, likewise
        if ident.get(key) == DEFAULTS[key]:
            ident.pop(key, None)
    if ident.get("grow", {}).get("route_weight") == 0.0:  # grow keys added later, likewise
        ident["grow"] = {k: v for k, v in ident["grow"].items() if k != "route_weight"}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


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


def compare(raw: dict, where: str = "compare config", only=None, log=print, report: bool = False) -> dict:
    shared = shared_config(raw, where)
    methods = raw.get("methods") or []
    if not methods:
        raise ConfigError(f"{where}: 'methods' is empty")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(type(x) is int for x in seeds):
        raise ConfigError(f"{where}: seeds: must be a non-empty list of integers, got {seeds!r}")
    sweep = raw.get("sweep")
    root = Path(str(shared["output_dir"]).format(method="compare", seed=0))
    # every entry checked before anything trains (an ATTEMPT entry's source runs are filled in later)
    configs = [(entry, method_config(shared, _without(entry, "source_runs"), where)) for entry in methods]
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    finished, used = {}, []  # used: every stored run behind the table, sweeps included
    for entry, cfg in configs:  # source prompts (ATTEMPT's): checked before anything trains
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
    for entry, cfg in configs:
        name = entry.get("name")
        if only and name not in only:
            continue
        if "source_runs" in entry:
            entry = dict(entry)
            paths = source_prompt_runs(shared, entry.pop("source_runs") or {}, entry, root, log, report, used)
            if paths is None:
                log(f"[compare] {name}: source prompt runs not finished")
                continue
            entry["method_options"] = {**(entry.get("method_options") or {}), "source_prompts": paths}
            cfg = method_config(shared, entry, where)
        if sweep:
            cfg["train"]["lr"] = sweep_lr(cfg, sweep, root, log, report, used)
            if cfg["train"]["lr"] is None:
                log(f"[compare] {name}: learning-rate sweep not finished")
                continue
        runs = []
        for seed in seeds:
            c = copy.deepcopy(cfg)
            c["seed"] = seed
            if not report:
                log(f"[compare] {name} seed {seed} (lr {c['train']['lr']})")
            res = run_once(c, root, log=log, report=report)
            if res is not None:
                runs.append(res)
                used.append(res)
        if runs:
            finished[name] = runs
        elif report:
            log(f"[compare] {name}: no finished run")
    if not finished:
        raise ConfigError(f"{where}: no finished runs to report under {root}")
    table = build_table(finished, raw.get("baseline", "pt"))
    used = list({r["key"]: r for r in used}.values())  # a source run shared by entries counts once
    table["run_hours"] = sum(r["train"]["wall_s"] + r.get("eval", {}).get("wall_s", 0) for r in used) / 3600
    table["markdown"] += (
        f"\n\nCompute behind this table: {len(used)} runs (learning-rate sweeps included), "
        f"{table['run_hours']:.1f} h of training and evaluation."
    )
    table["wall_s_this_invocation"] = time.time() - t0
    (root / "compare.json").write_text(json.dumps({k: v for k, v in table.items() if k != "markdown"}, indent=2))
    (root / "compare.md").write_text(table["markdown"])
    return table


def source_prompt_runs(
    shared: dict, overrides: dict, entry: dict, root: Path, log, report: bool, used: list
) -> list[str] | None:
    """ATTEMPT's source prompts as its paper makes them: one prompt-tuning run per training source;
    the best adapter folder of each (None in report mode while one is missing)."""
    T = (entry.get("method_options") or {}).get("num_tokens", 40)
    paths = []
    for spec in shared["data"]["train"]:
        over = merge(
            {"method": "pt", "preset": None, "method_options": {"num_tokens": T}, "seed": 0, "data": {"train": [spec]}},
            overrides,
        )
        cfg = validate(merge(shared, over, f"methods[{entry.get('name')}]: source_runs"))
        if not report:
            log(f"[compare] {entry.get('name')}: source prompt run (pt on {spec})")
        res = run_once(cfg, root, evaluate_it=False, log=log, report=report)
        if res is None:
            return None
        used.append(res)
        paths.append(str(Path(res["train"]["output_dir"]) / "best"))
    return paths


def sweep_lr(cfg: dict, sweep: dict, root: Path, log, report: bool, used: list) -> float | None:
    """Pick the learning rate with the lowest validation loss after a short run
    (None in report mode while a sweep run is missing); each finished sweep run is added to `used`."""
    lrs = sweep.get("lrs", {})
    lrs = lrs.get(cfg["method"], lrs.get("default")) if isinstance(lrs, dict) else lrs
    if not lrs:
        return cfg["train"]["lr"]
    scores = {}
    for lr in lrs:
        c = copy.deepcopy(cfg)
        c["train"].update(lr=float(lr), steps=int(sweep.get("steps", 30)), save_every=10**9)
        c["data"]["valid_examples"] = int(sweep.get("valid_examples", c["data"]["valid_examples"]))
        res = run_once(c, root, evaluate_it=False, log=log, report=report)
        if res is None:
            return None
        used.append(res)
        scores[float(lr)] = res["train"]["best_valid_loss"]
    best = min(scores, key=lambda k: scores[k])
    if not report:
        log(f"[compare] {cfg['method']}: sweep valid loss {scores} -> lr {best}")
    return best
