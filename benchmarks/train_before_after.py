"""Is the main job's training slower after a change? `ptmoe train` on a config, with the code of an
earlier commit (a temporary git worktree) and with this checkout's, alternating so that the machine's
load falls on both alike; prints the training loop's wall time of each run (train_summary.json).

    python benchmarks/train_before_after.py COMMIT [--config src/ptmoe/config/demo.yaml] [--steps 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(src: Path, config: str, steps: int, out: Path, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "ptmoe", "train", config, f"train.steps={steps}", "train.eval_every=0"]
    cmd += [f"train.save_every={steps}", f"output_dir={out}", *overrides, "--overwrite"]
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} (PYTHONPATH={src}):\n{done.stderr[-3000:]}")
    return json.loads((out / "train_summary.json").read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("commit", help="the code before the change (any git revision of this repository)")
    p.add_argument("--config", default="src/ptmoe/config/demo.yaml", help="the main job's config by default")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="key=value overrides for both sides")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(before), args.commit], check=True
        )
        try:
            for r in range(1, args.rounds + 1):
                for side, src in (("before", before / "src"), ("after", ROOT / "src")):
                    s = train(src, args.config, args.steps, Path(tmp) / f"run-{side}", args.overrides)
                    print(f"{side:6s} round {r}: {s['wall_s']:.1f} s for {s['steps']} steps", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)


if __name__ == "__main__":
    main()
