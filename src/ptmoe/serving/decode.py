"""Batched KV-cached decoding with per-row sampling, for the server's hf engine.

The same steps as `PtmoeModel.generate` (left-aligned inputs, `model.build_inputs` injects each
row's prompt once at prefill, then `generation.CachedDecoder`'s KV-cached steps), so a row at
temperature 0 gets exactly generate's tokens. What it adds: temperature / top-p sampling with a
per-row generator (a request's `seed` makes its own tokens reproducible whatever it is batched
with), per-row token limits, and a callback per step that can stop a row early (stop strings,
a cancelled request).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..generation import CachedDecoder, left_align


@dataclass
class Sampling:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


def sample_next(logits: torch.Tensor, params: Sampling, generator: torch.Generator | None) -> int:
    """One token from a row's logits: argmax at temperature 0, else nucleus sampling."""
    if params.temperature <= 0:
        return int(logits.argmax(-1))
    probs = torch.softmax(logits.float() / params.temperature, -1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = sorted_p.cumsum(-1) - sorted_p >= params.top_p
        sorted_p[drop] = 0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


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
    EOS tokens are passed to on_token too, then the row stops."""
    input_ids, attention_mask = left_align(input_ids, attention_mask)
    B, device = input_ids.shape[0], input_ids.device
    x, mask, pos, _ = model.build_inputs(input_ids, attention_mask, adapter_names=adapter_names)
    decoder = CachedDecoder(model.lm, x, mask, pos)
    gens = [None if p.temperature <= 0 else make_generator(p.seed, device) for p in params]
    done = [p.max_tokens <= 0 for p in params]
    eos = set(eos_ids)
    pad = 0
    step = 0
    while not all(done):
        logits = decoder.logits
        toks = []
        for i in range(B):
            if done[i]:
                toks.append(pad)
                continue
            t = sample_next(logits[i], params[i], gens[i])
            toks.append(t)
            stop = on_token(i, t)
            done[i] = stop or t in eos or step + 1 >= params[i].max_tokens
        step += 1
        if all(done):
            break
        decoder.step(torch.tensor(toks, device=device))
