"""`ptmoe bench`: speed and memory of a training step, side by side with PEFT, in one process.

Three parts (``--parts``):

* ``synthetic``: a fixed batch (random ids, B x S, loss on the last half of the tokens). The frozen
  model's forward pass on the same batch including the prompt tokens (no grad: the floor), PEFT prompt
  tuning and PEFT LoRA training steps (the usual HF forward with labels, backward, optimizer step),
  and ours (AdaptedModel's fast path, backward, optimizer step). Medians over ``--steps`` after
  ``--warmup``; ms/step, input tokens/s, peak memory, ratios to the forward pass and to PEFT PT.
* ``real``: Disfl-QA training examples (real, varying length). Ours: length-grouped batches, right
  padding, fast loss. PEFT prompt tuning: random order, transformers' DataCollatorForSeq2Seq.
  Tokens/s of real (non-pad) tokens over one pass, collation included.
* ``generate``: batched greedy generation on held-out Disfl-QA questions, the same batches for both:
  AdaptedModel.generate vs PEFT prompt tuning's ``generate`` (EOS ignored: both make exactly
  ``--max-new-tokens`` tokens, so the work is the same). Our generate's KV cache: ``--gen-cache``.
* ``tokens`` (not in the default): our generate's fast path (``--gen-cache``) against the plain one
  (dynamic cache, eager) on the same questions: how many rows get the same greedy tokens.
* ``profile`` (not in the default): one batch of each generate under ``torch.profiler``: host
  operations per new token, host syncs, and on CUDA the device's busy share, the idle gaps between
  kernels and the top kernels (`profile.py`).

Backbone speed options shared by every contender (``--attn``, ``--compile``, ``--liger``): `options.py`.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the measured steps (weights included).
On CPU there is no allocator peak counter, so one extra step runs under ``torch.profiler`` with
``profile_memory=True`` and the peak of the running sum of its allocations is added to the bytes of
the model's parameters and buffers ("profiler peak"); it counts tensors, not allocator slack.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..base_models import load_base_model
from ..device import DTYPES, default_device, resolve_dtype
from ..methods import REGISTRY, make_config
from . import options
from .common import FORWARD, PEFT, _device_desc, _versions
from .profile import bench_profile
from .real import bench_generate, bench_real, check_tokens
from .report import to_markdown
from .synthetic import bench_synthetic

SYNTH_METHODS = ("forward", "peft-pt", "peft-lora", "pt", "dpt", "smop", "ptmoe")
PARTS = ("synthetic", "real", "generate", "profile", "tokens")
DEFAULT_PARTS = ("synthetic", "real", "generate")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="shape:llama-3.2-1b",
        help="base model: shape:NAME (random init), smollm2-135m-instruct, an HF id or folder",
    )
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument(
        "--dtype",
        choices=["auto", *sorted(DTYPES)],
        default="auto",
        help="base model dtype (auto: bf16 on cuda and on CPUs with bf16 instructions, else fp32); "
        "prompt parameters stay fp32",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--seq-len",
        type=int,
        default=512,
        help="input tokens per example (synthetic part), and the max length of real examples",
    )
    p.add_argument("--prompt-length", type=int, default=40, help="soft prompt tokens")
    p.add_argument("--steps", type=int, default=10, help="measured steps (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--methods",
        default=",".join(SYNTH_METHODS),
        help="comma list of forward, peft-pt, peft-lora and our methods by name (lora, hydralora: rank 8); "
        "ptmoe@hidden:2: a routed method with that router_input",
    )
    p.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"comma list from {','.join(PARTS)} (default: {','.join(DEFAULT_PARTS)})",
    )
    p.add_argument("--real-examples", type=int, default=256, help="Disfl-QA training examples in the real part")
    p.add_argument("--real-method", default="ptmoe", help="our method in the real-data part")
    p.add_argument("--gen-examples", type=int, default=64, help="held-out questions in the generation part")
    p.add_argument("--max-new-tokens", type=int, default=32)
    options.add_arguments(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for bench.json and bench.md")


def run(args) -> int:
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    dtype = resolve_dtype(args.dtype, device, log)
    dtype_name = {v: k for k, v in DTYPES.items()}[dtype]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    known = [FORWARD, *PEFT, *REGISTRY]
    for m in methods:
        name, _, router_input = m.partition("@")
        if name not in known:
            raise ValueError(f"--methods: unknown {m!r}; known: {', '.join(known)}")
        if router_input:  # checked before any model loads
            make_config(name, {"router_input": router_input}, where=f"--methods {m}")
    for p in parts:
        if p not in PARTS:
            raise ValueError(f"--parts: unknown {p!r}; known: {', '.join(PARTS)}")
    options.check(args, device)
    torch.manual_seed(args.seed)
    base, tok = load_base_model(args.model, dtype)
    base.to(device)
    for p in base.parameters():
        p.requires_grad_(False)
    options.apply(base, args, log)
    result = {
        "command": "ptmoe bench " + " ".join(sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else "ptmoe bench " + " ".join(getattr(args, "_argv", [])),
        "device": _device_desc(device),
        "versions": _versions(),
        "config": {
            "model": args.model,
            "dtype": dtype_name,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "prompt_length": args.prompt_length,
            "steps": args.steps,
            "warmup": args.warmup,
            "compile": args.compile,
            "liger": args.liger,
            "gen_cache": args.gen_cache,
            "attn_implementation": getattr(base.config, "_attn_implementation", None),
        },
    }
    log(f"[bench] {args.model} on {result['device']}, {dtype_name}")
    runners = {  # part -> (what the log says, how it runs)
        "synthetic": ("synthetic batch", lambda: bench_synthetic(base, tok, args, device, methods, log)),
        "real": ("real data (Disfl-QA train)", lambda: bench_real(base, tok, args, device, log)),
        "generate": ("generation (Disfl-QA held-out)", lambda: bench_generate(base, tok, args, device, log)),
        "profile": (
            "generate under torch.profiler (one batch each)",
            lambda: bench_profile(base, tok, args, device, log),
        ),
        "tokens": (
            "our generate: the fast path's tokens against the plain path's",
            lambda: check_tokens(base, tok, args, device, log),
        ),
    }
    for part in PARTS:
        if part in parts:
            what, run_part = runners[part]
            log(f"[bench] {what}")
            result[part] = run_part()
    md = to_markdown(result)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=2))
        (out / "bench.md").write_text(md + "\n")
    return 0
