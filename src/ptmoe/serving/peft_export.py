"""A ptmoe LoRA adapter in PEFT's own folder format (adapter_config.json + adapter_model.safetensors),
which vLLM's LoRA requests load. Minimal on purpose: `ptmoe export --format peft` (interop) is the
user-facing export; this only writes what the vllm engine needs, from the loaded model."""
from __future__ import annotations

from pathlib import Path

from ..fsutil import atomic_dir


def export_peft_lora(model, folder) -> Path:
    """`model`: a loaded PtmoeModel of method lora (its .base is PEFT's PeftModel)."""
    if model.method != "lora" or not hasattr(model.base, "peft_config"):
        raise ValueError(f"only LoRA adapters export to PEFT's format (this is {model.method!r})")
    with atomic_dir(folder) as tmp:
        model.base.save_pretrained(str(tmp), safe_serialization=True)
    return Path(folder)
