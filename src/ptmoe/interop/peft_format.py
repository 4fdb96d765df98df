"""Hugging Face PEFT adapter folders, both ways.

export_peft: a ptmoe `pt` adapter becomes a PEFT PROMPT_TUNING adapter (its T x H prompt is PEFT's
`prompt_embeddings`), a `lora` adapter a PEFT LoRA adapter (ptmoe's LoRA is PEFT's: same tensors).
Both are written with PEFT's own config classes and load with `PeftModel.from_pretrained`.
read_peft: a PEFT prompt-tuning or LoRA folder (made by PEFT or by export_peft) read as a ptmoe method
(`pt` or `lora`), its options and how to fill its tensors in; `AdaptedModel.from_pretrained` builds the
model from them, so eval / generate / serve / compare take it like any ptmoe adapter. (This module
never imports the model class: the model imports it.)
PEFT folders carry no embedding fingerprint: the base check compares the recorded base model name
(when there is one) and every tensor's shape with the base model's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..fsutil import atomic_dir
from ..methods import REGISTRY
from ..model_card import HF_IDS, write_model_card
from ..persistence import CONFIG_NAME, WEIGHTS_NAME, AdapterError, read_adapter_config

# what PEFT cannot express, per method
NOT_IN_PEFT = {
    "ptmoe": "its prompt is built per input by a router over low-rank experts; PEFT prompt tuning has one fixed prompt",
    "dpt": "its prompt is factorised as A B; export would have to multiply it out (train `pt` to export)",
    "smop": "it routes each input to one of several prompts; PEFT prompt tuning has one fixed prompt",
    "attempt": "its prompt is an input-dependent attention mix of source prompts; PEFT has no such method",
    "hydralora": "its LoRA has routed B heads per input; PEFT LoRA has one B per module",
    "ft": "it is a full fine-tuned model, not an adapter: save it with transformers instead",
}
# LoRA options ptmoe's `lora` method has; any other option set away from PEFT's default is refused
LORA_FIELDS = {"r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "target_modules"}
LORA_IGNORED = {
    "peft_type",
    "task_type",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "peft_version",
    "auto_mapping",
    "init_lora_weights",
    "eva_config",
    "corda_config",
    "loftq_config",
    "lora_ga_config",
    "kasa_config",
    "megatron_core",
}


def is_peft_folder(directory) -> bool:
    path = Path(directory) / CONFIG_NAME
    try:
        return "peft_type" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def _base_name(name: str | None) -> str:
    """Comparable name of a base model: HF id for packaged names, last path part, lower case."""
    name = HF_IDS.get(name or "", name or "")
    return name.rstrip("/").split("/")[-1].lower()


# ---- export -------------------------------------------------------------------------------------------
def export_peft(adapter_dir, out_dir, overwrite: bool = False) -> Path:
    """Write the PEFT form of a ptmoe adapter folder into out_dir (never over an existing one unless asked)."""
    # peft is slow to import; only export and PEFT LoRA folders need it
    from peft import LoraConfig, PromptTuningConfig

    meta = read_adapter_config(adapter_dir)
    method, where = meta["method"], Path(adapter_dir) / CONFIG_NAME
    peft_type = REGISTRY[method].peft_type if method in REGISTRY else None
    if peft_type is None:
        grown = [s["from"] for s in meta.get("lineage", []) if s.get("experts_added")]
        raise AdapterError(
            f"{where}: method {method!r} cannot be exported to PEFT: {NOT_IN_PEFT.get(method, 'unknown method')}"
            + (f"; it was also grown from {grown[-1]} (lineage in adapter_config.json)" if grown else "")
        )
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise AdapterError(f"{out}: already exists; choose another folder or pass --overwrite")
    state = load_file(str(Path(adapter_dir) / WEIGHTS_NAME))
    base = meta["base_model"]
    name = HF_IDS.get(base.get("name"), base.get("name")) or None
    opts = meta["config"]
    if peft_type == "PROMPT_TUNING":
        prompt = state["prompt"]
        config = PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=prompt.shape[0],
            token_dim=prompt.shape[1],
            num_transformer_submodules=1,
            base_model_name_or_path=name,
        )
        tensors = {"prompt_embeddings": prompt.float().contiguous()}
    else:
        config = LoraConfig(
            r=opts["r"],
            lora_alpha=opts["alpha"],
            lora_dropout=opts["dropout"],
            target_modules=list(opts["target_modules"]),
            task_type="CAUSAL_LM",
            base_model_name_or_path=name,
        )
        tensors = {k: v.contiguous() for k, v in state.items()}  # already PEFT's keys (get_peft_model_state_dict)
    with atomic_dir(out) as tmp:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        write_model_card(tmp, {**meta, "exported_from": str(adapter_dir)}, peft_type=str(config.peft_type.value))
    return out


# ---- import -------------------------------------------------------------------------------------------
def read_peft(directory, base) -> tuple[str, dict, Callable]:
    """A PEFT PROMPT_TUNING or LORA folder checked against `base`: (method, options, fill), where
    fill(model) loads the folder's tensors into the model built with that method and those options."""
    directory = Path(directory)
    where = directory / CONFIG_NAME
    cfg = json.loads(where.read_text())
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        pickled = (directory / "adapter_model.bin").is_file()
        raise AdapterError(
            f"{weights}: not found"
            + (
                " (adapter_model.bin is a pickle: not loaded; re-save it with safe_serialization=True)"
                if pickled
                else ""
            )
        )
    state = load_file(str(weights))  # safetensors only: never a pickle
    if cfg.get("task_type") not in (None, "CAUSAL_LM"):
        raise AdapterError(f"{where}: task_type {cfg.get('task_type')!r}; ptmoe loads CAUSAL_LM adapters")
    want, have = cfg.get("base_model_name_or_path"), getattr(base.config, "_name_or_path", "")
    if want and have and _base_name(want) != _base_name(have):
        raise AdapterError(f"{where}: adapter was made for base model {want!r}, but this base model is {have!r}")
    peft_type = cfg["peft_type"]
    if peft_type == "PROMPT_TUNING":
        return _prompt_tuning(cfg, state, base, where)
    if peft_type == "LORA":
        return _lora(cfg, state, where)
    raise AdapterError(f"{where}: peft_type {peft_type!r} is not supported; ptmoe loads PROMPT_TUNING and LORA")


def check_mixable(directory) -> None:
    """Only a PEFT prompt-tuning folder joins batches that mix several prompt adapters."""
    kind = json.loads((Path(directory) / CONFIG_NAME).read_text()).get("peft_type")
    if kind != "PROMPT_TUNING":
        raise AdapterError(
            f"{Path(directory) / CONFIG_NAME}: only prompt methods can be mixed in one batch (this is PEFT {kind})"
        )


def _prompt_tuning(cfg, state, base, where):
    if (cfg.get("num_transformer_submodules") or 1) != 1:
        raise AdapterError(
            f"{where}: num_transformer_submodules {cfg['num_transformer_submodules']}: "
            "only decoder-only prompt tuning (1) is supported"
        )
    prompt = state.get("prompt_embeddings")
    T, H = cfg["num_virtual_tokens"], base.get_input_embeddings().weight.shape[1]
    if prompt is None or tuple(prompt.shape) != (T, H) or cfg.get("token_dim") not in (None, H):
        shape = None if prompt is None else tuple(prompt.shape)
        raise AdapterError(
            f"{where}: prompt_embeddings of shape {shape} (token_dim {cfg.get('token_dim')}) "
            f"do not fit {T} virtual tokens of this base model's hidden size {H}"
        )

    def fill(model):
        with torch.no_grad():
            model.prompt_module.prompt.copy_(prompt.float())

    return "pt", {"num_tokens": T}, fill


def _lora(cfg, state, where):
    # peft is slow to import; only export and PEFT LoRA folders need it
    from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict

    defaults = LoraConfig().to_dict()
    for key, value in cfg.items():
        if key in LORA_FIELDS or key in LORA_IGNORED:
            continue
        default = defaults.get(key)
        if value != default and not (
            value in (None, False, [], {}, "none") and default in (None, False, [], {}, "none")
        ):
            raise AdapterError(f"{where}: LoRA option {key}={value!r} is not supported by ptmoe's lora method")
    targets = cfg.get("target_modules")
    if not isinstance(targets, list):
        raise AdapterError(f"{where}: target_modules {targets!r}: ptmoe needs a list of module names")
    opts = {
        "r": cfg["r"],
        "alpha": cfg["lora_alpha"],
        "dropout": cfg.get("lora_dropout", 0.0),
        "target_modules": sorted(targets),
    }

    def fill(model):
        peft_model = model.adapter.peft_model  # the method's PEFT wrapper of the base model
        expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if expected != got:
            diff = sorted(set(expected) ^ set(got)) or sorted(k for k in expected if expected[k] != got[k])
            raise AdapterError(
                f"{where}: tensors do not fit this base model with r={cfg['r']} on {sorted(targets)}: "
                f"e.g. {diff[:2]} (file {[got.get(k) for k in diff[:2]]}, model {[expected.get(k) for k in diff[:2]]})"
            )
        set_peft_model_state_dict(peft_model, state)

    return "lora", opts, fill
