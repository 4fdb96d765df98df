"""Training and evaluation pipeline on the tiny random Llama model with small local jsonl data:
train -> save -> evaluate for every method, a learnable toy task, two processes (gloo) == one process,
SIGKILL + --resume == uninterrupted, config errors, `ptmoe compare`, `ptmoe generate` with mixed
adapters, router collapse warning, per-group learning rates, the paper preset."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import count_trainable, load_shape
from ptmoe.cli import main as cli_main
from ptmoe.collate import pad_batch
from ptmoe.config.loading import load_config
from ptmoe.config.presets import apply_preset
from ptmoe.config.schema import ConfigError
from ptmoe.evaluation.evaluate import evaluate
from ptmoe.evaluation.routing import RouterMonitor
from ptmoe.training.loop import train
from ptmoe.training.optim import param_groups

METHODS = ["pt", "dpt", "smop", "ptmoe", "attempt", "lora", "hydralora", "ft"]
OPTS = {
    "pt": {"num_tokens": 4},
    "dpt": {"num_tokens": 4, "rank": 2},
    "smop": {"num_tokens": 4, "experts": 2},
    "ptmoe": {"num_tokens": 4, "experts": 2, "rank": 2},
    "attempt": {"num_tokens": 4, "num_random_sources": 2},
    "lora": {"r": 1},
    "hydralora": {"r": 1, "heads": 2},
    "ft": {},
}
LR = {"pt": 0.3, "dpt": 0.3, "smop": 0.3, "ptmoe": 0.3, "attempt": 0.3, "lora": 1e-3, "hydralora": 1e-3, "ft": 1e-3}
RESULT_KEYS = {"model", "adapter", "method", "num_trainable", "sets", "predictions", "average", "wall_s"}
# subprocesses: one intra-op thread (as the in-process runs below), quiet
SUB_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


pytestmark = pytest.mark.usefixtures("one_thread")


WORDS = ["sun", "river", "stone", "cloud", "elephant", "sky", "music", "lighthouse", "paper", "ox"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Small extractive QA sets: the answer is the word after 'is' in a short passage."""
    d = tmp_path_factory.mktemp("data")
    rng = random.Random(0)

    def rows(n):
        out = []
        for _ in range(n):
            a, b = rng.sample(WORDS, 2)
            out.append({"context": f"The {a} is {b}.", "question": f"What is the {a}?", "answers": [b]})
        return out

    write_jsonl(d / "train.jsonl", rows(24))
    write_jsonl(d / "eval.jsonl", rows(4))
    return d


def overrides(data, out, method, *extra):
    return [
        "model=shape:tiny",
        "dtype=fp32",
        f"method={method}",
        f"output_dir={out}",
        f"data.train=['{data / 'train.jsonl'}']",
        f"data.eval=['{data / 'eval.jsonl'}']",
        "data.valid_examples=4",
        "data.max_eval_examples=2",
        "train.steps=2",
        "train.batch_size=2",
        "train.log_every=1",
        "train.save_every=2",
        f"train.lr={LR[method]}",
        f"method_options={json.dumps(OPTS[method])}",
        "eval.batch_size=4",
        "eval.max_new_tokens={qa: 4}",
        *extra,
    ]


def quiet(*args, **kwargs):
    pass


def adapter_tensors(path):
    return load_file(str(Path(path) / "adapter_model.safetensors"))


def assert_same_adapter(a, b, atol):
    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=atol, msg=k)


# ---- end to end, every method -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_train_save_evaluate_every_method(method, data, tmp_path):
    extra = ["train.lr_groups={router: 0.01}", "preset=paper"] if method == "ptmoe" else []
    cfg = load_config(None, overrides(data, tmp_path / "run", method, *extra))
    summary = train(cfg, log=quiet)
    out = Path(summary["output_dir"])
    assert summary["steps"] == 2 and summary["best_valid_loss"] is not None
    for name in ("final", "best", "checkpoint/adapter"):
        assert (out / name / "adapter_model.safetensors").is_file(), name
        assert json.loads((out / name / "adapter_config.json").read_text())["method"] == method
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 2
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2] and all(r["loss"] > 0 for r in log if "loss" in r)
    assert any("valid_loss" in r for r in log)
    assert (out / "config.yaml").is_file() and (out / "train_summary.json").is_file()
    assert any((out / "tensorboard").iterdir())
    n_params = count_trainable(method, OPTS[method], load_shape("tiny", tokenizer=False)[0].config)
    assert summary["num_trainable"] == n_params

    if method == "ptmoe":  # per-group learning rate reached the optimizer; the paper preset the adapter
        initial = sorted(g["initial_lr"] for g in state["param_groups"])
        assert initial == [0.01, 0.3]
        saved = json.loads((out / "final" / "adapter_config.json").read_text())["config"]
        assert (saved["noise_std"], saved["top_k"], saved["weighting"]) == (0.01, 1, "probationary")
        assert summary["router"]["expert_share"] and summary["router"]["per_set"]

    results = evaluate(cfg, str(out / "best"), str(tmp_path / "eval"), log=quiet, progress=False)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert RESULT_KEYS <= saved.keys()
    assert saved["method"] == method and saved["num_trainable"] == n_params
    spec = str(data / "eval.jsonl")
    assert saved["sets"][spec]["n"] == 2 and {"f1", "em"} <= saved["sets"][spec].keys()
    assert len(saved["predictions"][spec]) == 2 and all(
        isinstance(p["prediction"], str) for p in saved["predictions"][spec]
    )
    assert {"f1", "em"} <= saved["average"].keys()
    assert results["results_path"] == str(tmp_path / "eval" / "results.json")
    if method in ("smop", "ptmoe"):  # routed: usage summary and plot
        assert saved["router"]["per_set"] and (tmp_path / "eval" / "router.json").is_file()
        assert (tmp_path / "eval" / "router.png").is_file()
    if method == "pt":  # the same through the command line, table printed
        rc = cli_main(
            [
                "eval",
                *overrides(data, tmp_path / "run", method),
                "--adapter",
                str(out / "best"),
                "--out",
                str(tmp_path / "eval_cli"),
            ]
        )
        assert rc == 0
        again = json.loads((tmp_path / "eval_cli" / "results.json").read_text())
        assert again["sets"] == saved["sets"]


# ---- a learnable toy task ---------------------------------------------------------------------------------
def test_toy_task_loss_falls_and_accuracy_rises(tmp_path):
    """The answer is always 'ok'. Full fine-tuning of the tiny random model learns it in 30 steps.
    (Its tied output embeddings have std 0.02, so logits span about +-1: a prompt or rank-1 LoRA on
    the frozen random model cannot move the output distribution far enough.)"""
    rng = random.Random(1)
    rows = lambda n: [
        {"context": " ".join(rng.sample(WORDS, 3)), "question": "say ok", "answers": ["ok"]} for _ in range(n)
    ]
    train_f = write_jsonl(tmp_path / "toy_train.jsonl", rows(64))
    eval_f = write_jsonl(tmp_path / "toy_eval.jsonl", rows(8))
    cfg = load_config(
        None,
        [
            "model=shape:tiny",
            "method=ft",
            f"output_dir={tmp_path / 'toy'}",
            f"data.train=['{train_f}']",
            f"data.eval=['{eval_f}']",
            "data.valid_examples=0",
            "train.steps=30",
            "train.batch_size=8",
            "train.lr=0.01",
            "train.warmup_ratio=0",
            "train.schedule=constant",
            "train.log_every=1",
            "train.save_every=1000",
            "eval.max_new_tokens={qa: 4}",
        ],
    )
    before = evaluate(cfg, None, None, log=quiet, progress=False)
    summary = train(cfg, log=quiet)
    losses = [json.loads(line)["loss"] for line in (Path(summary["output_dir"]) / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 30
    assert losses[0] > 4.0  # about ln(320): the random model knows nothing
    assert sum(losses[-5:]) / 5 < 0.25 * losses[0], losses
    after = evaluate(
        cfg, str(Path(summary["output_dir"]) / "final"), str(tmp_path / "toy_eval"), log=quiet, progress=False
    )
    assert before["average"]["em"] == 0.0
    assert after["average"]["em"] >= 75.0, after["predictions"]


# ---- two processes == one process ---------------------------------------------------------------------------------
def test_two_processes_give_the_same_adapter_as_one(data, tmp_path):
    """torchrun --nproc_per_node 2 (accelerate on CPU: gloo) vs one in-process run, same global batch of 4."""
    args = lambda out: overrides(
        data,
        out,
        "ptmoe",
        "train.steps=3",
        "train.batch_size=4",
        "data.valid_examples=0",
        'method_options={"num_tokens": 4, "experts": 2, "rank": 2, "noise": "none"}',
    )
    env = {**SUB_ENV, "ACCELERATE_USE_CPU": "true"}  # what `accelerate launch --cpu` sets: gloo on CPU
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "ptmoe.cli",
        "train",
        *args(tmp_path / "two"),
    ]
    r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    one = train(load_config(None, args(tmp_path / "one")), log=quiet)
    two = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    # really two processes: the main one routed only its half of each global batch
    n_two = sum(s["n"] for s in two["router"]["per_set"].values())
    n_one = sum(s["n"] for s in one["router"]["per_set"].values())
    assert (n_one, n_two) == (12, 6)
    assert_same_adapter(tmp_path / "one" / "final", tmp_path / "two" / "final", atol=1e-5)


# ---- SIGKILL and --resume ------------------------------------------------------------------------------------------
def test_sigkill_then_resume_equals_uninterrupted_run(data, tmp_path):
    steps = 120
    args = lambda out: overrides(
        data,
        out,
        "ptmoe",
        f"train.steps={steps}",
        "train.batch_size=4",
        "train.log_every=10",
        "data.valid_examples=0",
        "train.save_every=2",
        'method_options={"num_tokens": 4, "experts": 2, "rank": 2, "noise_std": 0.5}',
    )
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ptmoe.cli", "train", *args(killed)]
    proc = subprocess.Popen(cmd, env=SUB_ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 240
    try:
        while True:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint appeared"
            try:
                if json.loads(state.read_text())["step"] >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final").exists()
    r = subprocess.run(cmd + ["--resume"], env=SUB_ENV, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    stopped_at = int(r.stdout.split("resumed at step ")[1].split()[0])
    assert 2 <= stopped_at < steps
    resumed = json.loads((killed / "train_summary.json").read_text())
    assert resumed["steps"] == steps
    straight = train(load_config(None, args(tmp_path / "straight")), log=quiet)
    assert_same_adapter(killed / "final", tmp_path / "straight" / "final", atol=1e-6)
    # the summary covers the whole run, not only the part after the resume
    assert sum(v["n"] for v in resumed["router"]["per_set"].values()) == steps * 4
    assert resumed["router"]["expert_share"] == pytest.approx(straight["router"]["expert_share"])
    assert resumed["wall_s"] > json.loads(state.read_text())["wall_s"] - 1e-9 > 0


def test_resume_without_checkpoint_is_a_clear_error(data, tmp_path, capsys):
    rc = cli_main(["train", *overrides(data, tmp_path / "none", "pt"), "--resume"])
    assert rc == 2
    assert "--resume: no checkpoint in" in capsys.readouterr().err


# ---- configuration errors -----------------------------------------------------------------------------------------
def test_config_errors_are_one_line_and_name_the_key_or_file(data, tmp_path, capsys):
    good = overrides(data, tmp_path / "cfgerr", "pt")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: shape:tiny\ntrain: [unclosed\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: shape:tiny\ntrian:\n  steps: 2\n")
    cases = [
        (["train", str(tmp_path / "missing.yaml")], ["missing.yaml", "not found"]),
        (["train", *good, "train.bogus=1"], ["unknown key 'train.bogus'"]),
        (["train", str(typo)], ["typo.yaml", "unknown key 'trian'"]),
        (["train", str(bad_yaml)], ["bad.yaml", "invalid YAML"]),
        (["train", *good, "train.steps=0"], ["train.steps", "positive integer"]),
        (["train", *good, "train.lr=fast"], ["train.lr"]),
        (["train", *good, "train.schedule=wobbly"], ["train.schedule", "wobbly"]),
        (["train", *good, "dtype=fp8"], ["dtype", "fp8"]),
        (["train", *good, "train.lr_groups={nothing: 0.1}"], ["train.lr_groups", "nothing"]),
        (["train", *good, 'method_options={"num_tokens": 4, "bogus": 1}'], ["bogus", "pt"]),
        (["train", *good, "method=nope"], ["unknown method 'nope'"]),
        (["train", *good, f"data.train=['{tmp_path / 'absent.jsonl'}']"], ["absent.jsonl"]),
        (["eval", *good, "--adapter", str(tmp_path / "no_adapter")], ["no_adapter", "adapter_config.json"]),
    ]
    for argv, needles in cases:
        rc = cli_main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("ptmoe ")]
        assert rc == 2, (argv, err)
        assert "Traceback" not in err, err
        assert len(lines) == 1 and lines[0].startswith(f"ptmoe {argv[0]}: error: "), err
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])


# ---- compare --------------------------------------------------------------------------------------------------
def test_compare_all_methods_then_second_invocation_skips_finished_runs(data, tmp_path, capsys):
    import yaml

    root = tmp_path / "cmp"
    cfg = {
        "model": "shape:tiny",
        "output_dir": str(root),
        "data": {
            "train": [str(data / "train.jsonl")],
            "eval": [str(data / "eval.jsonl")],
            "valid_examples": 2,
            "max_eval_examples": 2,
        },
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "save_every": 2},
        "eval": {"batch_size": 4, "max_new_tokens": {"qa": 3}},
        "baseline": "pt",
        "methods": [
            {
                "name": m,
                "method": m,
                "method_options": OPTS[m],
                "train": {"lr": LR[m]},
                **({"preset": "balanced"} if m == "ptmoe" else {}),
            }
            for m in METHODS
        ],
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["compare", str(path)]) == 0
    printed = capsys.readouterr().out
    md = (root / "compare.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [r.split("|")[1].strip() for r in rows] == METHODS
    assert md.strip() in printed
    table = json.loads((root / "compare.json").read_text())
    assert list(table["rows"]) == METHODS
    tiny_cfg = load_shape("tiny", tokenizer=False)[0].config
    for m in METHODS:
        assert table["rows"][m]["params"] == count_trainable(m, OPTS[m], tiny_cfg)
        assert f"| {m} | {table['rows'][m]['params']:,} |" in md
        if m != "pt":
            assert len(table["rows"][m]["diff_vs_baseline"]) == 3
    runs = sorted((root / "runs").iterdir())
    assert len(runs) == len(METHODS) and all((r / "result.json").is_file() for r in runs)
    results = [json.loads((r / "result.json").read_text()) for r in runs]
    hours = sum(r["train"]["wall_s"] + r["eval"]["wall_s"] for r in results) / 3600
    assert table["run_hours"] == pytest.approx(hours) and f"{len(METHODS)} runs" in md

    def snapshot():
        return {str(p.relative_to(root / "runs")): p.stat().st_mtime_ns for p in (root / "runs").rglob("*")}

    before = snapshot()
    t0 = time.perf_counter()
    assert cli_main(["compare", str(path)]) == 0
    second = time.perf_counter() - t0
    capsys.readouterr()
    assert snapshot() == before  # nothing retrained, re-evaluated or rewritten
    assert second < 5.0, second
    assert (root / "compare.md").read_text() == md
    for m in METHODS:  # the rate each run trained at: the default preset scales PT-MoE's by 3
        assert table["rows"][m]["lr"] == pytest.approx(LR[m] * (3 if m == "ptmoe" else 1))

    # --report trains nothing: a method added to the config has no finished run and is left out
    cfg["methods"].append({"name": "later", "method": "pt", "method_options": {"num_tokens": 7}})
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["compare", str(path), "--report"]) == 0
    capsys.readouterr()
    assert snapshot() == before
    assert list(json.loads((root / "compare.json").read_text())["rows"]) == METHODS
    assert cli_main(["compare", str(path), "--only", "nope"]) == 2  # a typo names the option, trains nothing
    assert "--only: no method named 'nope'" in capsys.readouterr().err
    assert snapshot() == before

    # an entry's own baseline: its Δ is against that row (each Δ cell names its row); a name that is no other
    # entry is a one-line error before anything runs
    cfg["methods"].pop()
    cfg["methods"][1]["baseline"] = "smop"
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["compare", str(path), "--report"]) == 0
    capsys.readouterr()
    rows = json.loads((root / "compare.json").read_text())["rows"]
    point = rows["dpt"]["diff_vs_baseline"][0]
    assert rows["dpt"]["baseline"] == "smop" and rows["lora"]["baseline"] == "pt"
    assert point == pytest.approx(rows["dpt"]["average"]["f1"] - rows["smop"]["average"]["f1"], abs=1e-6)
    assert "vs smop |" in (root / "compare.md").read_text() and "vs pt |" in (root / "compare.md").read_text()
    for bad in ("nope", "dpt"):
        cfg["methods"][1]["baseline"] = bad
        path.write_text(yaml.safe_dump(cfg))
        assert cli_main(["compare", str(path)]) == 2
        assert f"methods[dpt]: baseline: {bad!r} is not another methods entry" in capsys.readouterr().err
    assert snapshot() == before


# ---- generate with several adapters ------------------------------------------------------------------------------
def test_generate_mixes_two_adapters_in_one_file(tmp_path, capsys):
    _, tok = load_shape("tiny")
    dirs = {}
    for name, method, seed in (("a", "pt", 1), ("b", "ptmoe", 2)):
        base, _ = load_shape("tiny")
        model = AdaptedModel(base, method, {**OPTS[method], "num_tokens": 3 + seed}, tok, seed=seed)
        with torch.no_grad():
            for p in model.trainable_parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
        dirs[name] = model.save_pretrained(tmp_path / name)
    questions = [
        {"question": "What is the stone?", "context": "The stone is green.", "adapter": "a"},
        {"question": "What is the cloud?", "context": "The cloud is white.", "adapter": "b"},
        {"question": "What is 2 plus 2?", "adapter": "b"},
        {"question": "Where is the river?", "context": "The river is far.", "adapter": "a"},
    ]
    mixed_file = write_jsonl(tmp_path / "mixed.jsonl", questions)
    gen = ["generate", "--model", "shape:tiny", "--max-new-tokens", "6"]
    assert (
        cli_main([*gen, "--adapter", f"a={dirs['a']}", "--adapter", f"b={dirs['b']}", "--file", str(mixed_file)]) == 0
    )
    mixed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["adapter"] for m in mixed] == ["a", "b", "b", "a"]
    assert [m["question"] for m in mixed] == [q["question"] for q in questions]
    for name in ("a", "b"):  # each adapter alone on its own rows gives the same answers
        mine = [dict(q) for q in questions if q["adapter"] == name]
        for q in mine:
            del q["adapter"]
        f = write_jsonl(tmp_path / f"only_{name}.jsonl", mine)
        assert cli_main([*gen, "--adapter", str(dirs[name]), "--file", str(f)]) == 0
        alone = [json.loads(line)["answer"] for line in capsys.readouterr().out.splitlines()]
        assert alone == [m["answer"] for m in mixed if m["adapter"] == name]
    assert cli_main([*gen, "--adapter", f"a={dirs['a']}", "--file", str(mixed_file)]) == 2
    assert "'b' not given with --adapter" in capsys.readouterr().err


# ---- router monitor, learning-rate groups, presets -----------------------------------------------------------
def routed_batch(tok, n=6):
    rows = [{"input_ids": tok(f"question number {i} " * (i + 1))["input_ids"]} for i in range(n)]
    b = pad_batch(rows, tok.pad_token_id)
    return b["input_ids"], b["attention_mask"]


def test_router_monitor_warns_on_collapse_once():
    base, tok = load_shape("tiny")
    model = AdaptedModel(base, "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2}, tok).eval()
    with torch.no_grad():
        model.prompt_module.router.linear.bias.copy_(torch.tensor([50.0, -50.0]))  # everything to expert 0
    logs = []
    monitor = RouterMonitor(0.95, log=logs.append)
    ids, mask = routed_batch(tok)
    for _ in range(2):
        with torch.no_grad():
            out = model(ids, mask)
        monitor.observe(["set_a"] * 3 + ["set_b"] * 3, out.routing)
        summary = monitor.summary(reset=True)
        assert summary["expert_share"] == [1.0, 0.0] and summary["usage_entropy_bits"] == 0.0
    assert len(logs) == 1 and "expert 0" in logs[0] and "collapsed" in logs[0]
    totals = monitor.totals()
    assert totals["per_set"]["set_a"]["n"] == 6 and totals["per_set"]["set_b"]["expert_share"] == [1.0, 0.0]


def test_router_monitor_on_a_dense_mixture_reports_mean_weights():
    """With top_k = N every expert serves every input: the share is the mean routing weight, so a
    balanced mixture is quiet and one that puts all weight on one expert is a collapse."""
    base, tok = load_shape("tiny")
    model = AdaptedModel(base, "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2, "top_k": 2}, tok).eval()
    router = model.prompt_module.router.linear
    ids, mask = routed_batch(tok)
    for bias, share, warned in (([0.0, 0.0], [0.5, 0.5], False), ([3.0, 0.0], [0.9526, 0.0474], True)):
        logs = []
        monitor = RouterMonitor(0.95, log=logs.append)
        with torch.no_grad():
            router.weight.zero_()
            router.bias.copy_(torch.tensor(bias))
            out = model(ids, mask)
        monitor.observe(["s"] * 6, out.routing)
        assert monitor.summary()["expert_share"] == pytest.approx(share, abs=1e-4)
        assert bool(logs) == warned


def test_per_group_learning_rates_reach_the_optimizer():
    base, tok = load_shape("tiny")
    model = AdaptedModel(base, "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2}, tok)
    opt = torch.optim.AdamW(param_groups(model, 0.3, {"router": 0.01}, 0.0))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    pm = model.prompt_module
    assert lr_of[id(pm.router.linear.weight)] == lr_of[id(pm.router.linear.bias)] == 0.01
    assert lr_of[id(pm.A)] == lr_of[id(pm.B)] == 0.3
    assert len(lr_of) == 4
    opt = torch.optim.AdamW(param_groups(model, 0.3, {"router": 0.01, "B": 0.05}, 0.0))
    assert {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}[id(pm.B)] == 0.05
    with pytest.raises(ConfigError, match="no trainable parameter matches"):
        param_groups(model, 0.3, {"experts": 0.1}, 0.0)


def test_paper_preset():
    cfg = apply_preset(load_config(None, ["method=ptmoe", "preset=paper"]))
    o = cfg["method_options"]
    assert (o["noise_std"], o["top_k"], o["weighting"], o["noise"]) == (0.01, 1, "probationary", "multiplicative")
    assert o["load_balance"] == 0.0 and cfg["preset"] is None and cfg["train"]["lr"] == 0.3
    assert o["router_input_norm"] == "none" and o["init_noise"] == 0.0
    balanced = apply_preset(load_config(None, ["method=ptmoe", "preset=balanced"]))["method_options"]
    assert balanced["router_input_norm"] == "standardize" and balanced["load_balance"] > 0
    assert (balanced["top_k"], balanced["weighting"]) == (1, "probationary")
    assert apply_preset(cfg) == cfg  # applied once
    explicit = apply_preset(load_config(None, ["method=ptmoe", "preset=paper", "method_options={top_k: 2}"]))
    assert explicit["method_options"]["top_k"] == 2 and explicit["method_options"]["noise_std"] == 0.01
    with pytest.raises(ValueError, match="preset"):
        apply_preset(load_config(None, ["method=pt", "preset=paper"]))


def test_run_key_hashes_what_a_preset_expands_to(monkeypatch):
    from ptmoe.config import presets
    from ptmoe.experiments.store import run_key

    cfg = load_config(None, ["method=ptmoe", "preset=paper"])
    spelled_out = apply_preset(cfg)  # the same run written option by option shares its stored result
    assert run_key(cfg) == run_key(spelled_out)
    assert run_key(load_config(None, ["method=pt"])) == run_key(apply_preset(load_config(None, ["method=pt"])))
    before = run_key(cfg)
    redefined = {"ptmoe": {**presets.PRESETS["ptmoe"], "paper": {"method_options": {"noise_std": 1.0}}}}
    monkeypatch.setattr(presets, "PRESETS", redefined)
    assert run_key(cfg) != before  # a redefined preset never reuses a stale run
