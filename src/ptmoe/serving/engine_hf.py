"""The hf engine: the project's own batched KV-cached generation (every method).

A batch holds jobs of one group: the base model plus every prompt adapter can't share a forward
(the base has no prompt), so the groups are "prompt" (all prompt adapters, mixed per row with
`adapter_names`), "base", and one group per weight-method adapter.
"""

from __future__ import annotations

import torch

from ..collate import pad_batch
from .adapters import Served
from .decode import decode
from .text import TextStream


class HFEngine:
    name = "hf"

    def __init__(self, served: Served):
        self.served = served

    def group(self, adapter: str) -> str:
        s = self.served
        if adapter == s.base_name:
            return "base"
        return f"weights:{adapter}" if adapter in s.weights else "prompt"

    def run(self, jobs, more=None) -> None:
        """Decode one batch to the end (`more`, for engines that take joiners mid-batch, is unused)."""
        s = self.served
        model = s.model_for(jobs[0].adapter)
        tok = s.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        eos = s.eos_ids()
        device = next(model.parameters()).device
        batch = pad_batch([{"input_ids": j.ids} for j in jobs], pad_id, side="left")
        names = [j.adapter for j in jobs] if self.group(jobs[0].adapter) == "prompt" else None
        streams = [TextStream(tok, j.stop, eos) for j in jobs]
        counts = [0] * len(jobs)

        def on_token(i: int, token: int) -> bool:
            job, stream = jobs[i], streams[i]
            counts[i] += 1
            delta = stream.push(token)
            if delta:
                job.emit("delta", delta)
            return stream.stopped or job.expired

        with torch.inference_mode():
            decode(
                model,
                batch["input_ids"].to(device),
                batch["attention_mask"].to(device),
                [j.sampling for j in jobs],
                on_token,
                eos,
                adapter_names=names,
            )
        for job, stream, n in zip(jobs, streams, counts):
            finish(job, stream, n)

    def close(self) -> None:
        pass


def finish(job, stream: TextStream, completion_tokens: int) -> None:
    """The last delta and the done event (or a timeout error) for a job the engine has finished."""
    if job.cancelled:
        job.emit("error", 499, "request cancelled")
        return
    rest = stream.flush()
    if rest:
        job.emit("delta", rest)
    if job.expired:
        job.emit("error", 504, "request timed out")
        return
    reason = "stop" if stream.stopped else "length"
    job.emit("done", reason, completion_tokens)
