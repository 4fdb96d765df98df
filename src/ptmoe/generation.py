"""Greedy decoding with the KV cache. The prefill takes the built inputs (prompt included), so a soft
prompt is computed and injected once; decode steps feed one token per row."""

from __future__ import annotations

import torch
from transformers import DynamicCache


def left_align(input_ids, attention_mask=None):
    """Pads first (left padding), whatever padding side the batch came with."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    order = torch.sort(attention_mask, dim=1, stable=True).indices
    return input_ids.gather(1, order), attention_mask.gather(1, order)


@torch.no_grad()
def greedy_decode(
    lm, inputs_embeds, attention_mask, position_ids, max_new_tokens: int, eos_token_id=None, pad_token_id: int = 0
) -> torch.Tensor:
    """[B, n] new tokens (n <= max_new_tokens), pad after a row's EOS; stops when every row has ended."""
    eos = sorted(set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or [])))
    B, device = inputs_embeds.shape[0], inputs_embeds.device
    cache = DynamicCache(config=lm.config)
    out = lm(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    mask, next_pos = attention_mask, position_ids[:, -1:] + 1
    done = torch.zeros(B, dtype=torch.bool, device=device)
    eos_t = torch.tensor(eos, device=device, dtype=torch.long)
    new = []
    for step in range(max_new_tokens):
        tok = out.logits[:, -1].argmax(-1)
        tok = torch.where(done, torch.full_like(tok, pad_token_id), tok)
        new.append(tok)
        if len(eos_t):
            done |= torch.isin(tok, eos_t)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(B, 1)], 1)
        out = lm(
            input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=True
        )
        next_pos = next_pos + 1
    return torch.stack(new, 1) if new else torch.zeros(B, 0, dtype=torch.long, device=device)
