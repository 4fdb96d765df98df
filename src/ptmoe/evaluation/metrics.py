"""Metrics: SQuAD-style exact match / F1 for QA, final-number accuracy for math.

QA follows the official SQuAD v1.1 script: lower-case, drop punctuation, drop the
articles a/an/the, collapse whitespace; EM and token F1 are maxed over gold answers.

Math compares the final number of the prediction with the gold number. The final
number is the first number after the last "The answer is" / "####" marker, else
the last number in the text. Commas as thousands separators, "$", "%", decimals,
negatives and simple fractions ("3/4" -> 0.75) are understood.
"""

import math
import re
import string
from collections import Counter, defaultdict
from fractions import Fraction

# ----------------------------------------------------------------------------- QA


def normalize_answer(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(pred, gold):
    return float(normalize_answer(pred) == normalize_answer(gold))


def f1_score(pred, gold):
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:  # both empty -> 1, one empty -> 0
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def qa_scores(pred, golds):
    """(em, f1) of one prediction, each the max over the gold answers."""
    if isinstance(golds, str):
        golds = [golds]
    if not golds:
        return 0.0, 0.0
    return max(exact_match(pred, g) for g in golds), max(f1_score(pred, g) for g in golds)


# --------------------------------------------------------------------------- math

_NUM = re.compile(
    r"(?<![\w.])(-|−)?\s?\$?\s?"  # optional sign (not a hyphen inside a word), currency
    r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"  # 1,234.5 | 1234.5 | .5
    r"(?:\s?/\s?(\d+)(?![\d.,]\d))?"  # optional "/denominator"
)
_MARKER = re.compile(r"the answer is|####", re.IGNORECASE)


def _parse(m):
    value = Fraction(m.group(2).replace(",", ""))
    if m.group(3) and int(m.group(3)) != 0:
        value /= int(m.group(3))
    return -value if m.group(1) else value


def _canon(v):
    return str(v.numerator) if v.denominator == 1 else repr(float(v))


def _final_value(text):
    text = str(text)
    marks = list(_MARKER.finditer(text))
    if marks:
        m = _NUM.search(text, marks[-1].end())
        if m:
            return _parse(m)
    nums = list(_NUM.finditer(text))
    return _parse(nums[-1]) if nums else None


def extract_number(text):
    """Final number of a text as a canonical string ("1234.5", "-7", "72"), or None."""
    v = _final_value(text)
    return None if v is None else _canon(v)


def math_correct(pred_text, gold, rel_tol=1e-4, abs_tol=1e-6):
    p, g = _final_value(pred_text), _final_value(gold)
    if p is None or g is None:
        return False
    return math.isclose(float(p), float(g), rel_tol=rel_tol, abs_tol=abs_tol)


# -------------------------------------------------------------------------- score
# The one place predictions become numbers: evaluation, compare and its paired bootstrap all call
# question_scores (per question) and set_scores / average (per set, over sets).

PRIMARY = {"qa": "f1", "math": "accuracy"}  # the per-question number compare's bootstrap resamples


def stop_answer(text: str, task: str) -> str:
    """QA answers end at the first line break; math keeps the reasoning (the number is extracted)."""
    text = text.strip()
    return text.split("\n")[0].strip() if task == "qa" else text


def question_scores(task: str, prediction: str | None, answers) -> dict[str, float]:
    """One question's scores in percent: QA {"em", "f1"} (max over the gold answers), math {"accuracy"}.
    A question with no prediction (dropped: too long for the model) scores zero: it still counts."""
    if task == "math":
        ok = prediction is not None and math_correct(prediction, answers[0])
        return {"accuracy": 100.0 * ok}
    if prediction is None:
        return {"em": 0.0, "f1": 0.0}
    em, f1 = qa_scores(stop_answer(prediction, "qa"), answers)
    return {"em": 100.0 * em, "f1": 100.0 * f1}


def set_scores(task: str, predictions, answers) -> dict:
    """Mean question scores of one set: {"task", "n", "f1", "em"} or {"task", "n", "accuracy"}."""
    per = [question_scores(task, p, a) for p, a in zip(predictions, answers, strict=True)]
    keys = ("f1", "em") if task != "math" else ("accuracy",)
    return {
        "task": "math" if task == "math" else "qa",
        "n": len(per),
        **{k: sum(q[k] for q in per) / max(len(per), 1) for k in keys},
    }


def average(sets: dict) -> dict:
    """Unweighted mean over sets (as the paper reports) of each metric the sets have."""
    keys = sorted({k for r in sets.values() for k in r if k not in ("n", "task") and isinstance(r[k], float)})
    out = {}
    for k in keys:
        vals = [r[k] for r in sets.values() if k in r]
        out[k] = sum(vals) / len(vals)
    return out


def score(task, preds, examples):
    """Score predictions per set. task: "qa", "math", or None (use each example's task).

    Returns {"sets": {set: {"n", "em", "f1"} | {"n", "accuracy"}}, "average": {...}}, values
    in percent; "average" is the unweighted mean over sets (as the paper reports).
    """
    if len(preds) != len(examples):
        raise ValueError(f"{len(preds)} predictions for {len(examples)} examples")
    per = defaultdict(list)
    for pred, ex in zip(preds, examples):
        per[ex.get("set", "data")].append((pred, ex))
    sets = {}
    for name, rows in per.items():
        t = task or rows[0][1].get("task", "qa")
        r = set_scores(t, [p for p, _ in rows], [ex["answers"] for _, ex in rows])
        r.pop("task")
        sets[name] = r
    return {"sets": sets, "average": average(sets)}
