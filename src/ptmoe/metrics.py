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


def score(task, preds, examples):
    """Score predictions per set. task: "qa", "math", or None (use each example's task).

    Returns {"sets": {set: {"n", "em", "f1"} | {"n", "accuracy"}}, "average": {...}}, values
    in percent; "average" is the unweighted mean over sets (as the paper reports).
    """
    if len(preds) != len(examples):
        raise ValueError(f"{len(preds)} predictions for {len(examples)} examples")
    per = defaultdict(lambda: defaultdict(list))
    for pred, ex in zip(preds, examples):
        t = task or ex.get("task", "qa")
        s = per[ex.get("set", "data")]
        if t == "math":
            s["accuracy"].append(float(math_correct(pred, ex["answers"][0])))
        else:
            em, f1 = qa_scores(pred, ex["answers"])
            s["em"].append(em)
            s["f1"].append(f1)
    sets = {}
    for name, vals in per.items():
        sets[name] = {k: 100.0 * sum(v) / len(v) for k, v in vals.items()}
        sets[name]["n"] = len(next(iter(vals.values())))
    keys = sorted({k for r in sets.values() for k in r if k != "n"})
    average = {}
    for k in keys:
        vals = [r[k] for r in sets.values() if k in r]
        average[k] = sum(vals) / len(vals)
    return {"sets": sets, "average": average}
