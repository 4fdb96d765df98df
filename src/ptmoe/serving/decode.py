"""Batched KV-cached decoding with per-row sampling, for the server's hf engine.

The same steps as `AdaptedModel.generate` (left-aligned inputs, `model.build_inputs` injects each
row's prompt once at prefill, then `generation.decode_loop` over `CachedDecoder`'s KV-cached steps), so
a row at temperature 0 gets exactly generate's tokens. What it adds: temperature / top-p sampling with a
per-row generator (a request's `seed` makes its own tokens reproducible whatever it is batched
with), per-row token limits, and a callback per token that can stop a row early (stop strings,
a cancelled request). Tokens are chosen on the device; each step reads the batch's tokens back once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..generation import CachedDecoder, decode_loop, left_align


@dataclass
class Sampling:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


def sample_row(logits: torch.Tensor, params: Sampling, generator: torch.Generator) -> torch.Tensor:
    """One row's token [1] from its logits [V], nucleus sampling at the row's temperature, on the device
    (nothing is read back). Per row, because each row draws from its own seeded generator."""
    probs = torch.softmax(logits.float() / params.temperature, -1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        sorted_p.masked_fill_(sorted_p.cumsum(-1) - sorted_p >= params.top_p, 0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator)


def make_generator(seed: int | None, device) -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


@torch.no_grad()
def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    params: list[Sampling],
    on_token: Callable[[int, int], bool],
    eos_ids: list[int],
    adapter_names=None,
) -> None:
    """Decode every row until its limit, an EOS token, or `on_token(row, token)` returns True (stop).
    EOS tokens are passed to on_token too, then the row stops. Each step's tokens are chosen on the device
    and read back once, together (for the callbacks: streaming and stop strings)."""
    input_ids, attention_mask = left_align(input_ids, attention_mask)
    device = input_ids.device
    live = [p.max_tokens > 0 for p in params]
    if not any(live):
        return
    x, mask, pos, _ = model.build_inputs(input_ids, attention_mask, adapter_names=adapter_names)
    decoder = CachedDecoder(model.lm, x, mask, pos)
    gens = [None if p.temperature <= 0 else make_generator(p.seed, device) for p in params]
    sampled = [i for i, g in enumerate(gens) if g is not None]
    eos = set(eos_ids)
    pad = torch.zeros((), dtype=torch.long, device=device)

    def next_tokens(logits: torch.Tensor) -> torch.Tensor:
        tok = logits.argmax(-1)
        rows = [i for i in sampled if live[i]]
        if rows:
            drawn = torch.cat([sample_row(logits[i], params[i], gens[i]) for i in rows])
            tok = tok.index_copy(0, torch.tensor(rows, device=device), drawn)
        return torch.where(torch.tensor(live, device=device), tok, pad)  # a row that has ended is fed pad

    def ended(step: int, tok: torch.Tensor) -> bool:
        for i, t in enumerate(tok.tolist()):  # the one read of the step
            if live[i]:
                stop = on_token(i, t)
                live[i] = not (stop or t in eos or step + 1 >= params[i].max_tokens)
        return not any(live)

    decode_loop(decoder, next_tokens, max(p.max_tokens for p in params), ended)
