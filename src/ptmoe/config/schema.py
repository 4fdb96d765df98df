"""Every config key: its default, its type and what it does. The one source for the defaults
(config.DEFAULTS), for the checks (config.validate), for `ptmoe config show` and for
docs/config.md (`ptmoe config doc`), so none of them can drift from the others."""

from __future__ import annotations

import math
import re

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # 5e-5, 1e-2, .5, 3.0E+2


METHODS = ("ptmoe", "pt", "dpt", "smop", "attempt", "lora", "hydralora", "ft")  # the trainable built-ins in methods/


class ConfigError(ValueError):
    pass


def as_number(v, key: str):
    """A finite int or float; strings written as numbers ('5e-5') count (YAML 1.1 reads them as strings)."""
    if isinstance(v, str) and NUMBER.fullmatch(v.strip()):
        v = float(v) if re.search(r"[.eE]", v) else int(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{key}: must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ConfigError(f"{key}: must be a finite number, got {v!r}")
    return v


class Kind:
    """A value check: `check(value, key)` returns the value (normalised) or raises ConfigError."""

    def __init__(self, text: str, check):
        self.text, self.check = text, check


def integer(lo: int, null: bool = False) -> Kind:
    def check(v, key):
        if v is None and null:
            return None
        v = as_number(v, key)
        if not isinstance(v, int) or v < lo:
            what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
            raise ConfigError(f"{key}: must be {what}{' or null' if null else ''}, got {v!r}")
        return v

    return Kind(f"integer ≥ {lo}" + (" or null" if null else ""), check)


def number(lo: float = 0.0, strict: bool = False, hi: float | None = None) -> Kind:
    def check(v, key):
        v = as_number(v, key)
        if v < lo or (strict and v == lo) or (hi is not None and v > hi):
            raise ConfigError(f"{key}: must be a number {text}, got {v!r}")
        return v

    text = (f"> {lo:g}" if strict else f"≥ {lo:g}") + (f" and ≤ {hi:g}" if hi is not None else "")
    return Kind(f"number {text}", check)


def choice(*options, null: bool = False) -> Kind:
    def check(v, key):
        if (v is None and null) or v in options:
            return v
        raise ConfigError(f"{key}: must be one of {', '.join(map(str, options))}, got {v!r}")

    return Kind("one of " + ", ".join(f"`{o}`" for o in options) + (" or null" if null else ""), check)


def method_name() -> Kind:
    def check(v, key):
        if v in METHODS:  # the built-in ones, known without importing torch
            return v
        from ..methods import REGISTRY  # and any method registered by the user's own code

        if v not in REGISTRY or v == "none":
            raise ConfigError(f"{key}: unknown method {v!r}; known: {', '.join(METHODS)}")
        return v

    return Kind("one of " + ", ".join(f"`{m}`" for m in METHODS) + " (or a method your code registers)", check)


def string(null: bool = False) -> Kind:
    def check(v, key):
        if (v is None and null) or (isinstance(v, str) and v.strip()):
            return v
        raise ConfigError(f"{key}: must be a non-empty string{' or null' if null else ''}, got {v!r}")

    return Kind("string" + (" or null" if null else ""), check)


def boolean() -> Kind:
    def check(v, key):
        if isinstance(v, bool):
            return v
        raise ConfigError(f"{key}: must be true or false, got {v!r}")

    return Kind("true / false", check)


def datasets() -> Kind:
    def check(v, key):
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list) or not v or not all(isinstance(s, str) and s.strip() for s in v):
            raise ConfigError(f"{key}: must be a data set name or file, or a non-empty list of them, got {v!r}")
        return v

    return Kind("list of data sets (see docs/data.md)", check)


def mapping(value: Kind | None = None, text: str = "mapping", allow_str: bool = False, null: bool = False) -> Kind:
    def check(v, key):
        if (v is None and null) or (allow_str and isinstance(v, str)):
            return v
        if not isinstance(v, dict):
            raise ConfigError(f"{key}: must be a mapping, got {v!r}")
        return {k: value.check(x, f"{key}.{k}") if value else x for k, x in v.items()}

    return Kind(text, check)


# key -> (default, kind, what it does). Mapping-valued keys (method_options, lr_groups, ...) are
# leaves: a YAML mapping or an override `key={a: 1}` merges into them, `key.a=1` sets one entry.
SCHEMA: dict[str, tuple] = {
    "model": (
        "smollm2-135m-instruct",
        string(),
        (
            "base model: `smollm2-135m-instruct` or `gemma3-270m` (embedded), a local folder, a `.gguf` "
            "file, a cached Hugging Face id, or `shape:NAME` (random weights)"
        ),
    ),
    "dtype": (
        "auto",
        choice("auto", "bf16", "fp32"),
        "weights of the frozen model; `auto`: bf16 on GPU and on CPUs with bf16 instructions (AMX / AVX512-BF16), else fp32",
    ),
    "method": ("ptmoe", method_name(), "what is trained (options under `method_options`, listed below)"),
    "method_options": ({}, mapping(text="mapping"), "options of the method (see *Method options*)"),
    "preset": (
        None,
        string(null=True),
        (
            "named recipe of the method's options (`paper`, `default` for ptmoe); dropped when the method "
            "was switched to one without it, e.g. `method=pt` on a ptmoe config"
        ),
    ),
    "seed": (0, integer(0), "seed of initialisation, data order, validation slice and noise"),
    "output_dir": (
        "runs/{method}",
        string(),
        "run folder (`{method}` and `{seed}` are filled in); relative to the working directory",
    ),
    "data.train": (["disflqa/train"], datasets(), "training sources: prepared `set/split` names or files"),
    "data.eval": (["disflqa/heldout"], datasets(), "evaluation sets, scored separately"),
    "data.columns": (
        None,
        mapping(
            None,
            "mapping field → column, or `question=q,answers=a`, or data set → such a mapping",
            allow_str=True,
            null=True,
        ),
        "which columns of a generic jsonl / csv file hold each field (docs/data.md); keyed by data set (the file as "
        "written, or its name) for one file only: `{train.jsonl: {question: q}}`",
    ),
    "data.eval_source": (
        {},
        mapping(string(), "mapping evaluation set → training source"),
        "the data.train source each evaluation set belongs to, where the names don't say it (`route_by: source` "
        "routes its questions to that source's expert), e.g. `{dev.jsonl: train.jsonl}`; prepared `set/split` "
        "names need none",
    ),
    "data.task": (None, choice("qa", "math", null=True), "force the task of generic rows; null: inferred"),
    "data.mix_temperature": (1.0, number(0, strict=True), "multi-source sampling p_i ∝ n_i^(1/T); 1: concatenate"),
    "data.max_train_examples": (None, integer(1, null=True), "per training source, after the validation slice"),
    "data.max_eval_examples": (200, integer(1, null=True), "per evaluation set (see data.eval_sample)"),
    "data.eval_sample": (
        "first",
        choice("first", "per_passage"),
        "which max_eval_examples questions: the first N, or one per passage in turn (less correlated)",
    ),
    "data.valid_examples": (64, integer(0), "held back from the training sources for validation and selection"),
    "data.max_length": (512, integer(16), "tokens per example; a longer QA passage is cut to a window (eval.window)"),
    "data.train_max_length": (
        None,
        integer(16, null=True),
        "tokens per training and validation row (null: data.max_length); shorter rows train faster",
    ),
    "data.train_window": (
        "answer",
        choice("answer", "question", "head"),
        "how an over-long training passage is cut: `answer` centres a span answer so the span is in the window "
        "(yes/no and free-form answers get the `question` window), `question` the window sharing most words "
        "with the question, `head` the passage start",
    ),
    "data.skip_bad": (False, boolean(), "skip malformed rows (counted) instead of stopping at the first"),
    "train.steps": (200, integer(1), "optimizer steps"),
    "train.batch_size": (8, integer(1), "examples per step (global, whatever the process count)"),
    "train.grad_accum": (
        1,
        integer(1),
        "micro-batches of `batch_size` per optimizer step; the loss is the token mean over all of the step's label tokens",
    ),
    "train.lr": (0.3, number(0, strict=True), "learning rate (a preset may scale it)"),
    "train.lr_groups": (
        {},
        mapping(number(0, strict=True), "mapping name → learning rate"),
        "per-parameter learning rates by name, e.g. `{router: 0.01}`",
    ),
    "train.weight_decay": (0.0, number(0), "AdamW weight decay"),
    "train.warmup_ratio": (0.06, number(0, hi=1), "share of the steps with a linear warmup"),
    "train.schedule": ("linear", choice("linear", "cosine", "constant"), "learning-rate decay after warmup"),
    "train.max_grad_norm": (1.0, number(0), "gradient clipping; 0: off"),
    "train.gradient_checkpointing": (False, boolean(), "trade compute for memory on long inputs"),
    "train.length_grouped": (True, boolean(), "batch examples of similar length (less padding)"),
    "train.log_every": (10, integer(1), "steps between log lines (log.jsonl, TensorBoard, progress bar)"),
    "train.eval_every": (0, integer(0), "steps between validation losses; 0: only at the end"),
    "train.save_every": (50, integer(1), "steps between checkpoints (`--resume` continues from the last)"),
    "train.select_by": ("valid_loss", choice("valid_loss"), "how `best/` is chosen"),
    "train.early_stopping_patience": (0, integer(0), "validations without improvement before stopping; 0: off"),
    "train.collapse_threshold": (0.95, number(0, hi=1), "warn when one expert takes this share of examples; 0: never"),
    "init_from": (
        None,
        string(null=True),
        "adapter folder this run starts from (`ptmoe train --from ADAPTER`): its method options and weights; "
        "with `grow.experts` > 0 the adapter grows (docs/continual.md), else it is fine-tuned",
    ),
    "grow.experts": (0, integer(0), "experts added to the `init_from` adapter (a routed method: ptmoe); 0: no growth"),
    "grow.freeze_experts": (True, boolean(), "the grown adapter's old experts A_i stay exactly as they were"),
    "grow.freeze_shared": (True, boolean(), "the shared B (its old rows, with grow.rank) stays exactly as it was"),
    "grow.rank": (
        0,
        integer(0),
        "rows this stage adds to the shared B (and columns to every A_i): the new experts get directions of "
        "their own instead of living inside the first stage's B; old experts' new columns stay 0, so their "
        "prompts are unchanged; 0: the new experts share the old B (docs/continual.md)",
    ),
    "grow.freeze_router": (True, boolean(), "the old router rows (and input statistics) stay exactly as they were"),
    "grow.router_init": (
        "data",
        choice("data", "zeros"),
        "new router rows: `data` points them at the new data's mean pooled input (away from the replay "
        "store's), so new inputs start on the new experts; `zeros`: weight and bias 0",
    ),
    "grow.store_size": (
        0,
        integer(0),
        "replay store: pooled router inputs (mean input embeddings, H floats each, never text) kept per "
        "training stage of a routed adapter, saved as router_replay.safetensors; 0: none",
    ),
    "grow.replay_weight": (
        1.0,
        number(0),
        "weight of the router-only replay loss (cross-entropy of the router on stored inputs toward the "
        "expert each was routed to); 0: off",
    ),
    "grow.replay_batch": (16, integer(1), "stored inputs replayed per training step"),
    "grow.route_weight": (
        0.0,
        number(0),
        "weight of a router-only loss sending this stage's training inputs to the new experts "
        "(-log of their summed probability): the stage's task is known in training; 0: off",
    ),
    "grow.router_fit_steps": (
        0,
        integer(0),
        "after a grown stage trains, its new router rows alone take this many more steps of the replay and "
        "route losses (Adam at train.lr) on the replay store and this stage's stored inputs, before the "
        "adapter (best/ and final/) is saved: the router's budget apart from the prompt's; 0: off",
    ),
    "grow.gate": (
        "per_stage",
        choice("shared", "per_stage"),
        "weight of the selected expert: `shared`, its probability over every expert (the paper's "
        "probationary weight, which new router rows lower for old inputs too); `per_stage`, its "
        "probability among the experts added in its own stage, so an old input still routed to an old "
        "expert gets exactly the prompt it got before the growth (docs/continual.md measures both)",
    ),
    "eval.batch_size": (16, integer(1), "questions generated together"),
    "eval.window": (
        "question",
        choice("question", "head", "answer"),
        "how an over-long evaluation passage is cut, without the gold answer: `question` the window sharing "
        "most words with the question, `head` the passage start; `answer` centres the gold answer, a bracket "
        "that reads the label and never a user's setting",
    ),
    "eval.routing_value": (
        True,
        boolean(),
        "routed adapters: score the questions again with each expert forced and with the uniform mix "
        "(N+1 more evaluations) and report routing value and mutual information (docs/routing.md)",
    ),
    "eval.max_new_tokens": (
        {"qa": 24, "math": 200},
        mapping(integer(1), "mapping task → tokens"),
        "generated tokens per answer, by task",
    ),
}

LEAF_MAPPINGS = {k for k, (d, _, _) in SCHEMA.items() if isinstance(d, dict) or k == "data.columns"}
