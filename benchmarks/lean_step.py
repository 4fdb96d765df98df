"""What the CPU speed work's two changes do, each on its own: the lean SwiGLU path (lean_backbone.py) against
plain autograd in the same training step, interleaved (median step time, and the MiB autograd keeps for
backward, by saved-tensor hooks), and the fused loss alone at a given chunk size (time and profiler peak).

    OMP_NUM_THREADS=1 python benchmarks/lean_step.py [--dtype fp32|bf16] [--rounds 6] [--chunks 128,341]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

import ptmoe.loss
from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_base_model
from ptmoe.bench.common import _cpu_profiler_peak, saved_for_backward
from ptmoe.loss import _FusedLinearCE


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--prompt-length", type=int, default=40)
    p.add_argument("--rounds", type=int, default=6, help="steps of each path, interleaved (the first is warm-up)")
    p.add_argument("--chunks", default="128,341", help="rows per chunk of the fused loss to time")
    args = p.parse_args()
    torch.set_num_threads(1)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    base, tok = load_base_model(args.model, dtype)
    g = torch.Generator().manual_seed(0)
    vocab = base.get_input_embeddings().weight.shape[0]
    ids = torch.randint(3, min(vocab, 32000), (args.batch_size, args.seq_len), generator=g)
    labels = ids.clone()
    labels[:, : args.seq_len // 2] = -100  # loss on the last half, as `ptmoe bench`
    mask = torch.ones_like(ids)
    model = AdaptedModel(base, "ptmoe", {"num_tokens": args.prompt_length}, tokenizer=tok).train()
    real = ptmoe.loss.lean, ptmoe.loss.pays_off
    paths = {"lean": real[0], "plain": contextlib.nullcontext}

    @contextlib.contextmanager
    def taking(path):  # the path forced on, whatever `pays_off` says for this device and dtype
        ptmoe.loss.lean, ptmoe.loss.pays_off = paths[path], (lambda *a: True)
        try:
            yield
        finally:
            ptmoe.loss.lean, ptmoe.loss.pays_off = real

    def step(path):
        with taking(path):
            out = model(ids, mask, labels)
            out.loss.backward()
            model.zero_grad(set_to_none=True)

    times = {k: [] for k in paths}
    for _ in range(args.rounds):
        for k in paths:
            t0 = time.perf_counter()
            step(k)
            times[k].append(time.perf_counter() - t0)
    print(f"{args.model}, {args.dtype}, {args.batch_size} x {args.seq_len} + {args.prompt_length} prompt tokens")
    print("| path | step s (median) | steps s | kept for backward (MiB) |\n|---|---:|---|---:|")
    for k in paths:
        with taking(k):
            _, kept = saved_for_backward(lambda: model(ids, mask, labels), skip=list(model.parameters()))
        print(
            f"| {k} | {statistics.median(times[k][1:]):.3f} | {[round(t, 2) for t in times[k]]} | {kept / 2**20:.0f} |"
        )

    head = base.get_output_embeddings()
    h = torch.randn(args.batch_size * args.seq_len // 2, head.weight.shape[1], dtype=dtype, requires_grad=True)
    t = torch.randint(0, head.weight.shape[0], (h.shape[0],))
    print(
        f"\nthe fused loss alone, {h.shape[0]} label rows\n| rows per chunk | s (median of 3) | peak MiB |\n|---:|---:|---:|"
    )
    for rows in map(int, args.chunks.split(",")):
        run = lambda: _FusedLinearCE.apply(h, head.weight, head.bias, t, rows, None).backward()  # noqa: E731
        spent = []
        for _ in range(4):
            t0 = time.perf_counter()
            run()
            spent.append(time.perf_counter() - t0)
        print(f"| {rows} | {statistics.median(spent[1:]):.3f} | {_cpu_profiler_peak(run) / 2**20:.0f} |")


if __name__ == "__main__":
    main()
