"""What a router reads of each input: one pooled vector per row, [B, H] fp32 (docs/routing.md).

`router_input: embeddings` is the paper's (and SMoP's) input: the frozen input embeddings. There the
task is a minor direction: a linear probe finds it, but a router that has to discover the split itself
(the paper's, k-means, growth's new rows) does not. `router_input: hidden:L` reads the frozen model's
hidden states after decoder layer L instead, from a prompt-free pass of the first L layers over the
same tokens (what X-LoRA, IDPG and L2P do with a full extra pass; here only L layers run, about L / layers
of a prefill). `router_pool` pools the positions the router may read (`inputs.context_mask`): `mean`, `last` (the
last readable token, which has attended to all the others) or `tail:N` (the mean over the last N: the
question and the chat template's end, the same text in a training window and an evaluation prompt).

The pass runs under no_grad on the frozen model: the router's input does not depend on anything trained.
Every path that routes (training, evaluation, generation, mixed batches, both server engines, lm-eval,
growth's replay store) reads through `RouterInput`, via the adapter's `router_features`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..inputs import position_ids_from_mask

POOLS = ("mean", "last", "tail:N")
EMBEDDINGS = "embeddings"


class _LayerReached(Exception):
    """Raised by the capture hook: the layers after L need not run."""


@dataclass(frozen=True)
class RouterInput:
    layer: int = 0  # 0: the input embeddings; L >= 1: the hidden states after decoder layer L
    pool: str = "mean"

    @classmethod
    def parse(cls, spec: str, pool: str = "mean", where: str = "method options") -> "RouterInput":
        """'embeddings' | 'hidden:L' (L >= 1) and a pooling; a bad value is a one-line error naming it."""
        head, _, n = str(pool).partition(":")
        if pool not in ("mean", "last") and not (head == "tail" and n.isdigit() and int(n) >= 1):
            raise ValueError(f"{where}: option 'router_pool' must be one of {POOLS} (N >= 1), got {pool!r}")
        if spec == EMBEDDINGS:
            return cls(0, pool)
        name, _, layer = str(spec).partition(":")
        if name != "hidden" or not layer.isdigit() or int(layer) < 1:
            raise ValueError(
                f"{where}: option 'router_input' must be 'embeddings' or 'hidden:L' with a decoder layer L >= 1, "
                f"got {spec!r}"
            )
        return cls(int(layer), pool)

    @property
    def kind(self) -> str:
        """A name for what is read, stored beside vectors read this way (growth's replay store)."""
        return f"{EMBEDDINGS if self.layer == 0 else f'hidden:{self.layer}'}/{self.pool}"

    def __call__(self, lm, input_embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """input_embeds [B, S, H] (the frozen embeddings of the tokens), mask [B, S] the readable positions."""
        states = input_embeds if self.layer == 0 else hidden_after(lm, input_embeds, mask, self.layer)
        return pool_states(states, mask, self.pool)

    def check_base(self, lm, where: str = "method options") -> None:
        if self.layer > 0 and self.layer > len(decoder_layers(lm)):
            raise ValueError(
                f"{where}: option 'router_input' hidden:{self.layer}: the base model has "
                f"{len(decoder_layers(lm))} decoder layers"
            )


def pool_states(states: torch.Tensor, mask: torch.Tensor, pool: str) -> torch.Tensor:
    """[B, S, H] -> [B, H] fp32 over the positions where mask is 1 (padded positions may hold anything).
    `tail:N`: the mean over each row's last N readable positions."""
    if pool.startswith("tail:"):
        from_end = mask.long().flip(-1).cumsum(-1).flip(-1)  # 1 at the last readable position, 2 before it...
        mask = mask * (from_end <= int(pool[5:])).to(mask.dtype)
    m = mask.bool().unsqueeze(-1)
    x = torch.where(m, states.float(), 0.0)
    if pool == "last":
        last = (mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)
        return x[torch.arange(x.shape[0], device=x.device), last]
    return x.sum(1) / m.float().sum(1).clamp_min(1.0)


def decoder_of(lm) -> torch.nn.Module:
    return lm.get_decoder() if hasattr(lm, "get_decoder") else lm.model


def decoder_layers(lm) -> torch.nn.ModuleList:
    layers = getattr(decoder_of(lm), "layers", None)
    if layers is None:
        raise ValueError(f"router_input hidden:L: {type(lm).__name__} has no decoder .layers to read")
    return layers


def hidden_after(lm, input_embeds: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """The hidden states after decoder layer `layer` (1-based): see `hidden_states_after`."""
    return hidden_states_after(lm, input_embeds, mask, [layer])[layer]


@torch.no_grad()
def hidden_states_after(lm, input_embeds: torch.Tensor, mask: torch.Tensor, layers: list[int]) -> dict:
    """{L: the hidden states [B, S, H] after decoder layer L (1-based)} from the frozen decoder run on the
    embeddings without any prompt, positions counted over the real tokens as inference counts them. Only the
    first max(layers) layers run: hooks keep their outputs and the last one stops the pass."""
    if lm is None:
        raise ValueError("router_input hidden:L needs the base model: build the adapter with attach(cfg, lm)")
    blocks = decoder_layers(lm)
    if not all(1 <= L <= len(blocks) for L in layers):
        raise ValueError(f"router_input hidden:{max(layers)}: the base model has {len(blocks)} decoder layers")
    captured, last = {}, max(layers)

    def keep(L):
        def hook(_module, _args, output):
            captured[L] = output[0] if isinstance(output, tuple) else output
            if L == last:
                raise _LayerReached

        return hook

    handles = [blocks[L - 1].register_forward_hook(keep(L)) for L in sorted(set(layers))]
    mask = mask.long()
    try:
        decoder_of(lm)(
            inputs_embeds=input_embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
        )
    except _LayerReached:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured
