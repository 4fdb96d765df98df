"""The one place that picks the device and the base model's dtype (train, eval, generate, bench)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
_told: set = set()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """bf16 matmuls in hardware (AMX or AVX-512 BF16); elsewhere bf16 is far slower than fp32 on CPU."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def resolve_dtype(name: str, device: torch.device, log=None) -> torch.dtype:
    """`auto`: bf16 on CUDA, and on a CPU with bf16 hardware (amx_bf16 / avx512_bf16 flags), else fp32.
    Otherwise the named dtype (bf16, fp32, fp16). The choice of `auto` is reported once per process."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"dtype: must be auto or one of {', '.join(DTYPES)}, got {name!r}")
        return DTYPES[name]
    if device.type == "cuda":
        chosen, why = "bf16", "CUDA"
    elif cpu_has_fast_bf16():
        chosen, why = "bf16", "the CPU has amx_bf16 or avx512_bf16"
    else:
        chosen, why = "fp32", "the CPU has neither amx_bf16 nor avx512_bf16"
    if (device.type, chosen) not in _told:
        _told.add((device.type, chosen))
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(f"[ptmoe] dtype auto -> {chosen} ({why})")
    return DTYPES[chosen]
