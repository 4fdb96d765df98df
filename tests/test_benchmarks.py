"""Every script in benchmarks/ still runs against today's API: each is cited by a doc, imports
only names the package has (the imports inside its functions too), answers `--help`, and the ones that
measure without a trained run go end to end on the tiny random model in a few seconds."""

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))
DOCS = [*(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
NO_ARGPARSE = {"routing_replacements.py"}  # reads one folder name from argv: run on a store below instead


def run_script(name, *args, timeout=120):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=timeout,
    )
    assert out.returncode == 0, f"{name} {args}: {out.stderr[-3000:]}"
    return out.stdout


def test_benchmarks_holds_only_python_scripts_and_their_result_folders():
    stray = [p.name for p in (ROOT / "benchmarks").iterdir() if p.is_file() and p.suffix not in (".py", ".md")]
    assert stray == []
    assert len(SCRIPTS) >= 7


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_is_cited_and_imports_only_what_the_package_has(script):
    assert any(f"benchmarks/{script.name}" in doc.read_text() for doc in DOCS), f"{script.name}: cited nowhere"
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ptmoe"):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert missing == [], f"{script.name}: {node.module} has no {missing}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ptmoe"):
                    importlib.import_module(a.name)


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.name not in NO_ARGPARSE], ids=lambda p: p.name)
def test_every_script_answers_help(script):
    assert "usage:" in run_script(script.name, "--help")


@pytest.fixture
def two_task_config(tmp_path):
    """A compare config on the tiny model with two training tasks and a held-out set of each."""
    words = ["sun", "sky", "grass", "snow", "coal", "rose", "sea", "ox", "tar", "milk", "leaf", "sand"]
    for split in ("train", "heldout"):
        (tmp_path / split).mkdir()
        for task, template in [("colour", "What colour is the {}?"), ("size", "How big is the {}?")]:
            rows = [
                {"question": template.format(w), "context": f"The {w} is {task} {i}.", "answer": f"{task} {i}"}
                for i, w in enumerate(words)
            ]
            (tmp_path / split / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "model": "shape:tiny",
        "data": {
            "train": [str(tmp_path / "train" / f"{t}.jsonl") for t in ("colour", "size")],
            "eval": [str(tmp_path / "heldout" / f"{t}.jsonl") for t in ("colour", "size")],
            "valid_examples": 0,
            "max_length": 192,
        },
        "methods": [{"name": "PT", "method": "pt"}],
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_router_input_runs_on_the_tiny_model(two_task_config):
    out = json.loads(run_script("router_input.py", two_task_config, "--rows", 16, "--seeds", 2))
    assert out["rows"] == 16 and set(out) >= {"mean_vector_norm", "none", "standardize"}


def test_router_separability_runs_on_the_tiny_model(two_task_config, tmp_path):
    args = ["--train-rows", 8, "--eval-rows", 8, "--layers", 0, 1, "--pools", "mean", "last"]
    out = run_script("router_separability.py", two_task_config, *args, "--json", tmp_path / "sep.json")
    rows = json.loads((tmp_path / "sep.json").read_text())["rows"]
    assert [(r["router_input"], r["pool"]) for r in rows] == [
        ("embeddings", "mean"),
        ("embeddings", "last"),
        ("hidden:1", "mean"),
        ("hidden:1", "last"),
    ]
    assert all(0.0 <= r["probe_train_to_eval"] <= 1.0 and r["kmeans_bits_eval"] >= 0.0 for r in rows)
    assert "| hidden:1 | last |" in out


def test_routing_replacements_reads_a_run_store(tmp_path):
    """The fields it reads are those `ptmoe compare` stores (evaluation/routing_value.py, store.py)."""
    run = tmp_path / "runs" / "abc123"
    run.mkdir(parents=True)
    value = {"routed": 30.0, "replaced": {"expert 0": 29.0, "expert 1": 20.0, "uniform": 25.0}, "value": [1, -2, 4]}
    result = {
        "config": {"method": "ptmoe", "seed": 0, "method_options": {"experts": 2, "route_by": "input"}},
        "eval": {"router": {"routing_value": value, "mutual_information_bits": 0.5}},
    }
    (run / "result.json").write_text(json.dumps(result))
    out = run_script("routing_replacements.py", tmp_path)
    assert "routed  30.00" in out and "value  +1.00 [-2.00, +4.00]  MI 0.50" in out


def test_parity_plot_draws_the_table_of_the_doc(tmp_path):
    """README's picture: docs/parity.md's 60-step table, read from the doc and drawn as a PNG."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import parity_plot
    finally:
        sys.path.pop(0)
    rows = dict((name, rest) for name, *rest in parity_plot.read_table(ROOT / "docs" / "parity.md"))
    assert rows["PT"] == [0.0, 0.0, 0.0] and rows["PT-MoE (paper)"] == [-1.09, -2.85, 0.65] and len(rows) == 9
    assert "wrote" in run_script("parity_plot.py", "--out", tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ROOT / "docs" / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
