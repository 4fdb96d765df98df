"""Hand-checked metric cases (SQuAD v1.1 normalisation, F1 arithmetic, final numbers)."""

import pytest

from ptmoe.evaluation.metrics import (
    exact_match,
    extract_number,
    f1_score,
    math_correct,
    normalize_answer,
    qa_scores,
    score,
)


@pytest.mark.parametrize(
    "text, norm",
    [
        ("The Eiffel Tower", "eiffel tower"),  # case + article
        ("  a   cat\tand\nan owl ", "cat and owl"),  # whitespace collapse, a/an
        ("U.S.A.!", "usa"),  # punctuation removed, not replaced by spaces
        ("theory of the other", "theory of other"),  # "the" only as a whole word
        ("Anne's", "annes"),
        ("", ""),
    ],
)
def test_normalize_answer(text, norm):
    assert normalize_answer(text) == norm


def test_exact_match():
    assert exact_match("The Eiffel tower.", "eiffel Tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0


def test_f1_partial_overlap():
    # pred: big cat sat (3) / gold: cat sat down (3), 2 shared -> P = R = 2/3
    assert f1_score("the big cat sat", "cat sat down") == pytest.approx(2 / 3)
    # pred: paris (1) / gold: paris france (2): P = 1, R = 1/2 -> F1 = 2/3
    assert f1_score("Paris", "Paris, France") == pytest.approx(2 / 3)
    # repeated tokens count at most as often as they occur in both: pred a a a b, gold a b
    assert f1_score("x x x y", "x y") == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("the", "a") == 1.0  # both normalise to empty
    assert f1_score("the", "cat") == 0.0


def test_qa_scores_max_over_golds():
    em, f1 = qa_scores("Denver Broncos", ["Broncos", "the Denver Broncos", "Carolina"])
    assert (em, f1) == (1.0, 1.0)
    em, f1 = qa_scores("Denver", ["Denver Broncos", "Carolina Panthers"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3)
    assert qa_scores("x", []) == (0.0, 0.0)


@pytest.mark.parametrize(
    "text, num",
    [
        ("$1,234.50", "1234.5"),
        ("-7", "-7"),
        ("It fell to -7 degrees", "-7"),
        ("50%", "50"),
        ("#### 72", "72"),
        ("48/2 = 24 so 24 + 48 = 72\n#### 72", "72"),
        ("The answer is 18.", "18"),
        ("The answer is 18. Check: 9 * 2 = 18, not 20", "18"),  # the marker wins over the last number
        ("First 5, then 6, then 7", "7"),  # no marker: the last number
        ("3/4", "0.75"),  # a simple fraction is its value
        ("The answer is -$3,000.", "-3000"),
        ("a 3-yard run", "3"),  # a hyphen inside a word is not a minus sign
        ("from 10-15 people", "15"),
        ("0.5", "0.5"),
        ("no digits here", None),
    ],
)
def test_extract_number(text, num):
    assert extract_number(text) == num


def test_math_correct():
    assert math_correct("So she pays $1,200.00 in total. The answer is $1,200.", "1200")
    assert math_correct("The answer is 0.33", "1/3") is False  # 1% off: beyond the 1e-4 relative tolerance
    assert math_correct("The answer is 0.33333", "1/3")  # 1e-5 off: within
    assert math_correct("The answer is 50%.", "50")
    assert not math_correct("The answer is 17.", "18")
    assert not math_correct("I don't know", "18")


def test_score_per_set_and_average():
    exs = [
        {"set": "a", "task": "qa", "answers": ["Paris"]},
        {"set": "a", "task": "qa", "answers": ["blue whale"]},
        {"set": "b", "task": "qa", "answers": ["1912"]},
        {"set": "m", "task": "math", "answers": ["72"]},
        {"set": "m", "task": "math", "answers": ["5"]},
    ]
    r = score(None, ["Paris", "whale", "1913", "#### 72", "The answer is 6"], exs)
    assert r["sets"]["a"] == {"em": 50.0, "f1": pytest.approx(100 * (1 + 2 / 3) / 2), "n": 2}
    assert r["sets"]["b"]["em"] == 0.0 and r["sets"]["m"] == {"accuracy": 50.0, "n": 2}
    assert r["average"]["em"] == 25.0 and r["average"]["accuracy"] == 50.0
    with pytest.raises(ValueError):
        score("qa", ["x"], exs)
