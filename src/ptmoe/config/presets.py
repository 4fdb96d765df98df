"""Named recipes for the routed methods (`preset: paper`, `balanced`, `clustered` or `default` in a config).

Sources: shared/PAPER.md of the project ("what the paper says, and how we read it") and the paper summaries
it was drawn from (shared/seeds/002: "applies Gaussian noise during training for exploration",
"Critical path: 1) Router initialization and noise schedule (0.01 std Gaussian during training);
2) SVD initialization of A_i and B from task-relevant text embeddings; 3) Selective probationary
routing configuration (set top_k=1, multiply output by softmax probability)").

paper:   each choice follows the text.
         - noise: multiplicative l(1 + eps), eps ~ N(0, 0.01^2). The seeds give only "Gaussian, std
           0.01, training only"; multiplicative is how a published review reads it and how SMoP
           applies it (PAPER.md, row "exploration noise"). At 0.01 it moves a logit of a few
           hundredths by about 1.6e-4 and flips 1 in 10,000 top-1 choices at initialisation
           (benchmarks/noise_exploration.py): it hardly explores. Additive N(0, 0.01^2) and SMoP's
           sigma = 1 are in configs/ablation-routing.yaml (docs/ablations.md).
         - top-1 selection with probationary scaling w = p on the chosen expert (seeds/002 item 3;
           "selective probationary" is the paper's best routing ablation).
         - A_i, B by SVD of the embeddings of task text (seeds/002 item 2): the instruction of the
           training data's task (init_text: "@task", resolved by `task_init_text`); every expert
           starts identical (the text gives no perturbation), no load balancing (none mentioned),
           one learning rate.
         - router input: the mean of the input token embeddings (seeds/002: "from mean input
           embeddings"), raw.
balanced: the paper's top-1 probationary routing, noise and SVD init from the task text, made to
         keep using its experts: the router reads standardised inputs (running per-dimension mean
         and variance of the pooled embeddings), A_i start apart (a 10% per-expert perturbation), a
         load-balancing loss (0.1), and 3x the learning rate of prompt tuning, as the factorised,
         probability-scaled prompt moves more slowly. Why: with the paper's settings the router
         sends every example to one expert within ten steps; pooled embeddings of all inputs share
         one large component, so a linear router gives them nearly the same logits (router.py,
         benchmarks/router_input.py). This was the default until the routing fix.
default: the recipe that measured best after the routing fix, today `paper`. On the 60-step QA
         table (configs/compare-qa.yaml, 3 seeds, docs/parity.md) `paper` beat `balanced` by +4.33 F1
         [+2.41, +6.36] (paired, mean over 8 sets) and `balanced` with normalized weighting by 0.60
         on the average (31.46 against 30.86). Its router sends every input to one expert in each
         seed: on this model, what PT-MoE gains it does not gain from routing.
clustered: the paper's routing started from the data (docs/routing.md): router and experts
         from k-means of the pooled training inputs (`router_init: kmeans`; Lloyd's algorithm), the
         router's input standardised, Switch-style load balancing (0.1; Fedus et al. 2021) and the
         ST-MoE router z-loss (0.001; Zoph et al. 2022). It keeps both experts in use in training, but
         on SQuAD + DROP (configs/routing-mix.yaml, 3 seeds) its clusters do not follow the tasks (MI
         0.00-0.01 bit) and it scored 26.20 F1 against `paper`'s 28.11 (routing value -1.00
         [-3.93, +2.15]): measured, not better, so not the default.
supervised: the paper's recipe with a router that reads the frozen model's hidden states after layer 2
         (`router_input: hidden:2`) and is taught, in training, which source each row comes from
         (`source_supervision: 1.0`, one expert per training source); at inference it reads the input
         alone. The router-input study (docs/routing.md): on SQuAD + GSM-Symbolic it sends every held-out question to
         its task's expert (MI 0.99 bit, 3 seeds), where the paper's input and k-means do not, and scored
         +2.66 F1 over one expert [-1.07, +6.37] with a routing value of 0 (GSM scores 0 either way). For
         multi-source training only; not the default, which must also fit one-source data.
default: stays `paper` after the routing study too: the best learned router on SQuAD + DROP (28.11 F1, 1.24
         above one expert [-4.35, +6.38]; docs/routing.md), though no learned router there found the
         task split that routing by the true task (the oracle bracket, 31.16) exploits.
Every preset routes on the prompt alone (`ptmoe.inputs.context_mask`), in training as at inference.
"""

from __future__ import annotations

import copy

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
        opts = {**opts, "sources": [first_example(spec, cfg).get("set", spec) for spec in sources]}
    return opts


def default_option(method: str, name: str):
    """A method option's default (its config dataclass field)."""
    from dataclasses import fields

    from ..methods import get_method

    return next(f.default for f in fields(get_method(method).config_cls) if f.name == name)


def first_example(spec: str, cfg: dict) -> dict:
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
