"""The small interface every method sits behind.

A method is a config dataclass plus a builder. Prompt methods build a `PromptModule`
(returns each example's own soft prompt from its input embeddings); weight methods
(LoRA, HydraLoRA, full fine-tuning) change the base model instead.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


@dataclass
class MethodConfig:
    """Fields shared by every method; each method's dataclass adds its own."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config"):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)} for method "
                             f"{cls.method_name!r}; known: {', '.join(sorted(names))}")
        cfg = cls(**d)
        cfg.validate(where)
        return cfg

    def for_loading(self) -> "MethodConfig":
        """The config that builds a module of the same shapes for saved weights to be loaded into.
        Itself, unless building reads outside files (ATTEMPT's source prompts, saved in the adapter)."""
        return self

    def for_counting(self) -> "MethodConfig":
        """The config that builds a module with the same trainable parameters without reading files."""
        return self.for_loading()

    def validate(self, where: str = "config") -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(v, int) or isinstance(v, bool)):
                raise ValueError(f"{where}: option {f.name!r} must be an integer, got {v!r}")
            if f.name in ("num_tokens", "experts", "rank", "r", "heads", "top_k") and isinstance(v, int) and v < 1:
                raise ValueError(f"{where}: option {f.name!r} must be >= 1, got {v}")
            kind = f.type.__name__ if isinstance(f.type, type) else str(f.type)  # "float", "str | None", ...
            if kind.startswith("float") and not (v is None and "None" in kind):
                if isinstance(v, str):  # '5e-5': YAML 1.1 reads it as a string
                    try:
                        v = float(v)
                    except ValueError:
                        pass
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"{where}: option {f.name!r} must be a finite number, got {v!r}")
                setattr(self, f.name, v)
            elif kind.startswith("str") and not (v is None and "None" in kind) and not isinstance(v, str):
                raise ValueError(f"{where}: option {f.name!r} must be a string, got {v!r}")
            elif kind == "bool" and not isinstance(v, bool):
                raise ValueError(f"{where}: option {f.name!r} must be true or false, got {v!r}")
            elif kind.startswith("list") and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise ValueError(f"{where}: option {f.name!r} must be a list of strings, got {v!r}")


class PromptModule(nn.Module):
    """Maps (input embeddings, attention mask) to one soft prompt per example: [B, T, H]."""

    num_tokens: int  # length of the prompt it returns

    def __init__(self):
        super().__init__()
        self.last_routing: dict[str, torch.Tensor] | None = None  # probs/weights of the last call
        self.aux_loss: torch.Tensor | None = None  # e.g. load balancing, added by the trainer

    def forward(self, input_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class MethodSpec:
    name: str
    config_cls: type
    kind: str  # "prompt" or "weights"
    build: Callable[..., Any]  # prompt: build(cfg, embeddings, tokenizer) -> PromptModule
    #                            weights: build(cfg, base_model) -> base_model (modified)
    num_params: Callable[[Any, Any], int] | None = None  # formula(cfg, base_config), for checks


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    spec.config_cls.method_name = spec.name
    REGISTRY[spec.name] = spec
    return spec


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real (non-pad) positions, in fp32: [B, S, H] -> [B, H]."""
    m = mask.to(torch.float32).unsqueeze(-1)
    return (x.float() * m).sum(1) / m.sum(1).clamp_min(1.0)


def init_embeddings(embeddings: nn.Embedding, num_tokens: int, tokenizer=None, init_text: str | None = None,
                    generator: torch.Generator | None = None, min_distinct: int = 0) -> torch.Tensor:
    """T x H embeddings of the init text (repeated or cut to T tokens), else of T sampled vocabulary tokens.
    min_distinct > 0 (an SVD init of rank R): the text is never repeated; its repeated tokens and the
    positions after it take distinct sampled tokens until min(min_distinct, T) rows differ, so E has that rank."""
    vocab = embeddings.weight.shape[0]
    if init_text == "@task":  # the presets' placeholder (recipes.presets.task_init_text), never text to embed
        raise ValueError("init_text: '@task' is replaced by the training task's instruction in `ptmoe train`; "
                         "pass the text itself here")
    if init_text and tokenizer is not None:
        ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError("init_text: tokenises to nothing")
        if min_distinct > 0:
            ids = _distinct_fill(ids[:num_tokens], num_tokens, min(min_distinct, num_tokens), vocab, generator)
        else:
            ids = (ids * (num_tokens // len(ids) + 1))[:num_tokens]
    else:
        # sample from the first 5000 ids: ordinary tokens in BPE vocabularies (as PT papers do)
        ids = torch.randint(0, min(5000, vocab), (num_tokens,), generator=generator).tolist()
    with torch.no_grad():  # through the module, so scaled embeddings (Gemma) come out as the model sees them
        return embeddings(torch.tensor(ids, device=embeddings.weight.device)).float().cpu().clone()


def _distinct_fill(ids: list[int], num_tokens: int, need: int, vocab: int, generator) -> list[int]:
    """ids (at most T) -> T ids with at least `need` distinct: the positions after the text, and where
    those are too few some repeats in it, take sampled ordinary tokens (first 5000 ids) not in the text."""
    fresh = [i for i in torch.randperm(min(5000, vocab), generator=generator).tolist() if i not in set(ids)]
    out, short = [], need - len(set(ids)) - (num_tokens - len(ids))  # repeats that must be replaced
    for i in ids:
        if i in out and short > 0:
            i, short = fresh.pop(), short - 1
        out.append(i)
    while len(out) < num_tokens:
        out.append(fresh.pop())
    return out


def svd_factors(E: torch.Tensor, rank: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """E (T x H) = U S V^T; A = U_R S_R^1/2 (T x R), B = S_R^1/2 V_R^T (R x H).
    Ranks above min(T, H) are padded with small random directions."""
    U, S, Vh = torch.linalg.svd(E, full_matrices=False)
    k = min(rank, S.shape[0])
    root = S[:k].sqrt()
    A = U[:, :k] * root
    B = root[:, None] * Vh[:k]
    if rank > k:
        scale = float(root.mean()) * 1e-2
        A = torch.cat([A, torch.randn(E.shape[0], rank - k, generator=generator) * scale], 1)
        B = torch.cat([B, torch.randn(rank - k, E.shape[1], generator=generator) * scale], 0)
    return A.contiguous(), B.contiguous()


def linear_shapes(config, target_modules) -> list[tuple[int, int]]:
    """(in, out) of every targeted projection of a Llama/Gemma-style decoder, from its config."""
    H = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or H // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    I = config.intermediate_size
    per_layer = {"q_proj": (H, q), "k_proj": (H, kv), "v_proj": (H, kv), "o_proj": (q, H),
                 "gate_proj": (H, I), "up_proj": (H, I), "down_proj": (I, H)}
    unknown = [t for t in target_modules if t not in per_layer]
    if unknown:
        raise ValueError(f"target_modules: cannot count parameters of {unknown}")
    return [per_layer[t] for t in target_modules] * config.num_hidden_layers
