"""ATTEMPT as its paper runs it: source prompts are `pt` runs, one per training source,
trained and stored by `ptmoe compare` like any other run and reused across seeds; no source prompt
is a one-line error."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import count_trainable, load_shape
from ptmoe.config.schema import ConfigError
from ptmoe.experiments.compare import compare

pytestmark = pytest.mark.usefixtures("one_thread")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def qa_rows(word, n):
    return [
        {"context": f"The {word} {i} is red.", "question": f"What is {word} {i}?", "answers": ["red"]} for i in range(n)
    ]


def config(tmp_path, methods, seeds=(0,)):
    a = write_jsonl(tmp_path / "a.jsonl", qa_rows("box", 8))
    b = write_jsonl(tmp_path / "b.jsonl", qa_rows("cup", 8))
    return {
        "model": "shape:tiny",
        "output_dir": str(tmp_path / "cmp"),
        "data": {"train": [a, b], "eval": [a], "valid_examples": 2, "max_eval_examples": 2},
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "save_every": 2, "lr": 0.3},
        "eval": {"batch_size": 4, "max_new_tokens": {"qa": 2}},
        "seeds": list(seeds),
        "baseline": "PT",
        "methods": methods,
    }


def quiet(*a, **k):
    pass


def test_compare_trains_one_pt_run_per_source_and_attempt_reads_them(tmp_path):
    methods = [
        {"name": "PT", "method": "pt", "method_options": {"num_tokens": 4}},
        {"name": "ATTEMPT", "method": "attempt", "method_options": {"num_tokens": 4}, "source_runs": {}},
    ]
    raw = config(tmp_path, methods, seeds=(0, 1))
    table = compare(raw, "test", log=quiet)
    results = [json.loads(p.read_text()) for p in (tmp_path / "cmp" / "runs").glob("*/result.json")]
    sources = [r for r in results if r["config"]["method"] == "pt" and "eval" not in r]
    # one pt run per training source, each on that source alone, seed 0, the entry's prompt length
    assert sorted(tuple(r["config"]["data"]["train"]) for r in sources) == [
        (raw["data"]["train"][0],),
        (raw["data"]["train"][1],),
    ]
    assert {r["config"]["seed"] for r in sources} == {0}
    assert {r["config"]["method_options"]["num_tokens"] for r in sources} == {4}
    attempt = sorted((r for r in results if r["config"]["method"] == "attempt"), key=lambda r: r["config"]["seed"])
    assert [r["config"]["seed"] for r in attempt] == [0, 1]
    paths = [str(Path(r["train"]["output_dir"]) / "best") for r in sources]
    for r in attempt:  # both seeds reuse the same two source runs
        assert sorted(r["config"]["method_options"]["source_prompts"]) == sorted(paths)
        # the adapter carries exactly those trained prompts, in the order of the training sources
        saved = load_file(str(Path(r["train"]["output_dir"]) / "best" / "adapter_model.safetensors"))
        want = [
            load_file(str(Path(p) / "adapter_model.safetensors"))["prompt"]
            for p in r["config"]["method_options"]["source_prompts"]
        ]
        torch.testing.assert_close(saved["sources"], torch.stack(want))
    assert set(table["rows"]) == {"PT", "ATTEMPT"}
    # a second invocation reuses every run, the source runs included
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "cmp" / "runs").rglob("*")}
    compare(raw, "test", log=quiet)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cmp" / "runs").rglob("*")} == before


def test_attempt_without_source_prompt_is_a_one_line_error(tmp_path):
    base, tok = load_shape("tiny", seed=0)
    with pytest.raises(ValueError, match="attempt: no source prompt") as e:
        AdaptedModel(base, "attempt", {"num_tokens": 4}, tok)
    assert "\n" not in str(e.value)
    assert count_trainable("attempt", {"num_tokens": 4}, base.config) > 0  # counting needs no source
    methods = [
        {"name": "PT", "method": "pt", "method_options": {"num_tokens": 4}},
        {"name": "ATTEMPT", "method": "attempt", "method_options": {"num_tokens": 4}},
    ]
    with pytest.raises(ConfigError, match=r"methods\[ATTEMPT\]: attempt: no source prompt"):
        compare(config(tmp_path, methods), "cmp.yaml", log=quiet)
    assert not (tmp_path / "cmp" / "runs").exists()  # checked before anything trained
    methods[0]["source_runs"] = {}  # on a method other than attempt: an error too, before training
    methods[1]["source_runs"] = {}
    with pytest.raises(
        ConfigError, match=r"methods\[PT\]: 'source_runs' .* for methods with source prompts \(attempt\) only"
    ):
        compare(config(tmp_path, methods), "cmp.yaml", log=quiet)
    assert not (tmp_path / "cmp" / "runs").exists()
    for path in ("configs/compare-qa.yaml", "configs/compare-qa-gpu.yaml"):  # the shipped configs use pt runs
        text = (Path(__file__).resolve().parents[1] / path).read_text()
        entry = next(m for m in yaml.safe_load(text)["methods"] if m["method"] == "attempt")
        assert entry.get("source_runs") == {} and "num_random_sources" not in entry.get("method_options", {})


def test_routed_runs_from_before_the_routing_fix_are_never_reused():
    """A stored run is found by its config hash; the routing fix changed no config, so the key of a
    routed method names the rule (a pre-fix SMoP run has another key), and only theirs."""
    import hashlib

    from ptmoe.config.loading import load_config
    from ptmoe.config.presets import apply_preset
    from ptmoe.experiments.store import run_key

    def old_key(cfg):  # the key before the fix: the expanded config alone
        ident = {k: v for k, v in apply_preset(cfg).items() if k != "output_dir"}
        added_later = ("columns", "task", "eval_sample", "train_max_length", "eval_source")  # at their defaults here
        ident["data"] = {k: v for k, v in ident["data"].items() if k not in added_later}
        ident["eval"] = {k: v for k, v in ident["eval"].items() if k != "routing_value"}  # added later too
        for key in ("init_from", "grow"):  # top-level sections added later, at their defaults here
            ident.pop(key, None)
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]

    for method in ("smop", "ptmoe", "attempt"):
        cfg = load_config(None, [f"method={method}"])
        assert run_key(cfg) != old_key(cfg), method
    for method in ("pt", "dpt", "lora"):  # no input-dependent part: their finished runs stay valid
        cfg = load_config(None, [f"method={method}"])
        assert run_key(cfg) == old_key(cfg), method
