"""`ptmoe compare --executor ray`: every run of a comparison is a Ray task with its own resources.

What a run waits for is passed to its task as Ray object references (the source prompt runs of an
ATTEMPT entry, the sweep runs before the seeds), so Ray starts each run as soon as its inputs exist
and every independent run at once. Runs are stored as the sequential executor stores them
(output_dir/runs/<key>/, plus run.log there: everything the run printed), so either executor
resumes the other's comparison and `--report` reads both.

The cluster is checked before any run starts (ray_cluster.py). While it runs, one progress line; a run
that raises is retried (--retries), then reported failed in the table while the others go on; Ctrl-C
(or SIGTERM) cancels the running tasks and keeps every finished run.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import torch

from ..training.run_folder import RunStopped
from .plan import Plan, Step
from .ray_cluster import RayOptions, check_resources, check_shared_store, connect
from .store import run_folder, run_once, stored_result


# ---- one run, as a Ray task ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    step: Step
    index: int
    root: str  # as the config names it: relative paths are read from `cwd`, as the sequential executor does
    cwd: str
    threads: int


class Progress:
    """What the driver cannot see by itself: which runs have started (and where their logs are)."""

    def __init__(self):
        self.started, self.logs, self.attempts = {}, {}, {}

    def start(self, index: int, log: str) -> None:
        self.started[index] = time.time()
        self.logs[index] = log
        self.attempts[index] = self.attempts.get(index, 0) + 1

    def state(self) -> tuple[dict, dict, dict]:
        return self.started, self.logs, self.attempts


def use_threads(n: int) -> None:
    """As many intra-op threads as the run's CPUs: oversubscribed OpenMP threads slow a step down many times."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(n)


def run_job(job: Job, progress, *needed: dict) -> dict:
    """The Ray task of one run: build its config from the runs it needed, then train and evaluate it
    (or return it stored), with everything it prints in runs/<key>/run.log."""
    use_threads(job.threads)
    os.chdir(job.cwd)
    root = Path(job.root)
    cfg = job.step.config(list(needed))
    done = stored_result(root, cfg)
    if done is not None:
        return done
    folder = run_folder(root, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    progress.start.remote(job.index, str(folder / "run.log"))
    with open(folder / "run.log", "a", buffering=1) as f, redirect_stdout(f), redirect_stderr(f):
        print(f"{job.step.describe(cfg, list(needed))} on {socket.gethostname()}, {time.strftime('%Y-%m-%d %H:%M:%S')}")
        return run_once(cfg, root, evaluate_it=job.step.evaluate)


# ---- the driver ---------------------------------------------------------------------------------------------
def run_on_ray(plan: Plan, opts: RayOptions, log=print) -> tuple[list[dict | None], dict[int, str]]:
    """Every step as a Ray task; (results, one line per failed step). Results of runs already stored
    are not recomputed."""
    ray = connect(opts)
    check_resources(ray, opts)
    if opts.address:
        check_shared_store(ray, plan.root)
    task = ray.remote(run_job).options(
        num_cpus=opts.cpus_per_run, num_gpus=opts.gpus_per_run, max_retries=opts.retries, retry_exceptions=True
    )
    progress = ray.remote(num_cpus=0)(Progress).remote()
    refs, reused = [], 0
    for i, step in enumerate(plan.steps):
        stored = stored_result(plan.root, step.cfg) if step.cfg is not None else None
        if stored is not None:  # finished before: its result, no task
            refs.append(ray.put(stored))
            reused += 1
            continue
        job = Job(step, i, str(plan.root), os.getcwd(), opts.threads)
        refs.append(task.remote(job, progress, *[refs[j] for j in step.needs]))
    log(
        f"[compare] {len(refs)} runs on Ray ({reused} finished before), {opts.cpus_per_run:g} CPU and {opts.gpus_per_run:g} GPU each; logs in {plan.root / 'runs'}/<run>/run.log"
    )
    watch(ray, refs, progress)
    return collect(ray, plan, refs, progress)


def watch(ray, refs: list, progress) -> None:
    """Wait for every task with one progress line; Ctrl-C or SIGTERM cancels what still runs."""
    line = ProgressLine(len(refs))
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            started, _, _ = ray.get(progress.state.remote())
            line.update(len(refs) - len(pending), {index[r] for r in ready}, started)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        line.end()
        raise RunStopped(
            f"stopped: {len(refs) - len(pending)} of {len(refs)} runs finished and are kept; {len(pending)} cancelled",
            exit_code=130,
            resumable=True,
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    line.end()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class ProgressLine:
    """`[compare] 5/12 runs done, 2 running, ETA 1m20s` rewritten in place on a terminal, a new line
    per change elsewhere (logs)."""

    def __init__(self, total: int):
        self.total = total
        self.done_at: dict[int, float] = {}
        self.last = ""
        self.tty = sys.stderr.isatty()

    def update(self, n_done: int, just_done: set, started: dict) -> None:
        now = time.time()
        for i in just_done:
            self.done_at.setdefault(i, now)
        running = sum(1 for i in started if i not in self.done_at)
        took = [self.done_at[i] - started[i] for i in self.done_at if i in started]
        text = f"[compare] {n_done}/{self.total} runs done, {running} running"
        if took and n_done < self.total:
            eta = math.ceil((self.total - n_done) / max(running, 1)) * sum(took) / len(took)
            text += f", ETA {int(eta // 60)}m{int(eta % 60):02d}s"
        if self.tty:
            print("\r" + text.ljust(len(self.last)), end="", file=sys.stderr, flush=True)
        elif text.split(", ETA")[0] != self.last.split(", ETA")[0]:
            print(text, file=sys.stderr, flush=True)
        self.last = text

    def end(self) -> None:
        if self.tty and self.last:
            print(file=sys.stderr)


def collect(ray, plan: Plan, refs: list, progress) -> tuple[list[dict | None], dict[int, str]]:
    """Each step's result, or why it has none: its error after the retries, with its log, or the
    failed run it waited for."""
    # the optional `ray` extra
    from ray.exceptions import RayError

    _, logs, attempts = ray.get(progress.state.remote())
    results, failed = [], {}
    for i, (step, ref) in enumerate(zip(plan.steps, refs)):
        upstream = next((j for j in step.needs if j in failed), None)
        try:
            results.append(ray.get(ref))
            continue
        except RayError as e:
            results.append(None)
            if upstream is not None:
                failed[i] = f"{step.label()}: not run, it needs {plan.steps[upstream].label()}, which failed"
                continue
            cause = getattr(e, "cause", None) or e
            first = (str(cause).strip().splitlines() or [""])[0]
            where = f" (log: {logs[i]})" if i in logs else ""
            tries = f" after {attempts[i]} attempts" if attempts.get(i, 0) > 1 else ""
            failed[i] = f"{step.label()}: {type(cause).__name__}: {first}{tries}{where}"
    if failed:
        print(f"[compare] {len(failed)} of {len(refs)} runs failed:", file=sys.stderr)
        for line in failed.values():
            print(f"  {line}", file=sys.stderr)
    return results, failed
