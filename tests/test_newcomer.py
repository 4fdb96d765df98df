"""A newcomer's path on the tiny random model: run folders never destroyed, a non-finite loss
stopping with the last good checkpoint kept, every wrong input one line before any model loads, overrides
after flags, method switching, own QA rows, `ptmoe config show` / docs/config.md, the README's Python block,
and Ctrl-C saying where to resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ptmoe.cli import main as cli_main
from ptmoe.config import reference as config_mod
from ptmoe.config.loading import load_config
from ptmoe.data import load_examples

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
ROWS = [
    ("sun", "yellow"),
    ("sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("coal", "black"),
    ("rose", "red"),
    ("sea", "blue"),
    ("ox", "brown"),
]


def qa_rows(n=8, key="answer"):
    """Rows as people write them: question, context and one answer string."""
    return [
        {"question": f"What colour is the {a}?", "context": f"The {a} is {b}.", key: b if key == "answer" else [b]}
        for a, b in (ROWS * 4)[:n]
    ]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def cfg_file(tmp_path):
    """A config file with data paths relative to its own folder, a PT-MoE method with a preset."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "train.jsonl", qa_rows(16))
    write_jsonl(
        folder / "data" / "eval.jsonl",
        [{"question": "What colour is the tar?", "context": "The tar is black.", "answer": "black"}],
    )
    cfg = {
        "model": "shape:tiny",
        "method": "ptmoe",
        "preset": "default",
        "output_dir": str(tmp_path / "run"),
        "method_options": {"num_tokens": 4, "experts": 2, "rank": 2},
        "data": {
            "train": ["data/train.jsonl"],
            "eval": ["data/eval.jsonl"],
            "valid_examples": 2,
            "max_eval_examples": 1,
        },
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "save_every": 1, "lr": "5e-3"},
        "eval": {"batch_size": 2, "max_new_tokens": {"qa": 2}},
    }
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys, command):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("ptmoe ")]
    assert len(lines) == 1 and lines[0].startswith(f"ptmoe {command}: error: "), err
    return lines[0]


# ---- 1. run folders ----------------------------------------------------------------------------------------
def test_rerun_refuses_and_the_old_run_stays_byte_for_byte(cfg_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main(["train", str(cfg_file)]) == 0
    capsys.readouterr()
    before = snapshot(run)
    assert "best/adapter_model.safetensors" in before and "log.jsonl" in before
    for extra in (["train.steps=1"], ["data.train=[data/absent.jsonl]"], ["method=nope"]):
        assert cli_main(["train", str(cfg_file), *extra]) == 2
        msg = one_error_line(capsys, "train")
        if extra == ["train.steps=1"]:
            assert "--resume" in msg and "--overwrite" in msg and str(run) in msg
        assert snapshot(run) == before, extra
    bad = cfg_file.parent / "data" / "train.jsonl"  # a broken row: refused before the folder is touched
    bad.write_text(bad.read_text() + "{broken\n")
    assert cli_main(["train", str(cfg_file), "--overwrite"]) == 2
    assert "train.jsonl:17" in one_error_line(capsys, "train") and snapshot(run) == before
    bad.write_text("".join(bad.read_text().splitlines(True)[:-1]))
    # --overwrite replaces it: one run's TensorBoard events, a one-step log
    assert cli_main(["train", str(cfg_file), "--overwrite", "train.steps=1"]) == 0
    capsys.readouterr()
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 1]


# ---- 2. non-finite loss ------------------------------------------------------------------------------------
def test_non_finite_loss_stops_and_keeps_the_last_finite_checkpoint(cfg_file, tmp_path, capsys):
    run = tmp_path / "run"
    rc = cli_main(
        ["train", str(cfg_file), "train.lr=1e30", "train.steps=6", "train.warmup_ratio=0", "train.max_grad_norm=0"]
    )
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" not in err, err
    line = next(x for x in err.splitlines() if "non-finite" in x)
    step = int(re.search(r"at step (\d+)", line).group(1))
    assert 2 <= step <= 6 and "last checkpoint" in line
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == step - 1
    assert not (run / "final").exists()
    for f in run.rglob("*.safetensors"):  # nothing non-finite was ever saved
        assert all(torch.isfinite(t).all() for t in load_file(str(f)).values() if t.is_floating_point()), f


# ---- 3. one line per wrong value, before any model loads -----------------------------------------------------
@pytest.mark.parametrize(
    "extra, needles",
    [
        (["train.weight_decay=lots"], ["train.weight_decay"]),
        (["method_options.noise_std=high"], ["noise_std"]),
        (["train.lr=.inf"], ["train.lr", "finite"]),
        (["train.lr=.nan"], ["train.lr", "finite"]),
        (["train.warmup_ratio=2"], ["train.warmup_ratio"]),
        (["model=no-such-model-xyz"], ["model", "no-such-model-xyz"]),
        (["model=shape:huge"], ["model", "shape:huge"]),
        (["preset=bogus"], ["preset", "bogus"]),
        (["output_dir=runs/{foo}"], ["output_dir"]),
        (["data.train=[data/absent.jsonl]"], ["data.train", "absent.jsonl"]),
        (["data.task=essay"], ["data.task", "essay"]),
        (["data.columns={question: q, wrong: x}"], ["data.columns", "wrong"]),
        (["method=pt", "method_options.experts=2"], ["experts", "pt"]),
    ],
)
def test_wrong_values_are_one_line_before_any_model_loads(cfg_file, monkeypatch, capsys, extra, needles):
    import ptmoe.training.setup as setup_mod

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(setup_mod, "load_base_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert cli_main(["train", str(cfg_file), *extra]) == 2
    line = one_error_line(capsys, "train")
    for needle in needles:
        assert needle in line, line


def test_a_bare_train_names_what_to_give(capsys):
    assert cli_main(["train"]) == 2  # not a silent 200-step SQuAD run
    assert "give a config file" in one_error_line(capsys, "train")


def test_an_empty_training_file_is_one_line_before_the_model_loads_and_the_run_stays(
    cfg_file, tmp_path, monkeypatch, capsys
):
    import ptmoe.training.setup as setup_mod

    monkeypatch.setattr(setup_mod, "load_base_model", lambda *a, **k: pytest.fail("the model was loaded"))
    empty = cfg_file.parent / "data" / "empty.jsonl"
    empty.write_text("")
    finished = tmp_path / "run"  # a finished run that --overwrite was asked to replace
    (finished / "final").mkdir(parents=True)
    (finished / "final" / "adapter_model.safetensors").write_bytes(b"weights")
    (finished / "train_summary.json").write_text('{"steps": 2}')
    before = sorted((p.relative_to(finished), p.read_bytes() if p.is_file() else None) for p in finished.rglob("*"))
    assert cli_main(["train", str(cfg_file), f"data.train=[{empty}]", "--overwrite"]) == 2
    line = one_error_line(capsys, "train")
    assert "data.train" in line and "empty.jsonl" in line and "no examples" in line, line
    after = sorted((p.relative_to(finished), p.read_bytes() if p.is_file() else None) for p in finished.rglob("*"))
    assert after == before


def test_numbers_as_people_write_them():
    cfg = load_config(
        None, ["model=shape:tiny", "train.lr=5e-5", "train.weight_decay=1e-2", "method_options.noise_std=1e-3"]
    )
    assert cfg["train"]["lr"] == 5e-5 and cfg["train"]["weight_decay"] == 0.01
    assert cfg["method_options"]["noise_std"] == 1e-3


def test_every_method_of_a_comparison_is_checked_before_the_first_run(cfg_file, tmp_path, monkeypatch, capsys):
    import ptmoe.experiments.store as store_mod

    monkeypatch.setattr(store_mod, "train", lambda *a, **k: pytest.fail("a run started"))
    raw = yaml.safe_load(cfg_file.read_text())
    raw.update(
        output_dir=str(tmp_path / "cmp"),
        seeds=[0],
        methods=[
            {"name": "PT", "method": "pt"},
            {"name": "bad", "method": "pt", "method_options": {"num_tokens": "many"}},
        ],
    )
    path = cfg_file.parent / "compare.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli_main(["compare", str(path)]) == 2
    assert "num_tokens" in one_error_line(capsys, "compare")


def test_generate_row_naming_an_unloaded_adapter_is_an_error(tmp_path, capsys):
    f = write_jsonl(tmp_path / "q.jsonl", [{"question": "Why?", "context": "Because.", "adapter": "qa"}])
    assert cli_main(["generate", "--model", "shape:tiny", "--file", str(f)]) == 2
    assert "'qa' not given with --adapter" in one_error_line(capsys, "generate")


def test_a_max_length_under_the_bare_prompt_names_the_option_to_raise(cfg_file, capsys):
    """The tiny model's tokenizer spends one token per byte: the QA instruction alone is over 50 tokens, so
    at 64 no example fits whatever the passage; the message says so, not that answers fall outside a window."""
    from ptmoe.base_models import load_shape
    from ptmoe.data.format import QA_INSTRUCTION

    tok = load_shape("tiny")[1]
    assert len(tok(QA_INSTRUCTION, add_special_tokens=False)["input_ids"]) > 50
    for option in ("data.max_length", "data.train_max_length"):
        assert cli_main(["train", str(cfg_file), f"{option}=64"]) == 2
        line = one_error_line(capsys, "train")
        assert ": no example fits: " in line
        assert "whose prompt without its passage (instruction, question and answer) is already" in line
        assert f"over {option}=64: raise {option}" in line and "outside any window" not in line, line
        tokens = int(line.split("is already ")[1].split(" tokens")[0])
        assert tokens > 64 + len("Passage: ")  # what the prompt needs beyond the instruction, with no passage


def test_an_override_without_its_equals_sign_is_named_wherever_it_stands(cfg_file, capsys):
    for argv in (["train.lr", "--overwrite"], ["--overwrite", "train.lr"]):
        assert cli_main(["train", str(cfg_file), *argv]) == 2
        assert "override 'train.lr': expected key=value" in one_error_line(capsys, "train")
    with pytest.raises(SystemExit):  # an unknown flag is still argparse's error
        cli_main(["train", str(cfg_file), "--overwrite", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


# ---- 4. overrides anywhere, method switching ---------------------------------------------------------------
def test_overrides_after_flags(cfg_file, tmp_path, monkeypatch, capsys):
    assert cli_main(["train", str(cfg_file)]) == 0
    assert cli_main(["train", str(cfg_file), "--resume", "train.steps=3"]) == 0
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["steps"] == 3
    capsys.readouterr()
    assert (
        cli_main(
            [
                "eval",
                str(cfg_file),
                "--adapter",
                str(tmp_path / "run" / "best"),
                "--out",
                str(tmp_path / "ev"),
                "data.max_eval_examples=1",
                "eval.max_new_tokens={qa: 1}",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["sets"]
    import ptmoe.recipes.compare as compare_mod

    seen = {}
    monkeypatch.setattr(compare_mod, "compare", lambda raw, *a, **k: seen.update(raw) or {"markdown": ""})
    path = cfg_file.parent / "compare.yaml"
    path.write_text(
        yaml.safe_dump(
            {**yaml.safe_load(cfg_file.read_text()), "seeds": [0, 1], "methods": [{"name": "PT", "method": "pt"}]}
        )
    )
    assert cli_main(["compare", str(path), "--only", "PT", "seeds=[0]"]) == 0
    assert seen["seeds"] == [0]


def test_switching_method_by_override(cfg_file, capsys):
    notes = []
    cfg = load_config(cfg_file, ["method=pt"], note=notes.append)
    assert cfg["method"] == "pt" and cfg["preset"] is None and cfg["method_options"] == {"num_tokens": 4}
    assert any("experts, rank" in n for n in notes) and any("preset 'default'" in n for n in notes)
    assert load_config(cfg_file, ["method=lora", "method_options.r=2"], note=notes.append)["method_options"] == {"r": 2}
    with pytest.raises(ValueError, match="preset"):  # named on the same command line: checked, not dropped
        load_config(cfg_file, ["method=pt", "preset=paper"], note=notes.append)


# ---- 5. own data ---------------------------------------------------------------------------------------------
def test_question_context_answer_rows_train_as_qa(cfg_file, tmp_path, capsys):
    exs = load_examples(cfg_file.parent / "data" / "train.jsonl")
    assert {e["task"] for e in exs} == {"qa"} and exs[0]["answers"] == ["yellow"]
    csv = tmp_path / "rows.csv"
    csv.write_text("q,passage,answer\nWhat colour is the sun?,The sun is yellow.,yellow\n")
    assert load_examples(csv, columns={"question": "q", "context": "passage"})[0]["task"] == "qa"
    assert (
        load_examples(write_jsonl(tmp_path / "m.jsonl", [{"question": "2+2?", "answer": "4", "task": "math"}]))[0][
            "task"
        ]
        == "math"
    )
    # columns and task from the config, data read next to the config file, a line per data set, overlap warned
    mapped = cfg_file.parent / "data" / "mapped.jsonl"
    write_jsonl(mapped, [{"q": r["question"], "ctx": r["context"], "gold": r["answer"]} for r in qa_rows(10)])
    raw = yaml.safe_load(cfg_file.read_text())
    raw["data"].update(
        train=["data/mapped.jsonl"],
        eval=["data/mapped.jsonl"],
        task="qa",
        columns={"question": "q", "context": "ctx", "answer": "gold"},
    )
    cfg_file.write_text(yaml.safe_dump(raw))
    assert cli_main(["train", str(cfg_file), "data.max_length=128"]) == 0
    err = capsys.readouterr().out
    assert "mapped.jsonl: read 10, held back 2 for validation, 8 for training" in err, err
    assert "warning" in err and "also in the training data" in err
    run = Path(raw["output_dir"])  # evaluation reads the mapped columns too
    assert cli_main(["eval", str(cfg_file), "--adapter", str(run / "best"), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["sets"][str(mapped)]["n"] == 1


# ---- 6. config show / doc ----------------------------------------------------------------------------------
def test_config_show_prints_every_key_resolved(cfg_file, capsys):
    assert cli_main(["config", "show", str(cfg_file), "train.lr=5e-5"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    for key in config_mod.SCHEMA:
        node = shown
        for part in key.split("."):
            node = node[part]
    assert shown["train"]["lr"] == pytest.approx(5e-5)  # the default (paper) preset keeps the rate
    assert shown["method_options"]["top_k"] == 1 and shown["preset"] is None  # the preset, expanded
    assert shown["method_options"]["router_temperature"] == 1.0  # every option, defaults included
    assert shown["data"]["train"] == [str(cfg_file.parent / "data" / "train.jsonl")]


def test_config_doc_is_up_to_date():
    assert (ROOT / "docs" / "config.md").read_text() == config_mod.markdown(), (
        "regenerate: PYTHONPATH=src python -m ptmoe config doc > docs/config.md"
    )


# ---- 7. the README's Python block -------------------------------------------------------------------------
def test_readme_quickstart_runs_as_written(tmp_path, monkeypatch, capsys):
    """README's quickstart trains with an optimizer, saves, loads and generates (here on the tiny model)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Python quickstart\n.*?```python\n(.*?)```", text, re.DOTALL).group(1)
    assert "encode(" in block and "optimizer.step()" in block  # training prompts, and it trains
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(block.replace('"smollm2-135m-instruct"', '"shape:tiny"'), "README.md", "exec"), scope)  # noqa: S102
    assert (tmp_path / "my-adapter" / "adapter_model.safetensors").is_file()
    printed = capsys.readouterr().out
    assert printed.startswith("before:") and "loss after 30 steps" in printed and "\nafter: " in printed
    from ptmoe import AdaptedModel

    fresh = AdaptedModel(scope["base"], "ptmoe", {"num_tokens": 20, "experts": 2, "rank": 16}, scope["tok"])
    with torch.no_grad():  # the saved and loaded adapter fits the three answers better than an untrained one
        losses = [m.eval()(**scope["batch"]).loss.item() for m in (scope["model"], fresh)]
    assert losses[0] < losses[1], losses


# ---- 8. Ctrl-C ----------------------------------------------------------------------------------------------
def test_ctrl_c_says_where_to_resume(cfg_file, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "ptmoe.cli", "train", str(cfg_file), "train.steps=100000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "run" / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 240
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted at step" in err and "last checkpoint" in err
    assert f"resume with: ptmoe train {cfg_file} train.steps=100000 --resume" in err


def test_ctrl_c_waits_for_the_step_to_end_and_a_second_one_does_not():
    """The first SIGINT only sets the flag the loop reads after a step (so it never lands inside a save or
    TensorBoard's writer, where a KeyboardInterrupt can leave a lock held and hang the exit)."""
    from ptmoe.training.setup import interrupt_at_step_end

    before = signal.getsignal(signal.SIGINT)
    requested, restore = interrupt_at_step_end()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes of this thread
        assert requested.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) is before


# ---- 8. no deprecation warnings from our own calls; 9. the demo's account of its gain -------------------------
def test_training_step_and_generation_emit_no_deprecation_warnings():
    """Ours: a deprecation warning whose caller (the innermost frame outside the library that warned and
    torch's module call) is ptmoe's code; one PEFT raises from its own call of transformers is not."""
    import traceback
    import warnings

    from ptmoe import AdaptedModel, encode
    from ptmoe.base_models import load_shape

    ours = []

    def record(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, (DeprecationWarning, FutureWarning)):
            return
        stack = traceback.extract_stack()[:-1]
        caller = next(
            f.filename
            for f in reversed(stack)
            if not any(s in f.filename for s in ("/transformers/", "/torch/", "warnings"))
        )
        if "/ptmoe/" in caller or caller == __file__:
            ours.append(f"{filename}:{lineno}: {message} (called from {caller})")

    base, tok = load_shape("tiny")
    rows = [
        {"context": "The sun is yellow.", "question": "What colour is the sun?", "answers": ["yellow"]},
        {"context": "The long river is blue and wide.", "question": "What colour is the river?", "answers": ["blue"]},
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        for method, opts in (("ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2}), ("lora", {"r": 1})):
            model = AdaptedModel(base, method, opts, tok)
            model.gradient_checkpointing_enable()
            b = encode(rows, tok, train=True)
            model(b["input_ids"], b["attention_mask"], labels=b["labels"]).loss.backward()
            q = encode(rows, tok)
            model.generate(q["input_ids"], q["attention_mask"], max_new_tokens=3, eos_token_id=tok.eos_token_id)
    assert not ours, ours


def test_demo_splits_the_gain_into_format_and_content():
    from ptmoe.recipes.demo import gain_parts

    def results(preds):
        return {
            "sets": {"s": {"task": "qa"}},
            "predictions": {"s": [{"answers": [g], "prediction": p} for g, p in preds]},
        }

    before = results([("Paris", "The tower is in Paris, France."), ("blue", "I do not know.")])
    after = results([("Paris", "Paris"), ("blue", "blue")])
    fmt, content = gain_parts(before, after)
    # question 1: F1 1/3 (1 of 5 words) -> 1, the base model had it, verbosely: format; question 2: 0 -> 1: content
    assert fmt == pytest.approx(100 * (1 - 1 / 3) / 2) and content == pytest.approx(100 * 1 / 2)


def test_keys_added_at_their_defaults_leave_run_keys_alone():
    """Data keys added after runs were stored (columns, task, eval_sample, train_max_length) hash as if
    absent while at their defaults; eval.window is keyed, so a run evaluated with the answer-centred
    window (the behaviour before it) is never reused for one evaluated with the question's."""
    import copy

    from ptmoe.experiments.store import run_key

    cfg = load_config(None, ["model=shape:tiny", "method=pt", "train.steps=7"])
    bare = copy.deepcopy(cfg)
    for key in ("columns", "task", "eval_sample", "train_max_length", "eval_source"):
        bare["data"].pop(key)
    assert run_key(bare) == run_key(cfg)
    assert run_key(load_config(None, ["model=shape:tiny", "method=pt", "train.steps=7", "eval.window=answer"])) != (
        run_key(cfg)
    )
    assert run_key(load_config(None, ["model=shape:tiny", "data.task=qa"])) != run_key(
        load_config(None, ["model=shape:tiny"])
    )


def test_a_diverging_sweep_rate_is_scored_worst_not_fatal(cfg_file, tmp_path, capsys):
    raw = yaml.safe_load(cfg_file.read_text())
    raw.update(
        output_dir=str(tmp_path / "cmp"),
        seeds=[0],
        baseline="M",
        methods=[{"name": "M", "method": "ptmoe"}],
        sweep={"lrs": [1e30, 0.01], "steps": 3},
    )
    raw["train"].update(warmup_ratio=0, max_grad_norm=0)
    path = cfg_file.parent / "compare.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli_main(["compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert "non-finite" in out and "-> lr 0.01" in out, out[-3000:]
