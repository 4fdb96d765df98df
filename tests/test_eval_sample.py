"""data.eval_sample: `per_passage` spreads an evaluation set's questions over its passages (questions on
one passage are correlated), `first` keeps the first N; stored runs keep their keys."""

import copy

from ptmoe.config.loading import load_config
from ptmoe.data import eval_subset
from ptmoe.experiments.store import run_key


def rows(passages):
    return [{"id": f"{p}{q}", "context": p, "question": f"q{q}"} for p, n in passages for q in range(n)]


def test_per_passage_takes_one_question_per_passage_in_turn():
    ex = rows([("A", 3), ("B", 1), ("C", 2)])
    assert [e["id"] for e in eval_subset(ex, 4, "first")] == ["A0", "A1", "A2", "B0"]
    assert [e["id"] for e in eval_subset(ex, 4, "per_passage")] == ["A0", "B0", "C0", "A1"]
    assert [e["id"] for e in eval_subset(ex, 6, "per_passage")] == [e["id"] for e in ex]  # all: file order
    assert eval_subset(ex, None, "per_passage") == ex


def test_the_new_key_leaves_stored_run_keys_alone():
    cfg = load_config(None, ["method=pt"])
    assert cfg["data"]["eval_sample"] == "first"
    older = copy.deepcopy(cfg)
    del older["data"]["eval_sample"]  # a config from before the key existed
    assert run_key(cfg) == run_key(older)
    assert run_key(load_config(None, ["method=pt", "data.eval_sample=per_passage"])) != run_key(cfg)


def test_train_max_length_shortens_training_rows_only(tmp_path):
    import json

    from ptmoe.base_models import load_shape
    from ptmoe.training.data import load_sources

    _, tok = load_shape("tiny")
    passage = " ".join(f"w{i}" for i in range(60)) + " the answer is here. " + " ".join(f"v{i}" for i in range(60))
    row = {"context": passage, "question": "Where is the answer?", "answers": ["here"]}
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for _ in range(6)))
    spec = [
        f"data.train=['{tmp_path / 'qa.jsonl'}']",
        f"data.eval=['{tmp_path / 'qa.jsonl'}']",
        "data.valid_examples=2",
        "data.max_length=1024",
    ]
    full, _ = load_sources(load_config(None, spec), tok, log=lambda *a: None)
    short, valid = load_sources(load_config(None, [*spec, "data.train_max_length=300"]), tok, log=lambda *a: None)
    assert max(len(r["input_ids"]) for r in full) > 300
    assert max(len(r["input_ids"]) for r in short + valid) <= 300
    assert all("here" in tok.decode(r["input_ids"]) for r in short)  # the window keeps the answer
    assert load_config(None, [*spec, "data.train_max_length=300"])["data"]["max_length"] == 1024  # eval keeps its own
