"""`ptmoe compare --executor ray` on a local Ray instance of 2 CPUs and the tiny random model:
the same runs and results as the sequential executor, run for run (sweeps and ATTEMPT's source prompts
included); a stopped comparison resumes on Ray training only what is missing; a run that raises is shown
failed while the others finish; `--report` reads Ray's runs as the sequential ones; and every bad input is
one line before any run starts."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from ptmoe.cli import main as cli_main  # noqa: E402
from ptmoe.experiments.compare import compare  # noqa: E402
from ptmoe.experiments.ray_cluster import RayOptions, check_shared_store, nodes_missing  # noqa: E402
from test_attempt_sources import config as attempt_config  # noqa: E402
from test_attempt_sources import quiet  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
TIMING = {"wall_s", "run_hours", "wall_s_this_invocation", "tokens_per_s", "steps_per_s"}
pytestmark = pytest.mark.usefixtures("one_thread")


def config(folder: Path, methods, seeds=(0, 1), sweep=True):
    """test_attempt_sources' comparison (two training sources: ATTEMPT trains a source prompt on each)
    with output_dir relative, as users write it, and a learning-rate sweep."""
    raw = {**attempt_config(folder, methods, seeds), "output_dir": "cmp"}
    return {**raw, "sweep": {"lrs": [0.1, 0.3], "steps": 2}} if sweep else raw


TWO_METHODS = [
    {"name": "PT", "method": "pt", "method_options": {"num_tokens": 4}},
    {"name": "ATTEMPT", "method": "attempt", "method_options": {"num_tokens": 4}, "source_runs": {}},
]
RAY = RayOptions(cpus_per_run=1, retries=0)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module; its workers import this checkout's ptmoe."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])]))
        mp.setenv("OMP_NUM_THREADS", "1")
        for attempt in range(3):  # Ray gives its node 30 s to start: on a loaded shared machine, try again
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
    yield ray
    ray.shutdown()


def run_into(folder: Path, name: str, raw: dict, ray_options=None) -> Path:
    """compare in `folder` (output_dir "cmp"), its store then renamed to `name`, keeping relative paths."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        compare(raw, "test", log=quiet, ray_options=ray_options)
    (folder / "cmp").rename(folder / name)
    return folder / name


@pytest.fixture(scope="module")
def stores(tmp_path_factory, local_ray, one_thread):
    """The 2-method x 2-seed comparison with a sweep, once in this process and once on Ray."""
    folder = tmp_path_factory.mktemp("cmp")
    raw = config(folder, TWO_METHODS)
    return folder, raw, run_into(folder, "seq", raw), run_into(folder, "ray", raw, RAY)


def without_timing(x):
    if isinstance(x, dict):
        return {k: without_timing(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [without_timing(v) for v in x]
    return x


def results(store: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in (store / "runs").glob("*/result.json")}


def stamps(store: Path, leave_out=()) -> dict:
    """Modification times of every stored file but those of the runs left out."""
    files = (p for p in (store / "runs").rglob("*") if p.is_file())
    return {p: p.stat().st_mtime_ns for p in files if p.relative_to(store / "runs").parts[0] not in leave_out}


def test_ray_runs_what_sequential_runs_with_the_same_results(stores):
    _, _, seq, on_ray = stores
    a, b = results(seq), results(on_ray)
    # 2 source prompts + 2 methods x (2 sweep rates + 2 seeds)
    assert len(a) == 10 and sorted(a) == sorted(b)
    for key in a:
        assert without_timing(a[key]) == without_timing(b[key]), key
    sources = sorted(f"cmp/runs/{k}/train/best" for k, r in b.items() if len(r["config"]["data"]["train"]) == 1)
    assert len(sources) == 2
    for r in (r for r in b.values() if r["config"]["method"] == "attempt"):  # the source runs Ray trained first
        assert sorted(r["config"]["method_options"]["source_prompts"]) == sources
    # every Ray run kept its log in its folder; the sequential ones printed to the console
    assert all((on_ray / "runs" / k / "run.log").is_file() for k in b)
    assert not list(seq.glob("runs/*/run.log"))
    log = on_ray / "runs" / next(k for k, r in b.items() if r["config"]["method"] == "pt" and "eval" in r) / "run.log"
    assert "[compare] PT seed" in log.read_text() and "sweep valid loss" in log.read_text()


def test_report_after_ray_equals_report_after_sequential(stores, capsys):
    folder, raw, seq, on_ray = stores
    path = folder / "cmp.yaml"
    path.write_text(yaml.safe_dump(raw))
    tables = {}
    for store in (seq, on_ray):
        assert cli_main(["compare", str(path), f"output_dir={store}", "--report"]) == 0
        capsys.readouterr()
        table = json.loads((store / "compare.json").read_text())
        md = (store / "compare.md").read_text()
        # the last column and the compute line are wall times
        md = "\n".join(line.rsplit("|", 2)[0] if line.startswith("| ") else line for line in md.splitlines())
        tables[store.name] = (without_timing(table), md.split("Compute behind")[0])
    assert tables["seq"] == tables["ray"]
    assert set(tables["ray"][0]["rows"]) == {"PT", "ATTEMPT"}


def test_a_stopped_comparison_resumes_on_ray_training_only_what_is_missing(stores, tmp_path):
    folder, raw, seq, _ = stores
    store = tmp_path / "cmp"
    shutil.copytree(seq, store)
    done = results(store)
    pt_seed = next(
        k for k, r in done.items() if r["config"]["method"] == "pt" and r["config"]["seed"] == 1 and "eval" in r
    )
    sweep = next(k for k, r in done.items() if r["config"]["method"] == "attempt" and "eval" not in r)
    shutil.rmtree(store / "runs" / pt_seed)  # stopped before it was stored
    (store / "runs" / sweep / "result.json").unlink()  # stopped after training, before its result was written
    before = stamps(store, leave_out=(pt_seed, sweep))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        table = compare(raw, "test", log=quiet, ray_options=RAY)
    assert set(table["rows"]) == {"PT", "ATTEMPT"} and not table["failed"]
    assert {p.parent.name for p in store.glob("runs/*/run.log")} == {pt_seed, sweep}  # what ran on Ray
    assert stamps(store, leave_out=(pt_seed, sweep)) == before  # every other run untouched
    again = results(store)
    assert sorted(again) == sorted(done)
    for key in (pt_seed, sweep):
        assert without_timing(again[key]) == without_timing(done[key])


def test_a_run_that_raises_is_shown_failed_and_the_others_finish(local_ray, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "What is it?", "context": "It is red.", "answer": "red"}\n{not json\n')
    methods = [
        {"name": "PT", "method": "pt", "method_options": {"num_tokens": 4}},
        {"name": "Broken", "method": "pt", "method_options": {"num_tokens": 5}, "data": {"train": [str(bad)]}},
    ]
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, methods, seeds=(0,), sweep=False)))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["compare", str(path), "--executor", "ray", "--retries", "1"]) == 1
    out, err = capsys.readouterr()
    table = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert table["rows"]["PT"]["seeds"] == 1 and "average" in table["rows"]["PT"]
    [line] = table["failed"]["Broken"]
    assert "Broken: seed 0: " in line and "bad.jsonl:2: invalid JSON" in line and "after 2 attempts" in line
    log = Path(line.split("(log: ")[1].rstrip(")"))
    assert log.read_text().count("[compare] Broken seed 0") == 2  # each attempt's output, in the run's folder
    assert "| Broken | failed |" in out and "Failed runs" in out
    assert "1 of 2 runs failed" in err


def test_bad_input_is_one_line_before_any_run(local_ray, tmp_path, monkeypatch, capsys):
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, TWO_METHODS[:1], seeds=(0,), sweep=False)))
    monkeypatch.chdir(tmp_path)

    def error(*argv):
        assert cli_main(["compare", str(path), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0], err
        assert not (tmp_path / "cmp" / "runs").exists()
        return err[0]

    assert "no node of the Ray cluster has that much (" in error("--executor", "ray", "--gpus-per-run", "1")
    assert "0 GPU" in error("--executor", "ray", "--gpus-per-run", "1")
    assert "--cpus-per-run 64 " in error("--executor", "ray", "--cpus-per-run", "64")
    assert "--address 127.0.0.1:1: no Ray cluster answers there" in error(
        "--executor", "ray", "--address", "127.0.0.1:1"
    )
    assert "--gpus-per-run: applies to --executor ray only" in error("--gpus-per-run", "0.5")
    assert "--retries: must be >= 0" in error("--executor", "ray", "--retries", "-1")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert "Ray is not installed; pip install -e .[ray]" in error("--executor", "ray")


def test_the_store_check_asks_every_node(local_ray, tmp_path):
    """On a cluster (--address) each node reads a marker the driver wrote in output_dir; a node that
    cannot is named. One machine sees its own files: a marker never written stands for a store not shared."""
    check_shared_store(local_ray, tmp_path)  # passes, and leaves nothing behind
    assert not list(tmp_path.iterdir())
    [node] = nodes_missing(local_ray, tmp_path / "never-written", "token")
    assert node == local_ray.nodes()[0]["NodeManagerAddress"]
