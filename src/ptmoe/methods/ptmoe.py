"""PT-MoE (Li, Su, Collier 2025): N low-rank expert prompts P_i = A_i B with B shared,
SVD-initialised, mixed per input by a learned router (top-k, probationary by default)."""

from dataclasses import dataclass

import torch
from torch import nn

from .base import MethodConfig, MethodSpec, PromptModule, init_embeddings, masked_mean, register, svd_factors
from .router import Router


@dataclass
class PTMoEConfig(MethodConfig):
    num_tokens: int = 40
    experts: int = 2
    rank: int = 36
    top_k: int = 1  # selective routing; top_k >= experts means non-selective
    weighting: str = "probationary"  # probationary (w = p on the selection), normalized, uniform
    noise: str = "multiplicative"  # multiplicative l(1+eps), additive l+eps, none
    noise_std: float = 0.01
    router_temperature: float = 1.0
    router_input_norm: str = "none"  # "standardize": running per-dimension standardisation (see router.py)
    init_text: str | None = None  # SVD init text; else sampled vocabulary tokens
    init_noise: float = 0.0  # per-expert perturbation of A_i (relative std) to break symmetry
    load_balance: float = 0.0  # weight of the load-balancing loss (0 in the paper)


class PTMoEPrompt(PromptModule):
    def __init__(self, cfg: PTMoEConfig, embeddings: nn.Embedding, tokenizer=None, generator=None):
        super().__init__()
        self.num_tokens = cfg.num_tokens
        H = embeddings.weight.shape[1]
        A, B = svd_factors(
            init_embeddings(embeddings, cfg.num_tokens, tokenizer, cfg.init_text, generator, min_distinct=cfg.rank),
            cfg.rank,
            generator,
        )
        As = A.unsqueeze(0).repeat(cfg.experts, 1, 1)
        if cfg.init_noise > 0:
            As = As + torch.randn(As.shape, generator=generator) * cfg.init_noise * A.std()
        self.A = nn.Parameter(As)  # [N, T, R]
        self.B = nn.Parameter(B)  # [R, H]
        self.load_balance = cfg.load_balance
        self.router = Router(
            H,
            cfg.experts,
            bias=True,
            noise=cfg.noise,
            noise_std=cfg.noise_std,
            top_k=cfg.top_k,
            weighting=cfg.weighting,
            temperature=cfg.router_temperature,
            input_norm=cfg.router_input_norm,
        )

    def forward(self, input_embeds, attention_mask):
        weights, self.routing = self.router(masked_mean(input_embeds, attention_mask))
        if self.load_balance > 0:
            self.aux_loss = self.load_balance * self.routing.balance_loss
        # mix the small A_i first (B x T x R), then one matmul with the shared B
        return torch.einsum("bn,ntr->btr", weights, self.A) @ self.B


def _count(c, m):
    H, N, T, R = m.hidden_size, c.experts, c.num_tokens, c.rank
    return N * T * R + R * H + N * H + N


register(MethodSpec("ptmoe", PTMoEConfig, PTMoEPrompt, num_params=_count))
