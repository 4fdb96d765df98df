"""Shared pieces of the benchmark: timing, memory, the PEFT contenders and ours, one training step."""

from __future__ import annotations

import dataclasses
import gc
import platform
import random
import statistics
import time

import torch

from ..adapted import AdaptedModel
from ..data import sources
from ..methods import WEIGHTS, get_method

# options the benchmark sets where a method has them (prompt length from --prompt-length)
OURS_OPTIONS = {"r": 8, "alpha": 16.0}


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
    # slow or optional: only the measurement that reports or compares with it loads it
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    cur = peak = 0
    for _, n in events:
        cur += n
        peak = max(peak, cur)
    return peak


def saved_for_backward(fn, skip=()) -> tuple:
    """(fn(), bytes of the tensors autograd keeps for backward while fn() runs), each storage counted once
    and the storages of the tensors in `skip` (weights, say) left out."""
    skipped = {t.untyped_storage().data_ptr() for t in skip}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skipped:
            seen.setdefault(ptr, t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def _versions() -> dict:
    # slow or optional: only the measurement that reports or compares with it loads it
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def _device_desc(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cap = torch.backends.cpu.get_cpu_capability()
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {cap}"


def _peft_pt(base, T):
    # slow or optional: only the measurement that reports or compares with it loads it
    from peft import PromptTuningConfig, get_peft_model

    return get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=T))


def _peft_lora(base):
    # slow or optional: only the measurement that reports or compares with it loads it
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        base,
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"]),
    )


def _ours(base, method, T, tok):
    """Our method by name; `ptmoe@hidden:2` (any routed method) sets its router_input, so the router
    pass's cost stands beside the paper's input in one run."""
    method, _, router_input = method.partition("@")
    spec = get_method(method)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    opts = {k: v for k, v in {**OURS_OPTIONS, "num_tokens": T}.items() if k in fields}
    if router_input:
        if "router_input" not in fields:
            raise ValueError(f"--methods: {method}@{router_input}: {method} has no router")
        opts["router_input"] = router_input
    return AdaptedModel(base, method, opts, tokenizer=tok)


PEFT = {"peft-pt": _peft_pt, "peft-lora": lambda base, T: _peft_lora(base)}  # PEFT's own, for comparison
FORWARD = "forward"  # the frozen model's forward pass alone: the floor


def changes_base(name: str) -> bool:
    """Contenders that change the base model's weights run alone, after the others, and are removed."""
    if name in PEFT or name == FORWARD:
        return name == "peft-lora"
    return get_method(name.partition("@")[0]).changes == WEIGHTS


def _train_step(module, opt, fixed_batch, ours: bool):
    def step(batch=None):
        batch = fixed_batch if batch is None else batch
        if ours:
            loss = module(batch["input_ids"], batch["attention_mask"], batch["labels"]).loss  # aux terms included
        else:
            loss = module(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).loss
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
        out[name] = {
            "ms": 1000 * statistics.median(times[name]),
            "ms_all": [round(1000 * t, 2) for t in times[name]],
            "peak_bytes": int(peak),
            "memory": how,
        }
    return out


def _prepared_rows(split, n, seed):

    sources.prepare([split.split("/")[0]], log=lambda *a: None)  # fetched on first use, then cached
    examples = sources.load_split(split)
    random.Random(seed).shuffle(examples)
    return examples[: max(n * 2, n + 16)]  # spares for the ones that don't fit
