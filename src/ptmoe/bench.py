"""`ptmoe bench`: speed and memory of a training step, side by side with PEFT, in one process.

Three parts (``--parts``):

* ``synthetic``: a fixed batch (random ids, B x S, loss on the last half of the tokens). The frozen
  model's forward pass on the same batch including the prompt tokens (no grad: the floor), PEFT prompt
  tuning and PEFT LoRA training steps (the usual HF forward with labels, backward, optimizer step),
  and ours (PtmoeModel's fast path, backward, optimizer step). Medians over ``--steps`` after
  ``--warmup``; ms/step, input tokens/s, peak memory, ratios to the forward pass and to PEFT PT.
* ``real``: SQuAD training examples (real, varying length). Ours: length-grouped batches, right
  padding, fast loss. PEFT prompt tuning: random order, transformers' DataCollatorForSeq2Seq.
  Tokens/s of real (non-pad) tokens over one pass, collation included.
* ``generate``: batched greedy generation on held-out SQuAD questions, the same batches for both:
  PtmoeModel.generate vs PEFT prompt tuning's ``generate`` (EOS ignored: both make exactly
  ``--max-new-tokens`` tokens, so the work is the same).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the measured steps (weights included).
On CPU there is no allocator peak counter, so one extra step runs under ``torch.profiler`` with
``profile_memory=True`` and the peak of the running sum of its allocations is added to the bytes of
the model's parameters and buffers ("profiler peak"); it counts tensors, not allocator slack.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from .data.format import special_ids

SYNTH_METHODS = ("forward", "peft-pt", "peft-lora", "pt", "dpt", "smop", "ptmoe")
ALL_METHODS = SYNTH_METHODS + ("lora",)
PARTS = ("synthetic", "real", "generate")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="shape:llama-3.2-1b",
                   help="base model: shape:NAME (random init), smollm2-135m-instruct, an HF id or folder")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="base model dtype (default: bf16 on cuda, fp32 on cpu); prompt parameters stay fp32")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512, help="input tokens per example (synthetic part), "
                   "and the max length of real examples")
    p.add_argument("--prompt-length", type=int, default=40, help="soft prompt tokens")
    p.add_argument("--steps", type=int, default=10, help="measured steps (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--methods", default=",".join(SYNTH_METHODS),
                   help=f"comma list from {','.join(ALL_METHODS)} (lora = ours via PtmoeModel, rank 8)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list from {','.join(PARTS)}")
    p.add_argument("--real-examples", type=int, default=256, help="SQuAD training examples in the real part")
    p.add_argument("--real-method", default="ptmoe", help="our method in the real-data part")
    p.add_argument("--gen-examples", type=int, default=64, help="held-out questions in the generation part")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--compile", action="store_true", help="torch.compile the decoder (all methods)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for bench.json and bench.md")


# ---- helpers ------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _param_bytes(*modules) -> int:
    seen, total = set(), 0
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total


def _cpu_profiler_peak(fn) -> int:
    """Peak of the running sum of CPU allocations made while fn() runs (bytes)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    cur = peak = 0
    for _, n in events:
        cur += n
        peak = max(peak, cur)
    return peak


def _versions() -> dict:
    import peft
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def _device_desc(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cap = torch.backends.cpu.get_cpu_capability()
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {cap}"


def _peft_pt(base, T):
    from peft import PromptTuningConfig, get_peft_model

    return get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=T))


def _peft_lora(base):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                           target_modules=["q_proj", "v_proj"]))


def _ours(base, method, T, tok):
    from .model import PtmoeModel

    opts = {"r": 8, "alpha": 16.0} if method == "lora" else {"num_tokens": T}
    return PtmoeModel(base, method, opts, tokenizer=tok)


def _train_step(module, opt, fixed_batch, ours: bool):
    def step(batch=None):
        batch = fixed_batch if batch is None else batch
        if ours:
            out = module(batch["input_ids"], batch["attention_mask"], batch["labels"])
            loss = out.loss
            aux = module.aux_loss()
            if aux is not None:
                loss = loss + aux
        else:
            loss = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _unwrap(peft_model):
    """Remove PEFT's injected layers (LoRA) so later methods see the plain base model again."""
    if hasattr(peft_model, "unload"):
        try:
            return peft_model.unload()
        except Exception:  # prompt learning has nothing to unload
            pass
    return peft_model.get_base_model()


def _dev_batch(batch, device):
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ---- the parts ----------------------------------------------------------------------------------
def _interleaved(steps_by_name: dict, device, steps: int, warmup: int, modules: dict) -> dict:
    """Round-robin: each round runs one step of every method, so load from other processes on a
    shared machine falls on all of them alike. Medians per method; then memory, one method at a time."""
    for _ in range(warmup):
        for step in steps_by_name.values():
            step()
    times = {n: [] for n in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, step in steps_by_name.items():
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            step()
            _sync(device)
            peak, how = torch.cuda.max_memory_allocated(device), "cuda.max_memory_allocated"
        else:
            peak, how = _param_bytes(*modules[name]) + _cpu_profiler_peak(step), "weights + profiler peak"
        out[name] = {"ms": 1000 * statistics.median(times[name]),
                     "ms_all": [round(1000 * t, 2) for t in times[name]], "peak_bytes": int(peak), "memory": how}
    return out


def bench_synthetic(base, tok, args, device, methods, log) -> list[dict]:
    B, S, T = args.batch_size, args.seq_len, args.prompt_length
    g = torch.Generator().manual_seed(args.seed)
    vocab = base.get_input_embeddings().weight.shape[0]
    ids = torch.randint(3, min(vocab, 32000), (B, S), generator=g)
    labels = ids.clone()
    labels[:, : S // 2] = -100  # loss on the last half of the tokens
    batch = _dev_batch({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}, device)
    full = _dev_batch({"input_ids": torch.cat([torch.randint(3, min(vocab, 32000), (B, T), generator=g), ids], 1)},
                      device)
    full_mask = torch.ones_like(full["input_ids"])

    def forward_step():
        with torch.no_grad():
            base(input_ids=full["input_ids"], attention_mask=full_mask, use_cache=False)

    results = {}
    # group 1: the frozen forward and every prompt method share the untouched base model;
    # group 2: weight methods (LoRA) change it, so they run after, each alone, then are unloaded
    groups = [[m for m in methods if m not in ("peft-lora", "lora")]] + [[m] for m in methods
                                                                        if m in ("peft-lora", "lora")]
    for group in groups:
        if not group:
            continue
        steps, mods, keep, trainable = {}, {}, [], {}
        for name in group:
            if name == "forward":
                steps[name], mods[name], trainable[name] = forward_step, [base], 0
                continue
            torch.manual_seed(args.seed)
            if name.startswith("peft-"):
                module = (_peft_pt(base, T) if name == "peft-pt" else _peft_lora(base)).train()
            else:
                module = _ours(base, name, T, tok).train()
            params = [p for p in module.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=1e-3)
            steps[name] = _train_step(module, opt, batch, ours=not name.startswith("peft-"))
            mods[name], trainable[name] = [module], sum(p.numel() for p in params)
            keep.append((name, module))
        res = _interleaved(steps, device, args.steps, args.warmup, mods)
        for name in group:
            results[name] = dict(res[name], trainable=trainable[name])
        for name, module in keep:
            if name in ("peft-lora", "lora", "peft-pt"):
                _unwrap(module if name != "lora" else module.base)
        del steps, mods, keep
        gc.collect()
    rows = []
    for name in methods:
        r = dict(results[name], method=name)
        r["tokens_per_s"] = B * S / (r["ms"] / 1000)
        log(f"  {name:10s} {r['ms']:10.1f} ms/step  {r['peak_bytes'] / 2**30:7.3f} GiB")
        rows.append(r)
    ref = {r["method"]: r for r in rows}
    for r in rows:
        for key, other in (("x_forward", "forward"), ("x_peft_pt", "peft-pt")):
            if other in ref:
                r[key] = r["ms"] / ref[other]["ms"]
        if "peft-pt" in ref:
            r["mem_x_peft_pt"] = r["peak_bytes"] / ref["peft-pt"]["peak_bytes"]
    return rows


def _squad(split, n, seed):
    from .data import sources

    examples = sources.load_split(split)
    random.Random(seed).shuffle(examples)
    return examples[: max(n * 2, n + 16)]  # spares for the ones that don't fit


def bench_real(base, tok, args, device, log) -> dict:
    from transformers import DataCollatorForSeq2Seq

    from .collate import length_grouped_batches, pad_batch
    from .data import format as fmt

    B, T = args.batch_size, args.prompt_length
    encoded = []
    for ex in _squad("squad/train", args.real_examples, args.seed):
        enc = fmt.encode_train(ex, tok, args.seq_len)
        if enc is not None:
            encoded.append(enc)
        if len(encoded) == args.real_examples:
            break
    n_batches = len(encoded) // B
    if n_batches == 0:
        raise ValueError(f"real part: only {len(encoded)} SQuAD examples fit in --seq-len {args.seq_len}; "
                         f"need at least --batch-size {B}")
    encoded = encoded[: n_batches * B]
    real_tokens = sum(len(e["input_ids"]) for e in encoded)
    label_tokens = sum(sum(1 for x in e["labels"] if x != -100) for e in encoded)
    lengths = [len(e["input_ids"]) for e in encoded]
    pad_id = special_ids(tok)[0]
    out = {"examples": len(encoded), "batches": n_batches, "real_tokens": real_tokens,
           "label_tokens": label_tokens, "mean_len": real_tokens / max(len(encoded), 1)}

    # ours: length-grouped batches, right padding, the fast loss
    torch.manual_seed(args.seed)
    ours = _ours(base, args.real_method, T, tok).train()
    opt_o = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-3)
    grouped = length_grouped_batches(lengths, B, args.seed)
    collate_ours = lambda b: pad_batch([encoded[i] for i in b], pad_id, side="right")
    # PEFT prompt tuning: random order, transformers' padding collator (prompt learning leaves the base as is)
    torch.manual_seed(args.seed)
    peft_model = _peft_pt(base, T).train()
    opt_p = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    order = list(range(len(encoded)))
    random.Random(args.seed).shuffle(order)
    rand_batches = [order[i:i + B] for i in range(0, n_batches * B, B)]
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100, return_tensors="pt")
    collate_peft = lambda b: collator([{"input_ids": encoded[i]["input_ids"], "labels": encoded[i]["labels"]}
                                       for i in b])
    pipes = {"ours": (_train_step(ours, opt_o, None, ours=True), grouped, collate_ours),
             "peft_pt": (_train_step(peft_model, opt_p, None, ours=False), rand_batches, collate_peft)}
    for step, batches, collate in pipes.values():  # warm-up
        step(_dev_batch(collate(batches[0]), device))
    _sync(device)
    secs, padded = {k: 0.0 for k in pipes}, {k: 0 for k in pipes}
    for i in range(n_batches):  # lockstep: one batch of each in turn (fair under shared-machine load)
        for k, (step, batches, collate) in pipes.items():
            t0 = time.perf_counter()
            batch = _dev_batch(collate(batches[i]), device)
            step(batch)
            _sync(device)
            secs[k] += time.perf_counter() - t0
            padded[k] += batch["input_ids"].numel()
    for k in pipes:
        out[k] = {"seconds": secs[k], "tokens_per_s": real_tokens / secs[k], "padded_tokens": padded[k],
                  "pad_fraction": 1 - real_tokens / padded[k]}
    out["ours"]["method"] = args.real_method
    for k, label in (("ours", f"ours ({args.real_method})"), ("peft_pt", "peft-pt")):
        log(f"  {label:14s} {out[k]['tokens_per_s']:9.1f} real tokens/s, pad {out[k]['pad_fraction']:.1%}")
    _unwrap(peft_model)
    del ours, peft_model, opt_o, opt_p, pipes
    gc.collect()
    out["x_peft_pt"] = out["ours"]["tokens_per_s"] / out["peft_pt"]["tokens_per_s"]
    return out


def bench_generate(base, tok, args, device, log) -> dict:
    from .collate import pad_batch
    from .data import format as fmt

    B, T, M = args.batch_size, args.prompt_length, args.max_new_tokens
    prompts = []
    for ex in _squad("squad/heldout", args.gen_examples, args.seed):
        ids = fmt.encode_eval(ex, tok, args.seq_len + M, M)
        if ids is not None:
            prompts.append(ids)
        if len(prompts) == args.gen_examples:
            break
    prompts.sort(key=len)  # the same length-sorted batches for both
    batches = [prompts[i:i + B] for i in range(0, len(prompts), B)]
    pad_id = special_ids(tok)[0]
    out = {"examples": len(prompts), "batches": len(batches), "max_new_tokens": M,
           "prompt_tokens": sum(map(len, prompts))}

    torch.manual_seed(args.seed)
    ours = _ours(base, "pt", T, tok).eval()

    def gen_ours(batch):
        new = ours.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=M, eos_token_id=None,
                            pad_token_id=pad_id)
        return new.numel()

    torch.manual_seed(args.seed)
    peft_model = _peft_pt(base, T).eval()

    def gen_peft(batch):
        with torch.no_grad():
            seq = peft_model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      max_new_tokens=M, min_new_tokens=M, do_sample=False, pad_token_id=pad_id)
        return seq[:, batch["input_ids"].shape[1]:].numel()

    # ours pads on the right (generate left-aligns itself); HF generate needs left padding
    pipes = {"ours": (gen_ours, "right"), "peft_pt": (gen_peft, "left")}
    collate = lambda b, side: _dev_batch(pad_batch([{"input_ids": p} for p in b], pad_id, side), device)
    for fn, side in pipes.values():  # warm-up
        fn(collate(batches[0], side))
    secs, made = {k: 0.0 for k in pipes}, {k: 0 for k in pipes}
    for b in batches:  # lockstep, as in the real-data part
        for k, (fn, side) in pipes.items():
            _sync(device)
            t0 = time.perf_counter()
            made[k] += fn(collate(b, side))
            _sync(device)
            secs[k] += time.perf_counter() - t0
    for k in pipes:
        out[k] = {"seconds": secs[k], "examples_per_s": len(prompts) / secs[k],
                  "new_tokens_per_s": made[k] / secs[k], "new_tokens": made[k]}
    log(f"  ours (pt)      {out['ours']['new_tokens_per_s']:9.1f} new tokens/s")
    log(f"  peft-pt        {out['peft_pt']['new_tokens_per_s']:9.1f} new tokens/s")
    _unwrap(peft_model)
    del ours, peft_model
    out["x_peft_pt"] = out["ours"]["new_tokens_per_s"] / out["peft_pt"]["new_tokens_per_s"]
    return out


# ---- report -------------------------------------------------------------------------------------
def to_markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [f"Command: `{result['command']}`", "",
             f"Device: {result['device']}; dtype {cfg['dtype']}; versions: "
             + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), ""]
    if result.get("synthetic"):
        lines += [f"Synthetic batch: {cfg['batch_size']} x {cfg['seq_len']} tokens + {cfg['prompt_length']} "
                  f"prompt tokens, loss on the last half; median of {cfg['steps']} steps after "
                  f"{cfg['warmup']} warm-up, methods interleaved round-robin (LoRA after, alone). "
                  f"Memory: {result['synthetic'][0]['memory']}.", "",
                  "| method | ms/step (median) | min ms | tokens/s | peak memory (GiB) | x forward | x PEFT PT (time) "
                  "| x PEFT PT (memory) | trainable |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["synthetic"]:
            f = lambda k, fmt="{:.2f}": fmt.format(r[k]) if k in r else "-"
            lines.append(f"| {r['method']} | {r['ms']:.1f} | {min(r['ms_all']):.1f} | {r['tokens_per_s']:.0f} | "
                         f"{r['peak_bytes'] / 2**30:.3f} | {f('x_forward')} | {f('x_peft_pt')} | "
                         f"{f('mem_x_peft_pt')} | {r['trainable']:,} |")
        lines.append("")
    if result.get("real"):
        r = result["real"]
        lines += [f"Real data: {r['examples']} SQuAD training examples (mean {r['mean_len']:.0f} tokens, "
                  f"{r['label_tokens']} answer tokens), {r['batches']} batches of {cfg['batch_size']}, one pass, the two "
                  "pipelines in lockstep (a batch of each in turn), collation included.", "",
                  "| pipeline | seconds | real tokens/s | padding | x PEFT PT |", "|---|---:|---:|---:|---:|",
                  f"| ours ({r['ours']['method']}, length-grouped, fast loss) | {r['ours']['seconds']:.2f} | "
                  f"{r['ours']['tokens_per_s']:.0f} | {r['ours']['pad_fraction']:.1%} | {r['x_peft_pt']:.2f} |",
                  f"| PEFT prompt tuning (DataCollatorForSeq2Seq, random order) | {r['peft_pt']['seconds']:.2f} | "
                  f"{r['peft_pt']['tokens_per_s']:.0f} | {r['peft_pt']['pad_fraction']:.1%} | 1.00 |", ""]
    if result.get("generate"):
        r = result["generate"]
        lines += [f"Generation: {r['examples']} held-out SQuAD questions, batches of {cfg['batch_size']}, greedy, "
                  f"{r['max_new_tokens']} new tokens each (EOS ignored), same batches for both.", "",
                  "| generate | seconds | examples/s | new tokens/s | x PEFT PT |", "|---|---:|---:|---:|---:|",
                  f"| ours (PtmoeModel.generate, pt) | {r['ours']['seconds']:.2f} | {r['ours']['examples_per_s']:.2f} | "
                  f"{r['ours']['new_tokens_per_s']:.1f} | {r['x_peft_pt']:.2f} |",
                  f"| PEFT prompt tuning generate | {r['peft_pt']['seconds']:.2f} | "
                  f"{r['peft_pt']['examples_per_s']:.2f} | {r['peft_pt']['new_tokens_per_s']:.1f} | 1.00 |", ""]
    return "\n".join(lines)


def run(args) -> int:
    from .models import load_base_model

    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    for m in methods:
        if m not in ALL_METHODS:
            raise ValueError(f"--methods: unknown {m!r}; known: {', '.join(ALL_METHODS)}")
    for p in parts:
        if p not in PARTS:
            raise ValueError(f"--parts: unknown {p!r}; known: {', '.join(PARTS)}")
    torch.manual_seed(args.seed)
    base, tok = load_base_model(args.model, DTYPES[dtype_name])
    base.to(device)
    for p in base.parameters():
        p.requires_grad_(False)
    if args.compile:
        backbone = getattr(base, base.base_model_prefix)
        backbone.compile(dynamic=True)
    result = {"command": "ptmoe bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"]
              else "ptmoe bench " + " ".join(getattr(args, "_argv", [])),
              "device": _device_desc(device), "versions": _versions(),
              "config": {"model": args.model, "dtype": dtype_name, "batch_size": args.batch_size,
                         "seq_len": args.seq_len, "prompt_length": args.prompt_length, "steps": args.steps,
                         "warmup": args.warmup, "compile": args.compile,
                         "attn_implementation": getattr(base.config, "_attn_implementation", None)}}
    log(f"[bench] {args.model} on {result['device']}, {dtype_name}")
    if "synthetic" in parts:
        log("[bench] synthetic batch")
        result["synthetic"] = bench_synthetic(base, tok, args, device, methods, log)
    if "real" in parts:
        log("[bench] real data (SQuAD train)")
        result["real"] = bench_real(base, tok, args, device, log)
    if "generate" in parts:
        log("[bench] generation (SQuAD held-out)")
        result["generate"] = bench_generate(base, tok, args, device, log)
    md = to_markdown(result)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=2))
        (out / "bench.md").write_text(md + "\n")
    return 0
