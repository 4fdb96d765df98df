"""Greedy decoding with the KV cache. The prefill takes the built inputs (prompt included), so a soft
prompt is computed and injected once; decode steps feed one token per row.

Two caches (`cache=`): "dynamic" (transformers' DynamicCache, grown by one position a step; eager) and
"static" (transformers' StaticCache, preallocated, so every decode step has the same shapes; on CUDA
its decode steps run through `torch.compile` in "reduce-overhead" mode, i.e. replayed CUDA graphs).
The default (None) is "dynamic" on every device: every evaluation decodes through the default, so it is
the path whose tokens are checked everywhere; the compiled static path becomes the CUDA default only
once its tokens are shown equal on a GPU (`scripts/gpu-bench.sh`; benchmarks/RESULTS.md keeps the
record). Both give the same greedy tokens on CPU. No decode step waits for the device: the attention
mask is one preallocated tensor (sliced, never rebuilt), positions advance on the device, and whether
every row has ended is asked only every few steps on CUDA (tokens past the last EOS are trimmed after).
`decode_loop` is the loop itself, shared with the server's sampling decoder (serving/decode.py)."""

from __future__ import annotations

import inspect

import torch
from transformers import CompileConfig, DynamicCache, StaticCache

CACHES = ("dynamic", "static")
STATIC_BUCKET = 256  # static cache lengths are rounded up to this, so few shapes are compiled


def cache_argument(lm) -> str:
    """The name the model's forward takes its KV cache by: `cache` from transformers 5.2x on, where
    `past_key_values` is deprecated (a FutureWarning on every call), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(type(lm).forward).parameters else "past_key_values"


def default_cache(device) -> str:
    # dynamic everywhere (module docstring); on a CPU each step is compute-bound anyway
    return "dynamic"


def check_cache(cache: str | None) -> None:
    if cache is not None and cache not in CACHES:
        raise ValueError(f"cache: unknown {cache!r}; known: {', '.join(CACHES)} (or None: per device)")


def left_align(input_ids, attention_mask=None):
    """Pads first (left padding), whatever padding side the batch came with."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    order = torch.sort(attention_mask, dim=1, stable=True).indices
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def _static_cache(lm, batch: int, length: int, like: torch.Tensor) -> StaticCache:
    """One StaticCache kept on the model and reset for each call, so compiled decode steps (CUDA
    graphs) see the same cache tensors every time; a new one only for a new batch size or a longer
    (bucketed) length."""
    length = -(-length // STATIC_BUCKET) * STATIC_BUCKET
    key = (batch, length, like.dtype, like.device)
    held = getattr(lm, "_ptmoe_static_cache", None)
    if held is not None and held[0] == key:
        held[1].reset()
        return held[1]
    cache = StaticCache(config=lm.config, max_cache_len=length)
    lm._ptmoe_static_cache = (key, cache)
    return cache


def _compiled_step(lm):
    """The model's call compiled for decode steps (CUDA graphs via "reduce-overhead"), made once per
    model: transformers' own `get_compiled_call` where it has one."""
    if hasattr(lm, "get_compiled_call"):
        return lm.get_compiled_call(CompileConfig(fullgraph=False, mode="reduce-overhead"))
    if not hasattr(lm, "_ptmoe_compiled_call"):
        lm._ptmoe_compiled_call = torch.compile(lm.__call__, mode="reduce-overhead")
    return lm._ptmoe_compiled_call


class CachedDecoder:
    """The KV-cached steps every decoder here shares: a prefill of the built inputs (so a soft prompt
    is computed and injected once), then one token per row per step, positions following the real
    tokens. `logits` are the last position's, [B, V], after the prefill and after each `step`.
    `max_new_tokens` sizes the preallocated mask (and the static cache, which needs it); without it
    the mask grows by doubling. The static cache is used eagerly unless `compile` (default: on CUDA)."""

    def __init__(
        self,
        lm,
        inputs_embeds,
        attention_mask,
        position_ids,
        max_new_tokens: int | None = None,
        cache: str | None = "dynamic",
        compile: bool | None = None,
    ):
        check_cache(cache)
        B, L = attention_mask.shape
        cache = cache or default_cache(inputs_embeds.device)
        if cache == "static" and max_new_tokens is None:
            raise ValueError("cache='static' needs max_new_tokens (the cache is preallocated)")
        self.lm, self.length = lm, L
        if cache == "static":
            self.cache = _static_cache(lm, B, L + max_new_tokens, inputs_embeds)
            capacity = self.cache.max_cache_len  # static shapes: the mask always spans the whole cache
        else:
            self.cache = DynamicCache(config=lm.config)
            capacity = L + (max_new_tokens or 16)
        self.static = cache == "static"
        compile = inputs_embeds.device.type == "cuda" if compile is None else compile
        self.call = _compiled_step(lm) if self.static and compile else lm
        # one mask for every step: the prompt's, then ones (future positions are hidden by causality)
        self.mask = torch.cat([attention_mask, attention_mask.new_ones(B, capacity - L)], 1)
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
        self.next_pos = position_ids[:, -1:] + 1

    def _step_mask(self) -> torch.Tensor:
        if self.static:
            return self.mask
        if self.length + 1 > self.mask.shape[1]:  # past the preallocated length: double it
            self.mask = torch.cat([self.mask, torch.ones_like(self.mask)], 1)
        return self.mask[:, : self.length + 1]  # a view: nothing is copied

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed tokens [B] (one per row); returns the new last logits."""
        mask = self._step_mask()
        if self.call is not self.lm:  # CUDA graphs: the previous step's outputs may be overwritten now
            torch.compiler.cudagraph_mark_step_begin()
        out = self.call(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=self.next_pos,
            use_cache=True,
            **self.cache_kw,
        )
        self.length += 1
        self.next_pos = self.next_pos + 1
        self.logits = out.logits[:, -1]
        return self.logits


def _ended_columns(new: torch.Tensor, eos_t: torch.Tensor) -> int:
    """How many columns today's loop keeps: up to the first one after which every row has had an EOS."""
    ended = torch.isin(new, eos_t).cummax(1).values.all(0)
    return int(ended.nonzero()[0, 0]) + 1 if bool(ended.any()) else new.shape[1]


def decode_loop(decoder: CachedDecoder, next_tokens, max_new_tokens: int, ended) -> torch.Tensor:
    """The decode loop every decoder here shares: each step `next_tokens(logits) -> [B]` chooses a token per
    row on the device, then `ended(step, tokens) -> bool` (called every step, the last one too) says whether
    every row has finished; unless it has, or the limit is reached, the tokens are fed.
    -> the chosen tokens [B, steps run]."""
    new = []
    for step in range(max_new_tokens):
        tok = next_tokens(decoder.logits)
        new.append(tok)
        if ended(step, tok) or step == max_new_tokens - 1:
            break
        decoder.step(tok)
    return torch.stack(new, 1)


@torch.no_grad()
def greedy_decode(
    lm,
    inputs_embeds,
    attention_mask,
    position_ids,
    max_new_tokens: int,
    eos_token_id=None,
    pad_token_id: int = 0,
    cache: str | None = None,
    check_every: int | None = None,
) -> torch.Tensor:
    """[B, n] new tokens (n <= max_new_tokens), pad after a row's EOS; stops when every row has ended.
    "Every row ended?" is read every `check_every` steps (default: 8 on CUDA, where reading it waits
    for the device; 1 elsewhere), so up to check_every - 1 steps more may run; their columns are
    trimmed, so the result is the same."""
    eos = sorted(set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or [])))
    B, device = inputs_embeds.shape[0], inputs_embeds.device
    if max_new_tokens <= 0:
        return torch.zeros(B, 0, dtype=torch.long, device=device)
    decoder = CachedDecoder(lm, inputs_embeds, attention_mask, position_ids, max_new_tokens, cache)
    check_every = check_every or (8 if device.type == "cuda" else 1)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    eos_t = torch.tensor(eos, device=device, dtype=torch.long)
    pad = torch.full((B,), pad_token_id, dtype=torch.long, device=device)

    def ended(step: int, tok: torch.Tensor) -> bool:
        if not len(eos) or step == max_new_tokens - 1:  # the last step: nothing left to stop
            return False
        done.logical_or_(torch.isin(tok, eos_t))
        return (step + 1) % check_every == 0 and bool(done.all())

    out = decode_loop(decoder, lambda logits: torch.where(done, pad, logits.argmax(-1)), max_new_tokens, ended)
    return out[:, : _ended_columns(out, eos_t)] if len(eos) else out
