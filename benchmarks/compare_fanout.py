"""`ptmoe compare` sequential against `--executor ray`: one 12-run comparison on the tiny random model
(3 methods x 2 seeds, each after a 2-rate learning-rate sweep), first in one process, then on a local
Ray instance with one CPU per run (as many runs at once as the machine has cores), from fresh stores.
Prints each command's wall time, the machine's load, and whether both stored the same runs with the
same results (wall times aside).

    python benchmarks/compare_fanout.py [--steps 40] [--out /tmp/fanout]
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

SRC = Path(__file__).resolve().parents[1] / "src"
TIMING = {"wall_s", "tokens_per_s", "steps_per_s", "output_dir"}  # output_dir: each store its own
WORDS = ["sun", "river", "stone", "cloud", "elephant", "sky", "music", "lighthouse", "paper", "ox"]


def write_data(folder: Path) -> dict:
    rng = random.Random(0)
    sets = {}
    for name, n in (("train", 64), ("eval", 16)):
        rows = []
        for _ in range(n):
            a, b = rng.sample(WORDS, 2)
            rows.append({"context": f"The {a} is {b}.", "question": f"What is the {a}?", "answers": [b]})
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        sets[name] = str(path)
    return sets


def comparison(folder: Path, steps: int) -> Path:
    data = write_data(folder)
    cfg = {
        "model": "shape:tiny",
        "dtype": "fp32",
        "output_dir": "cmp",
        "data": {"train": [data["train"]], "eval": [data["eval"]], "valid_examples": 8, "max_eval_examples": 16},
        "train": {"steps": steps, "batch_size": 4, "log_every": 10, "save_every": steps},
        "eval": {"batch_size": 8, "max_new_tokens": {"qa": 4}},
        "seeds": [0, 1],
        "baseline": "PT",
        "sweep": {"steps": steps // 2, "lrs": {"default": [0.03, 0.3], "lora": [0.001, 0.01]}},
        "methods": [
            {"name": "PT", "method": "pt", "method_options": {"num_tokens": 8}},
            {"name": "DPT", "method": "dpt", "method_options": {"num_tokens": 8, "rank": 2}},
            {"name": "LoRA", "method": "lora", "method_options": {"r": 1}},
        ],
    }
    path = folder / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def timed(argv: list[str], cwd: Path) -> float:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    print("$ " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return wall


def stored(store: Path) -> dict:
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in TIMING}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return {p.parent.name: strip(json.loads(p.read_text())) for p in store.glob("runs/*/result.json")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="training steps per seed run (sweep runs: half)")
    p.add_argument("--out", default="/tmp/compare-fanout", help="working folder (emptied first)")
    args = p.parse_args()
    folder = Path(args.out)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = comparison(folder, args.steps)
    ptmoe = [sys.executable, "-m", "ptmoe.cli", "compare", str(config)]
    walls = {"sequential": timed([*ptmoe, "output_dir=seq"], folder)}
    walls["ray"] = timed([*ptmoe, "output_dir=ray", "--executor", "ray", "--cpus-per-run", "1"], folder)
    seq, ray = stored(folder / "seq"), stored(folder / "ray")
    print(f"cores: {os.cpu_count()}, load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"runs: {len(seq)} sequential, {len(ray)} on Ray; same keys and results: {seq == ray}")
    for name, wall in walls.items():
        print(f"{name}: {wall:.1f} s")
    print(f"ray / sequential: {walls['ray'] / walls['sequential']:.2f}")


if __name__ == "__main__":
    main()
