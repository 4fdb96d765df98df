"""The request queue between the HTTP routes and an engine.

Routes submit Jobs (never blocking: a full queue raises QueueFull at once, answered 503). One worker
thread takes the oldest job, waits `batch_wait` seconds for company, and runs up to `max_batch`
queued jobs that the engine can batch with it (the same `engine.group(adapter)`) as one batch.
Results travel back to each job's asyncio queue as events:
("delta", text), ("done", finish_reason, completion_tokens), ("error", http_status, message).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field

from .decode import Sampling

log = logging.getLogger("ptmoe.serve")


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


@dataclass
class Job:
    ids: list[int]  # prompt token ids
    adapter: str  # served model name (the base name: no adapter)
    sampling: Sampling
    stop: list[str]
    deadline: float  # time.monotonic() after which the job is dropped
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    index: int = 0  # which prompt of its request (a request's jobs share one events queue)
    cancelled: bool = False  # the client went away or timed out: stop spending work on it
    finished: bool = False

    def emit(self, *event) -> None:
        if event[0] in ("done", "error"):
            if self.finished:
                return
            self.finished = True
        self.loop.call_soon_threadsafe(self.events.put_nowait, (self.index, *event))

    @property
    def expired(self) -> bool:
        return self.cancelled or time.monotonic() > self.deadline


class Batcher:
    def __init__(self, engine, max_queue: int = 64, max_batch: int = 8, batch_wait: float = 0.02):
        self.engine, self.max_queue, self.max_batch, self.batch_wait = engine, max_queue, max_batch, batch_wait
        self.pending: collections.deque[Job] = collections.deque()
        self.cv = threading.Condition()
        self.closing = False
        self.stats = {
            "batches": 0,
            "requests": 0,
            "largest_batch": 0,
            "rejected_full": 0,
            "recent_batches": collections.deque(maxlen=32),
        }
        self.thread = threading.Thread(target=self._work, name="ptmoe-batcher", daemon=True)

    def start(self) -> Batcher:
        self.thread.start()
        return self

    def submit(self, job: Job) -> None:
        with self.cv:
            if self.closing:
                raise ShuttingDown("the server is shutting down")
            if len(self.pending) >= self.max_queue:
                self.stats["rejected_full"] += 1
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting); retry later")
            self.pending.append(job)
            self.cv.notify()

    def snapshot(self) -> dict:
        with self.cv:
            s = dict(self.stats, recent_batches=list(self.stats["recent_batches"]))
            s["queued"] = len(self.pending)
        return s

    def _take(self) -> list[Job] | None:
        with self.cv:
            while not self.pending and not self.closing:
                self.cv.wait()
            if not self.pending:
                return None
            # give concurrent requests a moment to arrive, unless a full batch is already waiting
            end = time.monotonic() + self.batch_wait
            while len(self.pending) < self.max_batch and not self.closing and (left := end - time.monotonic()) > 0:
                self.cv.wait(left)
            group = self.engine.group(self.pending[0].adapter)
            batch, rest = [], collections.deque()
            while self.pending:
                job = self.pending.popleft()
                if job.expired:
                    job.emit("error", 504 if not job.cancelled else 499, "request timed out while queued")
                elif len(batch) < self.max_batch and self.engine.group(job.adapter) == group:
                    batch.append(job)
                else:
                    rest.append(job)
            self.pending = rest
            if batch:
                self.stats["batches"] += 1
                self.stats["requests"] += len(batch)
                self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
                self.stats["recent_batches"].append([j.adapter for j in batch])
            return batch

    def more(self, batch_names: list[str], live: int) -> list[Job]:
        """For an engine that lets requests join a running batch (vllm): queued jobs of its group, at once,
        up to max_batch running together (`live` run now); counted into the running batch's stats
        (`batch_names` is its entry in recent_batches: every request it has served)."""
        room = self.max_batch - live
        out, keep = [], collections.deque()
        with self.cv:
            group = self.engine.group(batch_names[0])
            while self.pending:
                job = self.pending.popleft()
                if job.expired:
                    job.emit("error", 504 if not job.cancelled else 499, "request timed out while queued")
                elif len(out) < room and self.engine.group(job.adapter) == group:
                    out.append(job)
                else:
                    keep.append(job)
            self.pending = keep
            if out:
                self.stats["requests"] += len(out)
                batch_names.extend(j.adapter for j in out)
                self.stats["largest_batch"] = max(self.stats["largest_batch"], live + len(out))
        return out

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            log.info("batch of %d: %s", len(batch), ", ".join(j.adapter for j in batch))
            names = self.stats["recent_batches"][-1]
            more = lambda live, names=names: self.more(names, live)
            try:
                self.engine.run(batch, more)
            except Exception as e:  # one bad batch must not stop the server
                log.exception("engine failed on a batch")
                for job in batch:
                    job.emit("error", 500, f"generation failed: {type(e).__name__}: {e}")
            for job in batch:  # an engine that forgot a job must not leave its client waiting
                job.emit("error", 500, "generation ended without a result")

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, reject queued ones (503), let the running batch finish."""
        with self.cv:
            self.closing = True
            rejected, self.pending = list(self.pending), collections.deque()
            self.cv.notify_all()
        for job in rejected:
            job.emit("error", 503, "the server is shutting down")
        if self.thread.is_alive():
            self.thread.join(timeout)
