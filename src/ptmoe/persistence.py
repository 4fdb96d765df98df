"""Adapter folders: adapter_config.json (format version, method, its options, the base model's identity)
and adapter_model.safetensors (whatever the method saves). Never a pickle; writes are atomic.

A folder that transformers' plain Trainer saved (checkpoint-N/, or `save_model`'s output_dir) holds the
same adapter in one file instead: model.safetensors, the Trainer's name for what `AdaptedModel.state_dict()`
returns (the adapter's tensors under `adapter.`, and its config as UTF-8 bytes under CONFIG_KEY). Both
read alike here."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .fsutil import atomic_dir
from .methods import AdapterStateError
from .model_card import write_model_card

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
TRAINER_WEIGHTS = "model.safetensors"  # what transformers' Trainer writes for a model it does not know
CONFIG_KEY = "ptmoe.adapter_config"  # in that file: the adapter_config.json text, as a uint8 tensor
PREFIX = "adapter."  # in that file: the adapter's own tensors
FORMAT_VERSION = 1  # what the keys of each method's tensors mean; bump (and convert) if one changes


class AdapterError(ValueError):
    pass


def base_identity(lm: nn.Module) -> dict:
    """Name, sizes and a fingerprint of the embedding matrix (dtype-independent: rounded to bf16)."""
    emb = lm.get_input_embeddings().weight.detach()
    rows = emb[:: max(1, emb.shape[0] // 4096)].to(torch.bfloat16).cpu().contiguous()
    digest = hashlib.sha256(rows.view(torch.int16).numpy().tobytes()).hexdigest()[:16]
    return {
        "name": str(getattr(lm.config, "_name_or_path", "")),
        "hidden_size": int(emb.shape[1]),
        "vocab_size": int(emb.shape[0]),
        "embedding_fingerprint": digest,
    }


def read_adapter_config(directory: str | os.PathLike) -> dict:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file() and (Path(directory) / TRAINER_WEIGHTS).is_file():
        return _trainer_file(directory)[0]
    if not path.is_file():
        raise AdapterError(f"{path}: adapter config not found{_run_folder_hint(directory)}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return _checked(meta, path, directory)


def _run_folder_hint(directory) -> str:
    """Where a `ptmoe train` run folder (or a Trainer's output_dir) was given: the adapters inside it."""
    inside = [p.name for p in sorted(Path(directory).glob("*")) if (p / CONFIG_NAME).is_file()]
    inside.sort(key=lambda n: (n not in ("best", "final"), n))
    if not inside:
        return ""
    return f" ({directory} is a run folder: its adapters are {', '.join(inside[:4])}; e.g. --adapter {Path(directory) / inside[0]})"


def _checked(meta: dict, path, directory) -> dict:
    for key in ("method", "config", "base_model"):
        if key not in meta:
            raise AdapterError(f"{path}: field {key!r} missing")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise AdapterError(
            f"{path}: format_version {version!r} is newer than this ptmoe reads ({FORMAT_VERSION}): upgrade ptmoe"
        )
    if path.name == CONFIG_NAME and not (Path(directory) / WEIGHTS_NAME).is_file():
        raise AdapterError(f"{Path(directory) / WEIGHTS_NAME}: adapter weights not found")
    return meta


def adapter_meta(model, extra: dict | None = None) -> dict:
    """What adapter_config.json records of an AdaptedModel: method, options, base model, size, lineage."""
    return {
        "method": model.method,
        "config": model.config.to_dict(),
        "base_model": model.identity,
        "num_trainable": model.num_trainable(),
        **model.saved_with,
        **(extra or {}),
    }


def trainer_state(meta: dict, tensors: dict) -> dict:
    """The adapter as one state dict (`AdaptedModel.state_dict()`): its tensors under PREFIX, each stored
    once (tied weights of a full fine-tune share memory, which safetensors refuses), and its config."""
    seen, out = set(), {}
    for k, v in tensors.items():
        if v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            out[PREFIX + k] = v
    text = json.dumps({"format_version": FORMAT_VERSION, **meta}).encode()
    out[CONFIG_KEY] = torch.frombuffer(bytearray(text), dtype=torch.uint8)
    return out


def split_trainer_state(state: dict, where) -> tuple[dict, dict]:
    """trainer_state's dict -> (its checked config, the adapter's tensors)."""
    try:
        meta = json.loads(bytes(state[CONFIG_KEY].to(torch.uint8).tolist()).decode())
    except (KeyError, ValueError) as e:
        raise AdapterError(f"{where}: no readable adapter config ({e})") from None
    tensors = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    return _checked(meta, Path(where), Path(where).parent), tensors


def load_trainer_state(model, state: dict, where="state dict"):
    """trainer_state's dict into `model` (an AdaptedModel of the same method on the same base model)."""
    meta, tensors = split_trainer_state(state, where)
    if meta["method"] != model.method:
        raise AdapterError(f"{where}: a {meta['method']!r} adapter, and this model's is {model.method!r}")
    model.check_base(meta, where)
    load_state(model.adapter, tensors, where)
    return nn.modules.module._IncompatibleKeys([], [])


def _trainer_file(directory) -> tuple[dict, dict]:
    path = Path(directory) / TRAINER_WEIGHTS
    try:
        state = load_file(str(path))  # safetensors only: never a pickle
    except Exception as e:
        raise AdapterError(f"{path}: cannot read safetensors ({e})") from None
    if CONFIG_KEY not in state:
        raise AdapterError(
            f"{path}: a whole model's weights, not an adapter (no {Path(directory) / CONFIG_NAME}){_run_folder_hint(directory)}"
        )
    return split_trainer_state(state, path)


def check_base(meta: dict, have: dict, where) -> None:
    want = meta["base_model"]
    keys = ("hidden_size", "vocab_size", "embedding_fingerprint")
    if any(want.get(k) != have[k] for k in keys):
        desc = lambda d: (
            f"{d.get('name') or '?'} (hidden {d.get('hidden_size')}, vocab {d.get('vocab_size')}, "
            f"fingerprint {d.get('embedding_fingerprint')})"
        )
        raise AdapterError(
            f"{where}: adapter was trained on base model {desc(want)}, but this base model is {desc(have)}"
        )


def write_adapter(directory, meta: dict, adapter, files: dict | None = None) -> Path:
    """adapter_config.json and the adapter's tensors, atomically (temp dir, then rename); `files`:
    name -> (tensors, metadata) of further safetensors files written beside them (a replay store)."""
    with atomic_dir(directory) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2))
        adapter.save_weights(tmp / WEIGHTS_NAME)
        for name, (tensors, metadata) in (files or {}).items():
            save_file(tensors, str(tmp / name), metadata=metadata)
        write_model_card(tmp, meta, final_dir=directory)
    return Path(directory)


def load_weights(directory, adapter) -> None:
    """The saved tensors into `adapter`; a file that is not safetensors or does not fit names the file."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file() and (Path(directory) / TRAINER_WEIGHTS).is_file():
        return load_state(adapter, _trainer_file(directory)[1], Path(directory) / TRAINER_WEIGHTS)
    try:
        state = load_file(str(path))  # safetensors only: never a pickle
    except Exception as e:
        raise AdapterError(f"{path}: cannot read safetensors ({e})") from None
    load_state(adapter, state, path)


def load_state(adapter, state: dict, path) -> None:
    try:
        adapter.load_adapter_state(state)
    except AdapterStateError as e:
        raise AdapterError(f"{path}: {e}") from None
