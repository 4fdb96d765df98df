"""The run store of `ptmoe compare` and `ptmoe continual`: a run is stored under
output_dir/runs/<hash of its config>/ (result.json once finished) and never rerun, whichever executor
ran it, so an interrupted experiment resumes where it stopped."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

from ..config.loading import DEFAULTS
from ..config.presets import apply_preset
from ..evaluation.evaluate import evaluate
from ..methods import get_method
from ..training.loop import train
from ..training.run_folder import NON_FINITE, RunStopped

# Runs of a routed method (its spec says so) from before the routing fix (main ec6a8ec) pooled each
# training row's answer too; the rule's name in their key means such a run is never reused.
ROUTING_RULE = "context_mask"


def run_key(cfg: dict) -> str:
    """Runs are identified by everything that changes their result (not by where they are written).
    A preset is hashed by what it expands to, so redefining a preset never reuses a stale run, and a
    method written out option by option shares its runs with the preset it equals."""
    ident = {k: v for k, v in apply_preset(cfg).items() if k != "output_dir"}
    spec = get_method(ident["method"])
    if spec.routed:
        ident["routing_rule"] = ROUTING_RULE
    # keys added after runs were stored hash as before while unset, so stored runs are still found
    added = {"columns": None, "task": None, "eval_sample": "first", "train_max_length": None, "eval_source": {}}
    ident["data"] = {k: v for k, v in ident["data"].items() if not (k in added and v == added[k])}
    # routing value only adds evaluations of a routed adapter: unkeyed at its default or without a router
    unkeyed = ident["eval"].get("routing_value") is True or not spec.routed
    ident["eval"] = {k: v for k, v in ident["eval"].items() if not (k == "routing_value" and unkeyed)}
    # method options added after runs were stored, as the method declares them (MethodConfig.added_options)
    added = spec.config_cls.unkeyed_defaults()
    opts = ident["method_options"]
    ident["method_options"] = {k: v for k, v in opts.items() if not (k in added and v == added[k])}
    if "grow" in ident:
        ident["grow"] = grow_ident(ident["grow"])
    for key in ("init_from", "grow"):  # top-level keys added later, likewise
        if ident.get(key) == (grow_ident(DEFAULTS[key]) if key == "grow" else DEFAULTS[key]):
            ident.pop(key, None)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


def grow_ident(g: dict) -> dict:
    """The grow keys that change a run: those added later drop out at the value runs had before them
    (route_weight 0, gate shared, no router fit), and the gate drops out where the run does not grow."""
    later = {"route_weight": 0.0, "gate": "shared", "rank": 0, "router_fit_steps": 0}
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
