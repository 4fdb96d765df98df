"""ATTEMPT (Asai et al. 2022): attention over frozen source prompts plus a trainable target prompt.

The input embeddings (real tokens only) and every prompt are max-pooled over tokens. A small
attention module (bias-free down projection H -> d, SiLU, up projection d -> H, LayerNorm, as in
the ATTEMPT code) maps the pooled input to a query; a_j = softmax_j(<query, pool(P_j)> / temperature)
over the S source prompts and the target prompt; each example's prompt is
    P = P_target + sum_j a_j P_j   (j over all S + 1 prompts).

Source prompts are `pt` adapters saved by ptmoe, one prompt-tuning run per source task, as the
ATTEMPT paper trains them (`ptmoe compare` trains and stores one per training source: an entry's
`source_runs`). A config with no source prompt is an error. `num_random_sources` adds prompts of
sampled vocabulary embeddings instead: placeholders for unit tests and for loading a saved adapter
(its sources are saved inside it), not the method as published. Sources are buffers: saved inside
the adapter (self-contained) but never trained.

Trainable parameters: T*H (target) + 2*H*d (down, up) + 2*H (LayerNorm) [+ d + H with attn_bias].
Llama-3.2-1B (H = 2048), T = 40, d = 1: 81,920 + 4,096 + 4,096 = 90,112 (the paper's "90k").
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from .base import MethodConfig, MethodSpec, PromptCall, PromptModule, Routing, init_embeddings, register

NO_SOURCE = (
    "attempt: no source prompt: set method_options.source_prompts to trained `pt` adapter folders "
    "(in a compare config, an entry's 'source_runs: {}' trains one pt run per training source)"
)


@dataclass
class ATTEMPTConfig(MethodConfig):
    num_tokens: int = 40
    source_prompts: list[str] = field(default_factory=list)  # folders of trained `pt` adapters
    num_random_sources: int = 0  # placeholder sources of sampled embeddings (tests, loading); not ATTEMPT
    attn_dim: int = 1  # d of the down/up projection (the ATTEMPT code uses 100-300 on T5)
    attn_bias: bool = False  # the ATTEMPT code's projections have no bias
    temperature: float | None = None  # None: sqrt(H)
    init_text: str | None = None  # target prompt init; else T sampled vocabulary tokens

    def validate(self, where="config"):
        super().validate(where)
        if self.num_random_sources < 0:
            raise ValueError(f"{where}: option 'num_random_sources' must be >= 0, got {self.num_random_sources}")
        if self.attn_dim < 1:
            raise ValueError(f"{where}: option 'attn_dim' must be >= 1, got {self.attn_dim}")
        if isinstance(self.source_prompts, str):
            self.source_prompts = [self.source_prompts]
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"{where}: option 'temperature' must be > 0, got {self.temperature}")

    def for_loading(self):
        """Same shapes without reading the source adapters: the saved buffer replaces them."""
        return dataclasses.replace(
            self, source_prompts=[], num_random_sources=self.num_random_sources + len(self.source_prompts)
        )

    def for_counting(self):
        """Source prompts are buffers: one placeholder has the same trainable parameters."""
        return dataclasses.replace(self, source_prompts=[], num_random_sources=1)


def load_source_prompt(directory, num_tokens: int, hidden: int) -> torch.Tensor:
    """The [T, H] prompt of a `pt` adapter saved by ptmoe, checked against this model's T and H."""
    cfg_path, weights = Path(directory) / "adapter_config.json", Path(directory) / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise ValueError(
            f"attempt: source prompt {directory}: adapter_config.json or adapter_model.safetensors not found"
        )
    meta = json.loads(cfg_path.read_text())
    if meta.get("method") != "pt":
        raise ValueError(f"attempt: source prompt {cfg_path}: method is {meta.get('method')!r}, expected 'pt'")
    prompt = load_file(str(weights)).get("prompt")
    if prompt is None or prompt.dim() != 2:
        raise ValueError(f"attempt: source prompt {weights}: no [T, H] tensor 'prompt'")
    if prompt.shape[1] != hidden or meta.get("base_model", {}).get("hidden_size", hidden) != hidden:
        raise ValueError(f"attempt: source prompt {weights}: hidden size {prompt.shape[1]}, this model has {hidden}")
    if prompt.shape[0] != num_tokens:
        raise ValueError(f"attempt: source prompt {weights}: {prompt.shape[0]} tokens, num_tokens is {num_tokens}")
    return prompt.float()


def max_pool(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Max over the token axis (-2), pads excluded: [..., T, H] -> [..., H], fp32."""
    x = x.float()
    if mask is not None:
        x = x.masked_fill(~mask.bool().unsqueeze(-1), float("-inf"))
    return x.amax(-2).nan_to_num(neginf=0.0)  # an all-pad row pools to zeros


class ATTEMPTPrompt(PromptModule):
    routed = True

    def __init__(self, cfg: ATTEMPTConfig, embeddings: nn.Embedding, tokenizer=None, generator=None):
        super().__init__()
        self.num_tokens = T = cfg.num_tokens
        H = embeddings.weight.shape[1]
        if not cfg.source_prompts and not cfg.num_random_sources:  # counting parameters needs none
            raise ValueError(NO_SOURCE)
        self.target = nn.Parameter(init_embeddings(embeddings, T, tokenizer, cfg.init_text, generator))
        sources = [load_source_prompt(p, T, H) for p in cfg.source_prompts]
        sources += [init_embeddings(embeddings, T, None, None, generator) for _ in range(cfg.num_random_sources)]
        self.register_buffer("sources", torch.stack(sources) if sources else torch.zeros(0, T, H))  # [S, T, H]
        d = cfg.attn_dim
        self.down = nn.Linear(H, d, bias=cfg.attn_bias)
        self.up = nn.Linear(d, H, bias=cfg.attn_bias)
        self.norm = nn.LayerNorm(H)
        self.temperature = cfg.temperature or H**0.5

    def forward(self, input_embeds, attention_mask):
        prompts = torch.cat([self.sources, self.target.unsqueeze(0)], 0)  # [S+1, T, H]
        query = self.norm(self.up(nn.functional.silu(self.down(max_pool(input_embeds, attention_mask)))))
        scores = query @ max_pool(prompts).T / self.temperature  # [B, S+1]
        probs = torch.softmax(scores, -1)
        routing = Routing(probs.detach(), torch.ones_like(probs), probs.detach())  # a dense mixture
        return PromptCall(self.target + torch.einsum("bs,sth->bth", probs, prompts), routing)


def _count(c, m):
    H, d = m.hidden_size, c.attn_dim
    return c.num_tokens * H + 2 * H * d + 2 * H + ((d + H) if c.attn_bias else 0)


register(MethodSpec("attempt", ATTEMPTConfig, ATTEMPTPrompt, num_params=_count))
