"""Decomposed prompt tuning (Xiao et al. 2023): P = A B, A (T x R), B (R x H), no router."""

from dataclasses import dataclass

import torch
from torch import nn

from .base import MethodConfig, MethodSpec, PromptModule, init_embeddings, register, svd_factors


@dataclass
class DPTConfig(MethodConfig):
    num_tokens: int = 40
    rank: int = 36
    init: str = "svd"  # "svd" of init embeddings, or "uniform" (-0.5, 0.5) as the DPT code does
    init_text: str | None = None


class DPTPrompt(PromptModule):
    def __init__(self, cfg: DPTConfig, embeddings: nn.Embedding, tokenizer=None, generator=None):
        super().__init__()
        self.num_tokens = cfg.num_tokens
        H = embeddings.weight.shape[1]
        if cfg.init == "svd":
            A, B = svd_factors(
                init_embeddings(embeddings, cfg.num_tokens, tokenizer, cfg.init_text, generator, min_distinct=cfg.rank),
                cfg.rank,
                generator,
            )
        elif cfg.init == "uniform":
            A = torch.rand(cfg.num_tokens, cfg.rank, generator=generator) - 0.5
            B = torch.rand(cfg.rank, H, generator=generator) - 0.5
        else:
            raise ValueError(f"dpt: option 'init' must be 'svd' or 'uniform', got {cfg.init!r}")
        self.A, self.B = nn.Parameter(A), nn.Parameter(B)

    def forward(self, input_embeds, attention_mask):
        return (self.A @ self.B).unsqueeze(0).expand(input_embeds.shape[0], -1, -1)


register(
    MethodSpec("dpt", DPTConfig, DPTPrompt, num_params=lambda c, m: c.num_tokens * c.rank + c.rank * m.hidden_size)
)
