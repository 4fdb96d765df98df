"""Greedy decoding with the KV cache. The prefill takes the built inputs (prompt included), so a soft
prompt is computed and injected once; decode steps feed one token per row."""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache


def cache_argument(lm) -> str:
    """The name the model's forward takes its KV cache by: `cache` from transformers 5.2x on, where
    `past_key_values` is deprecated (a FutureWarning on every call), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(type(lm).forward).parameters else "past_key_values"


def left_align(input_ids, attention_mask=None):
    """Pads first (left padding), whatever padding side the batch came with."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    order = torch.sort(attention_mask, dim=1, stable=True).indices
    return input_ids.gather(1, order), attention_mask.gather(1, order)


class CachedDecoder:
    """The KV-cached steps every decoder here shares: a prefill of the built inputs (so a soft prompt
    is computed and injected once), then one token per row per step, positions following the real
    tokens. `logits` are the last position's, [B, V], after the prefill and after each `step`."""

    def __init__(self, lm, inputs_embeds, attention_mask, position_ids):
        self.lm, self.cache = lm, DynamicCache(config=lm.config)
        self.cache_kw = {cache_argument(lm): self.cache}
        out = lm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **self.cache_kw,
        )
        self.logits = out.logits[:, -1]
        self.mask, self.next_pos = attention_mask, position_ids[:, -1:] + 1

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed tokens [B] (one per row); returns the new last logits."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], 1)
        out = self.lm(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.next_pos,
            use_cache=True,
            **self.cache_kw,
        )
        self.next_pos = self.next_pos + 1
        self.logits = out.logits[:, -1]
        return self.logits


@torch.no_grad()
def greedy_decode(
    lm, inputs_embeds, attention_mask, position_ids, max_new_tokens: int, eos_token_id=None, pad_token_id: int = 0
) -> torch.Tensor:
    """[B, n] new tokens (n <= max_new_tokens), pad after a row's EOS; stops when every row has ended."""
    eos = sorted(set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or [])))
    B, device = inputs_embeds.shape[0], inputs_embeds.device
    decoder = CachedDecoder(lm, inputs_embeds, attention_mask, position_ids)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    eos_t = torch.tensor(eos, device=device, dtype=torch.long)
    new = []
    for step in range(max_new_tokens):
        tok = decoder.logits.argmax(-1)
        tok = torch.where(done, torch.full_like(tok, pad_token_id), tok)
        new.append(tok)
        if len(eos_t):
            done |= torch.isin(tok, eos_t)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        decoder.step(tok)
    return torch.stack(new, 1) if new else torch.zeros(B, 0, dtype=torch.long, device=device)
