"""The data of a training run: examples read per source before any model loads (a bad file fails at
once), the validation slice held back from each training source (never from the evaluation sets), one
line per source saying what was read, held back, used and dropped, a warning when training and
evaluation share questions, then encoding and temperature mixing of the sources."""

from __future__ import annotations

import random

from ..config.schema import ConfigError
from ..data import load_eval_set, load_set
from ..data.format import encode_dataset, prompt_floor


def read_sources(cfg: dict, log=print) -> tuple[list, list, random.Random]:
    """Training examples per source, with the validation slice held back from each (never taken from the
    evaluation sets), read before any model loads so a bad file fails at once. Warns when training and
    evaluation share questions."""
    d = cfg["data"]
    rng = random.Random(cfg["seed"])
    sources, valid = [], []
    for spec in d["train"]:
        examples = load_set(spec, d, log)
        ex, skipped = list(examples), examples.n_skipped
        n_read = len(ex)
        if not ex:  # before the model loads: an empty source would only fail deep inside the first step
            raise ConfigError(
                f"data.train: {spec} has no examples" + (f" ({skipped} bad rows skipped)" if skipped else " (0 rows)")
            )
        rng.shuffle(ex)
        n_valid = min(d["valid_examples"] // len(d["train"]), len(ex) // 5)
        valid += ex[:n_valid]
        ex = ex[n_valid:]
        cut = ex[d["max_train_examples"] :] if d["max_train_examples"] else []
        ex = ex[: len(ex) - len(cut)]
        log(
            f"[data] {spec}: read {n_read}, held back {n_valid} for validation, {len(ex)} for training"
            + (f" ({len(cut)} beyond data.max_train_examples unused)" if cut else "")
            + (f", skipped {skipped} bad rows" if skipped else "")
        )
        sources.append((spec, ex))
    seen = {_question_key(e) for _, ex in sources for e in ex} | {_question_key(e) for e in valid}
    for spec in d["eval"]:
        shared = sum(_question_key(e) in seen for e in load_eval_set(spec, d, log=log))
        if shared:
            log(
                f"[data] warning: {shared} questions of the evaluation set {spec} are also in the training "
                f"data: its scores will overstate what the adapter learned"
            )
    return sources, valid, rng  # rng goes on to mix the sources: the same order as ever


def _question_key(ex: dict) -> tuple:
    return " ".join(ex["question"].lower().split()), " ".join(ex.get("context", "").lower().split())


def encode_sources(cfg: dict, sources: list, valid: list, rng: random.Random, tok, log=print):
    """Encoded training rows (sources mixed by temperature) and validation rows."""
    d = cfg["data"]
    key, n = ("train_max_length", d["train_max_length"]) if d["train_max_length"] else ("max_length", d["max_length"])
    per_source = []
    for spec, ex in sources:
        enc, dropped = encode_dataset(ex, tok, n, train=True, window=d["train_window"])
        if dropped:
            note = why_dropped(ex, enc, tok, f"data.{key}", n)
            if not enc:
                raise ConfigError(f"data.train: {spec}: no example fits: {note}")
            log(f"[data] {spec}: dropped {dropped} of {len(ex)} training examples: {note}")
        for e in enc:
            e["set"] = ex[e["index"]].get("set", spec)
        per_source.append(enc)
    valid_rows, _ = encode_dataset(valid, tok, n, train=True, window=d["train_window"])
    for e in valid_rows:
        e["set"] = valid[e["index"]].get("set", "valid")
    return mix_sources(per_source, d["mix_temperature"], rng), valid_rows


def why_dropped(examples: list, encoded: list, tok, option: str, n: int) -> str:
    """Why examples did not fit: a prompt that is too long even without its passage (raise the option),
    or an answer outside every window of the passage that fits."""
    kept = {e["index"] for e in encoded}
    floors = [prompt_floor(x, tok) for i, x in enumerate(examples) if i not in kept]
    over = [f for f in floors if f > n]
    reasons = []
    if over:
        reasons.append(
            f"{len(over)} whose prompt without its passage (instruction, question and answer) is already "
            f"{min(over)} tokens or more, over {option}={n}: raise {option}"
        )
    if len(over) < len(floors):
        reasons.append(
            f"{len(floors) - len(over)} whose answer falls outside any window of the passage that fits {option}={n}"
        )
    return "; ".join(reasons)


def mix_sources(per_source: list[list], temperature: float, rng: random.Random) -> list:
    """Resample each source to a share p_i ∝ n_i^(1/T) of the total (T=1: plain concatenation)."""
    if len(per_source) == 1 or temperature == 1.0:
        return [r for src in per_source for r in src]
    sizes = [len(s) for s in per_source]
    weights = [n ** (1.0 / temperature) for n in sizes]
    total = sum(sizes)
    out = []
    for src, w in zip(per_source, weights):
        k = max(1, round(total * w / sum(weights)))
        out += [src[i % len(src)] for i in rng.sample(range(len(src)), len(src))] * (k // len(src)) + rng.sample(
            src, k % len(src)
        )
    return out


def load_sources(cfg: dict, tok, log=print):
    """Training and validation rows, encoded, as `ptmoe train` makes them (for bench scripts)."""
    sources, valid, rng = read_sources(cfg, log=log)
    return encode_sources(cfg, sources, valid, rng, tok, log=log)
