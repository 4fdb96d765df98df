"""What the base model is given: each example's soft prompt prepended to its input embeddings.

The sequence is [prompt, input (with its own padding)], the attention mask is extended, prompt
positions get labels -100, and position ids are the running count of real tokens, so left and right
padding both give each real token the position it has when the example stands alone. Rows of one
batch may use different (mixable) adapters. `context_mask` is the one rule for what an
input-dependent prompt may read.
"""

from __future__ import annotations

import torch


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def context_mask(attention_mask: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The one rule for input-dependent prompts: they read only what the model is given at inference,
    the real tokens before the row's first labelled position (the answer it is asked to produce).
    Labels are aligned with the input (label i is token i). Without labels: every real token."""
    if labels is None:
        return attention_mask
    answered = (labels != -100).long().cumsum(-1) > 0
    return attention_mask * (~answered).to(attention_mask.dtype)


def prepend_prompt(embeds, attention_mask, labels, prompt, prompt_mask=None):
    """-> inputs_embeds, attention_mask, position_ids, labels with `prompt` [B, T, H] in front (None: as is).
    `prompt_mask` [B, T] marks the real prompt positions of rows with shorter prompts (default: all)."""
    if prompt is None:
        return embeds, attention_mask, position_ids_from_mask(attention_mask), labels
    if prompt_mask is None:
        prompt_mask = attention_mask.new_ones(prompt.shape[:2])
    x = torch.cat([prompt.to(embeds.dtype), embeds], 1)
    mask = torch.cat([prompt_mask, attention_mask], 1)
    if labels is not None:
        labels = torch.cat([labels.new_full(prompt.shape[:2], -100), labels], 1)
    return x, mask, position_ids_from_mask(mask), labels


def mixed_prompts(adapters, embeds, given_mask, adapter_names, row_sources=None):
    """Each row's prompt from its own adapter (`adapter_names`, one per row; `row_sources` each row's data
    set, or None): -> prompt [B, T, H] fp32 left-aligned (the first position of every row stays a real
    token), prompt mask [B, T]."""
    if len(adapter_names) != embeds.shape[0]:
        raise ValueError(f"adapter_names: {len(adapter_names)} names for a batch of {embeds.shape[0]}")
    unknown = sorted(set(adapter_names) - set(adapters))
    if unknown:
        raise ValueError(f"adapter_names: not loaded: {unknown}; loaded: {sorted(adapters)}")
    parts = {}
    for name in sorted(set(adapter_names)):
        idx = [i for i, n in enumerate(adapter_names) if n == name]
        rows = torch.tensor(idx, device=embeds.device)
        sources = None if row_sources is None else [row_sources[i] for i in idx]
        p = adapters[name].soft_prompt(embeds[rows], given_mask[rows], sources)
        if p is None:
            raise ValueError(f"adapter_names: adapter {name!r} makes no prompt: it cannot share a batch")
        parts[name] = (rows, p)
    B, _, H = embeds.shape
    T = max(p.shape[1] for _, p in parts.values())
    prompt = embeds.new_zeros(B, T, H, dtype=torch.float32)
    pmask = given_mask.new_zeros(B, T)
    for rows, p in parts.values():
        prompt[rows, : p.shape[1]] = p.float()
        pmask[rows, : p.shape[1]] = 1
    return prompt, pmask
