"""Input-dependent routing over N experts, shared by SMoP and PT-MoE (one place for it).

l = W x + b on the masked mean of the input embeddings; exploration noise in training only;
softmax (with temperature); top-k selection; expert weights w per example.

Optionally (input_norm="standardize") x is standardised per dimension with running statistics
first. Why: mean-pooled embeddings of real inputs share one large common component (on the
SmolLM2 QA mix the mean vector has norm 0.76, the per-input deviation 0.24), so a randomly
initialised router gives every input nearly the same logits (logit-difference std 0.014; one expert
gets 99% of inputs before any training) and training only deepens it. Standardised, the same router
separates inputs (std 1.41, a 49/51 split). Measured by `python bench/router_input.py
configs/compare-qa.yaml`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import Routing

NOISE_KINDS = ("multiplicative", "additive", "none")
WEIGHTINGS = ("probationary", "normalized", "uniform")
INPUT_NORMS = ("none", "standardize")


class Router(nn.Module):
    def __init__(
        self,
        hidden: int,
        experts: int,
        *,
        bias: bool = True,
        noise: str = "multiplicative",
        noise_std: float = 0.01,
        top_k: int | None = 1,
        weighting: str = "probationary",
        temperature: float = 1.0,
        input_norm: str = "none",
    ):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"router: input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        if noise not in NOISE_KINDS:
            raise ValueError(f"router: noise must be one of {NOISE_KINDS}, got {noise!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"router: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if top_k is not None and not 1 <= top_k <= experts:
            raise ValueError(f"router: top_k must be between 1 and experts={experts}, got {top_k}")
        self.linear = nn.Linear(hidden, experts, bias=bias)
        nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(hidden))
        if bias:
            nn.init.zeros_(self.linear.bias)
        self.experts, self.noise, self.noise_std = experts, noise, noise_std
        self.top_k, self.weighting, self.temperature = top_k, weighting, temperature
        self.input_norm = input_norm
        if input_norm == "standardize":  # running statistics, saved with the adapter
            self.register_buffer("input_mean", torch.zeros(hidden))
            self.register_buffer("input_var", torch.ones(hidden))
            self.register_buffer("input_count", torch.zeros(()))

    @torch.no_grad()
    def _update_stats(self, x: torch.Tensor) -> None:
        """Cumulative mean/variance over every training input seen (the input, pooled frozen
        embeddings, does not drift), merged batch by batch (Chan et al.)."""
        n, m = self.input_count, float(x.shape[0])
        bmean, bvar = x.mean(0), x.var(0, unbiased=False)
        total = n + m
        delta = bmean - self.input_mean
        self.input_var.copy_((self.input_var * n + bvar * m + delta.pow(2) * n * m / total) / total)
        self.input_mean.add_(delta * m / total)
        self.input_count.fill_(total)

    def router_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the linear layer reads: x as given, or standardised with the running statistics."""
        x = x.float()
        if self.input_norm == "standardize":
            x = (x - self.input_mean) / (self.input_var + 1e-6).sqrt()
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        """x: [B, H] fp32 -> weights [B, N] and the routing record (probs, selection, weights)."""
        if self.input_norm == "standardize" and self.training:
            self._update_stats(x.float())
        logits = self.linear(self.router_input(x).to(self.linear.weight.dtype))
        if self.training and self.noise != "none" and self.noise_std > 0:
            eps = torch.randn_like(logits) * self.noise_std
            logits = logits * (1 + eps) if self.noise == "multiplicative" else logits + eps
        probs = torch.softmax(logits / self.temperature, dim=-1)
        selective = self.top_k is not None and self.top_k < self.experts
        if not selective:  # every expert
            selected = torch.ones_like(probs)
        else:
            idx = probs.topk(self.top_k, dim=-1).indices
            selected = torch.zeros_like(probs).scatter_(-1, idx, 1.0)
        if self.weighting == "probationary":  # selected experts scaled by their probability
            weights = probs * selected
        elif self.weighting == "normalized":  # selected weights sum to one; gradient still via probs
            sel = probs * selected
            weights = sel / sel.sum(-1, keepdim=True).detach()
        else:  # uniform over the selection; straight-through so the router still learns when selective
            hard = selected / selected.sum(-1, keepdim=True)
            weights = hard + (probs - probs.detach()) * selected if selective else hard
        # Switch-style load-balancing term N * sum_i f_i * P_i (f: share routed, P: mean prob);
        # the trainer adds it only when a config asks for it.
        balance = self.experts * (selected.mean(0).detach() * probs.mean(0)).sum()
        return weights, Routing(probs.detach(), selected.detach(), weights.detach(), balance)
