"""SMoP (Choi et al. 2023): N full-rank prompts of T/N tokens; a bias-free router on the masked
mean of the input embeddings (or `router_input: hidden:L`) with multiplicative noise (sigma = 1) picks one, scaled by its probability."""

from dataclasses import dataclass

import torch
from torch import nn

from .base import MethodConfig, MethodSpec, PromptCall, PromptModule, init_embeddings, register
from .router import Router
from .router_input import RouterInput


@dataclass
class SMoPConfig(MethodConfig):
    added_options = ("router_input", "router_pool")
    num_tokens: int = 40  # total budget: each of the N prompts has num_tokens // experts tokens
    experts: int = 2
    noise: str = "multiplicative"
    noise_std: float = 1.0
    top_k: int = 1
    init_text: str | None = None
    router_input: str = "embeddings"  # SMoP's; or "hidden:L" (router_input.py)
    router_pool: str = "mean"

    def validate(self, where: str = "config") -> None:
        super().validate(where)
        RouterInput.parse(self.router_input, self.router_pool, where)


class SMoPPrompt(PromptModule):
    routed = True

    def __init__(self, cfg: SMoPConfig, embeddings: nn.Embedding, tokenizer=None, generator=None):
        super().__init__()
        if cfg.num_tokens % cfg.experts:
            raise ValueError(f"smop: num_tokens={cfg.num_tokens} must be divisible by experts={cfg.experts}")
        self.num_tokens = cfg.num_tokens // cfg.experts
        H = embeddings.weight.shape[1]
        prompts = init_embeddings(embeddings, cfg.num_tokens, tokenizer, cfg.init_text, generator)
        self.prompts = nn.Parameter(prompts.view(cfg.experts, self.num_tokens, H))
        self.router_reads = RouterInput.parse(cfg.router_input, cfg.router_pool)
        self.router = Router(
            H,
            cfg.experts,
            bias=False,
            noise=cfg.noise,
            noise_std=cfg.noise_std,
            top_k=cfg.top_k,
            weighting="probationary",
        )

    def forward(self, input_embeds, attention_mask):
        weights, routing = self.router(self.router_features(input_embeds, attention_mask))
        return PromptCall(torch.einsum("bn,nth->bth", weights, self.prompts), routing)


register(
    MethodSpec(
        "smop", SMoPConfig, SMoPPrompt, num_params=lambda c, m: c.num_tokens * m.hidden_size + c.experts * m.hidden_size
    )
)
