"""Building blocks the prompt methods share: masked pooling of the input embeddings, the embedding
initialisation of soft prompts (from text or sampled tokens, SVD factors), and LoRA shapes from a config."""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real (non-pad) positions, in fp32: [B, S, H] -> [B, H]."""
    m = mask.to(torch.float32).unsqueeze(-1)
    return (x.float() * m).sum(1) / m.sum(1).clamp_min(1.0)


def init_embeddings(
    embeddings: nn.Embedding,
    num_tokens: int,
    tokenizer=None,
    init_text: str | None = None,
    generator: torch.Generator | None = None,
    min_distinct: int = 0,
) -> torch.Tensor:
    """T x H embeddings of the init text (repeated or cut to T tokens), else of T sampled vocabulary tokens.
    min_distinct > 0 (an SVD init of rank R): the text is never repeated; its repeated tokens and the
    positions after it take distinct sampled tokens until min(min_distinct, T) rows differ, so E has that rank."""
    vocab = embeddings.weight.shape[0]
    if init_text == "@task":  # the presets' placeholder (config.presets.task_init_text), never text to embed
        raise ValueError(
            "init_text: '@task' is replaced by the training task's instruction in `ptmoe train`; "
            "pass the text itself here"
        )
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
    per_layer = {
        "q_proj": (H, q),
        "k_proj": (H, kv),
        "v_proj": (H, kv),
        "o_proj": (q, H),
        "gate_proj": (H, I),
        "up_proj": (H, I),
        "down_proj": (I, H),
    }
    unknown = [t for t in target_modules if t not in per_layer]
    if unknown:
        raise ValueError(f"target_modules: cannot count parameters of {unknown}")
    return [per_layer[t] for t in target_modules] * config.num_hidden_layers
