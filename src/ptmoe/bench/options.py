"""Speed options of the frozen backbone that `ptmoe bench` compares. Each changes the base model that
every contender shares (the frozen forward, PEFT and ours alike), so a run with an option against a
run without it says what the option is worth, and the ratios to PEFT stay like for like.

* ``--attn``: the attention implementation (transformers' ``sdpa``, PyTorch's fused kernels, flash
  where the mask allows; or ``eager``, plain matmuls).
* ``--compile``: ``torch.compile`` of the backbone (its layers; the LM head and our loss stay eager).
* ``--liger``: Liger Kernel's Triton kernels for RMSNorm, SwiGLU and RoPE (CUDA only). Our loss is
  already a fused linear + cross-entropy (`loss.py`), so Liger's cross-entropy is left out; PEFT keeps
  the usual transformers loss.
* ``--gen-cache``: the KV cache of our generate (`generation.py`); PEFT's generate is unchanged.
"""

from __future__ import annotations

import importlib.util

from ..generation import CACHES

ATTN = ("sdpa", "eager")


def add_arguments(p) -> None:
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (all methods)")
    p.add_argument("--attn", choices=ATTN, default=None, help="attention implementation (default: the model's)")
    p.add_argument(
        "--liger",
        action="store_true",
        help="Liger Kernel's RMSNorm, SwiGLU and RoPE kernels in the backbone (all methods; CUDA only)",
    )
    p.add_argument(
        "--gen-cache",
        choices=["auto", *CACHES],
        default="auto",
        help="our generate's KV cache (auto: static with compiled steps on CUDA, dynamic elsewhere)",
    )


def check(args, device) -> None:
    """Before any model loads: an option this device or install cannot run is a one-line error."""
    if args.liger and device.type != "cuda":
        raise ValueError(f"--liger: Liger Kernel runs Triton kernels on CUDA only; this run is on {device.type}")
    if args.liger and importlib.util.find_spec("liger_kernel") is None:
        raise ValueError("--liger: liger-kernel is not installed (pip install liger-kernel; see benchmarks/RESULTS.md)")


def apply(base, args, log) -> None:
    """Change the shared base model as the options ask (after it is on its device)."""
    if args.attn:
        base.set_attn_implementation(args.attn)
    if args.liger:
        # the optional liger-kernel package, for `--liger` only
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

        if base.config.model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:  # Liger would skip it silently
            raise ValueError(f"--liger: Liger Kernel has no kernels for model type {base.config.model_type!r}")
        _apply_liger_kernel_to_instance(
            model=base, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
        )
        log("[bench] Liger Kernel: RMSNorm, SwiGLU, RoPE")
    if args.compile:
        compile_backbone(base)


def compile_backbone(base) -> None:
    """torch.compile the backbone in place (dynamic shapes: real batches vary in length)."""
    getattr(base, base.base_model_prefix).compile(dynamic=True)


def generate_cache(args) -> str | None:
    return None if args.gen_cache == "auto" else args.gen_cache
