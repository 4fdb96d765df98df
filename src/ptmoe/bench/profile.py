"""The profile part: one batch of our generate and of PEFT's under `torch.profiler`, read for what
bounds a decode step. Per contender: host operations per new token, host syncs (each one waits for
the device), and on CUDA the device's busy time within the call, the idle gaps between kernels
(time the device waited for the host) and the top kernels; on a CPU the top operations."""

from __future__ import annotations

import time

from torch.profiler import ProfilerActivity, profile

from .common import _sync, _unwrap
from .real import generation_contenders

SYNC_OPS = ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize")
GAP_US = 50  # an idle stretch of the device longer than this counts as a host gap


def _busy_and_gaps(kernels: list[tuple[float, float]]) -> tuple[float, float, list[float]]:
    """Kernels' (start, end) in µs -> (busy µs: their union, span µs, the idle gaps between them)."""
    kernels.sort()
    busy, gaps, end = 0.0, [], None
    for s, e in kernels:
        if end is None or s > end:
            if end is not None:
                gaps.append(s - end)
            busy += e - s
            end = e
        elif e > end:
            busy += e - end
            end = e
    return busy, (end - kernels[0][0]) if kernels else 0.0, gaps


def _read(prof, device, new_tokens: int, top: int) -> dict:
    events = prof.events()
    host_ops = sum(1 for e in events if e.name.startswith("aten::") and e.device_type.name == "CPU")
    syncs = sum(1 for e in events if e.name in SYNC_OPS)
    r = {"host_ops_per_token": host_ops / new_tokens, "syncs": syncs}
    table = prof.key_averages()
    if device.type == "cuda":
        kernels = [
            (e.time_range.start, e.time_range.end)
            for e in events
            if e.device_type.name == "CUDA" and e.time_range.end > e.time_range.start
        ]
        busy, span, gaps = _busy_and_gaps(kernels)
        long = [g for g in gaps if g > GAP_US]
        r.update(
            kernels=len(kernels),
            device_busy=busy / span if span else 0.0,
            gap_ms=sum(long) / 1000,
            gaps=len(long),
            top=[
                (e.key, e.self_device_time_total / 1000, e.count)
                for e in sorted(table, key=lambda e: -e.self_device_time_total)[:top]
                if e.self_device_time_total > 0
            ],
        )
    else:
        r["top"] = [
            (e.key, e.self_cpu_time_total / 1000, e.count)
            for e in sorted(table, key=lambda e: -e.self_cpu_time_total)[:top]
        ]
    return r


def bench_profile(base, tok, args, device, log, top: int = 8) -> dict:
    batches, pipes, collate, out, peft_model = generation_contenders(base, tok, args, device)
    batch = batches[-1]  # the longest prompts
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out["profiled_batch"] = len(batch)
    for k, (fn, side) in pipes.items():
        inputs = collate(batch, side)
        fn(inputs)  # warm-up (compiles where the path compiles)
        _sync(device)
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()
            made = fn(inputs)
            _sync(device)
            ms = 1000 * (time.perf_counter() - t0)
        out[k] = dict(_read(prof, device, made, top), ms=ms, new_tokens=made)
        r = out[k]
        busy = f", device busy {r['device_busy']:.0%}, {r['gaps']} gaps > {GAP_US} µs" if "device_busy" in r else ""
        log(f"  {k:14s} {ms:9.1f} ms, {r['host_ops_per_token']:.0f} host ops/token, {r['syncs']} syncs{busy}")
    _unwrap(peft_model)
    return out
