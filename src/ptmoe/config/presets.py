"""Named recipes for the routed methods (`preset: paper`, `balanced`, `clustered`, `supervised` or `default`).

What each sets, and why; the measurements behind the choices are in docs/routing.md ("The presets").

paper:    each choice follows the paper's text (shared/PAPER.md reads it): multiplicative exploration
          noise l(1 + eps), eps ~ N(0, 0.01^2), in training only; top-1 selection with probationary
          scaling (w = p on the chosen expert); A_i, B by SVD of the embeddings of the training task's
          instruction (init_text "@task", `task_init_text`), every expert starting identical; no load
          balancing; one learning rate; the router reads the mean of the input token embeddings, raw.
balanced: the paper's routing made to keep using its experts, because pooled embeddings of all inputs
          share one large component, so a linear router gives them nearly the same logits (router.py):
          standardised router inputs, A_i started 10% apart, load balancing (0.1) and 3x the learning
          rate, as the factorised, probability-scaled prompt moves more slowly.
clustered: the paper's routing started from the data: router and experts from k-means of the pooled
          training inputs (`router_init: kmeans`), standardised router input, Switch load balancing (0.1)
          and the ST-MoE router z-loss (0.001).
supervised: a router that reads the frozen model's hidden states after layer 2 (`router_input: hidden:2`)
          and is taught in training which source each row comes from (`source_supervision: 1.0`, one
          expert per training source); at inference it reads the input alone. For multi-source training
          only.
default:  `paper`, the recipe that measured best; it must also fit one-source data. On the four reachable
          QA sets (docs/routing.md) no preset beat one expert at the CPU budget, so it stays `paper`.
Every preset routes on the prompt alone (`ptmoe.inputs.context_mask`), in training as at inference.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path

from ..data.format import MATH_INSTRUCTION, QA_INSTRUCTION

TASK_TEXT = "@task"  # init_text value: the instruction of the training data's task (task_init_text)

PRESETS = {
    "ptmoe": {
        "paper": {
            "method_options": {
                "top_k": 1,
                "weighting": "probationary",
                "noise": "multiplicative",
                "noise_std": 0.01,
                "router_input_norm": "none",
                "load_balance": 0.0,
                "init_noise": 0.0,
                "init_text": TASK_TEXT,
            }
        },
        "balanced": {
            "method_options": {
                "top_k": 1,
                "weighting": "probationary",
                "noise": "multiplicative",
                "noise_std": 0.01,
                "router_input_norm": "standardize",
                "load_balance": 0.1,
                "init_noise": 0.1,
                "init_text": TASK_TEXT,
            },
            "lr_scale": 3.0,
        },
    },
}
PRESETS["ptmoe"]["clustered"] = {
    "method_options": {
        **PRESETS["ptmoe"]["paper"]["method_options"],
        "router_init": "kmeans",
        "router_input_norm": "standardize",
        "load_balance": 0.1,
        "z_loss": 0.001,
    }
}
PRESETS["ptmoe"]["supervised"] = {
    "method_options": {
        **PRESETS["ptmoe"]["paper"]["method_options"],
        "router_input": "hidden:2",
        "source_supervision": 1.0,
    }
}
PRESETS["ptmoe"]["default"] = PRESETS["ptmoe"]["paper"]  # the measured winner (docstring)


def apply_preset(cfg: dict) -> dict:
    """Fill method options from the named preset; options set explicitly in the config win."""
    name = cfg.get("preset")
    if not name:
        return cfg
    table = PRESETS.get(cfg["method"], {})
    if name not in table:
        raise ValueError(
            f"preset: {name!r} is not defined for method {cfg['method']!r}; known: {sorted(table) or 'none'}"
        )
    preset, cfg = table[name], copy.deepcopy(cfg)
    cfg["method_options"] = {**preset["method_options"], **cfg["method_options"]}
    lr = cfg["train"]["lr"] * preset.get("lr_scale", 1.0)
    cfg["train"]["lr"] = lr
    cfg["preset"] = None  # applied once: a saved config replays the same numbers
    return cfg


def resolve_method_options(cfg: dict) -> dict:
    """The method options a model is built with: init_text "@task" resolved, and for the oracle
    (route_by: source) the training sources in expert order."""
    opts = task_init_text(cfg)
    if (opts.get("route_by") == "source" or (opts.get("source_supervision") or 0) > 0) and not opts.get("sources"):
        sources = list(cfg["data"]["train"])
        experts = opts.get("experts", default_option(cfg["method"], "experts"))
        if experts != len(sources):
            raise ValueError(
                f"method_options route_by: source / source_supervision need experts = the number of data.train "
                f"sources ({len(sources)}), "
                f"got experts={experts}"
            )
        opts = {**opts, "sources": [set_name(spec, cfg) for spec in sources]}
    if opts.get("route_by") == "source":
        for spec in cfg["data"]["eval"]:
            eval_route(cfg, spec, opts["sources"])  # every evaluation set finds its expert before any training
    return opts


def eval_route(cfg: dict, spec: str, sources: list[str]) -> str:
    """The training source name an evaluation set's questions are routed as by `route_by: source`: the one
    data.eval_source names for it, else its own set name when it matches a source (`disflqa/heldout` is
    `disflqa`'s); a one-line ValueError naming the set and the sources when neither does."""
    # on use: the router's own rule for names (methods import torch; config checks start without it)
    from ..data.load import entry_for
    from ..methods.ptmoe import source_index

    named = entry_for(cfg["data"].get("eval_source"), spec)
    if named is not None:
        train = cfg["data"]["train"]
        index = next((i for i, t in enumerate(train) if entry_for({named: True}, t)), None)
        if index is None:
            raise ValueError(f"data.eval_source: {spec!r} -> {named!r}, which is not one of data.train {list(train)}")
        return sources[index]
    name = set_name(spec, cfg)
    try:
        source_index(name, sources)
    except ValueError:
        raise ValueError(
            f"route_by source: data.eval {spec!r} (set {name!r}) matches none of the training sources {sources}; "
            f"name its source: data.eval_source={{{Path(str(spec)).name}: <one of data.train>}}"
        ) from None
    return name


def default_option(method: str, name: str):
    """A method option's default (its config dataclass field)."""
    # on use: these import torch, and `ptmoe config`, --help and config checks start without it
    from ..methods import get_method

    return next(f.default for f in fields(get_method(method).config_cls) if f.name == name)


def set_name(spec: str, cfg: dict) -> str:
    """The name a data set's rows carry ("set"): what routing by source matches them by."""
    return first_example(spec, cfg).get("set", spec)


def first_example(spec: str, cfg: dict) -> dict:
    # on use: these import torch, and `ptmoe config`, --help and config checks start without it
    from ..data import load_set

    return next(iter(load_set(spec, cfg["data"], log=lambda *a: None)), {})


def task_init_text(cfg: dict) -> dict:
    """Method options with init_text "@task" replaced by the instruction of the task of each training
    source (QA and math instructions joined when a mix has both), read from its first example."""
    opts = cfg["method_options"]
    if opts.get("init_text") != TASK_TEXT:
        return opts
    tasks = []
    for spec in cfg["data"]["train"]:
        task = first_example(spec, cfg).get("task", "qa")
        if task not in tasks:
            tasks.append(task)
    text = "\n".join(MATH_INSTRUCTION if t == "math" else QA_INSTRUCTION for t in tasks)
    return {**opts, "init_text": text}
