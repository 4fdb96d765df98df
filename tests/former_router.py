"""The router as it was before it was built from parts, kept as the reference tests/test_router_parts.py
compares the router with: verbatim but for its keyword arguments (read from FORMER_DEFAULTS) and the two
pieces moved unchanged into parts (the input statistics' merge, the routing-value replacement, the
grouped probabilities and the per-stage gate)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ptmoe.methods.base import Routing
from ptmoe.methods.router import (
    ASSIGNMENTS,
    INITS,
    NOISE_KINDS,
    WEIGHTINGS,
    Replaced,
    StandardizedInput,
    expert_choice,  # the same layers, moved unchanged
)
from ptmoe.methods.router import Router as NewRouter

INPUT_NORMS = ("none", "standardize")
UNIFORM = "uniform"
FORMER_DEFAULTS = {
    "bias": True,
    "noise": "multiplicative",
    "noise_std": 0.01,
    "top_k": 1,
    "weighting": "probationary",
    "temperature": 1.0,
    "input_norm": "none",
    "assignment": "top_k",
    "init": "normal",
    "groups": 1,
    "stages": None,
}


class Router(nn.Module):
    def __init__(self, hidden: int, experts: int, **options):  # the former keyword arguments and defaults
        o = {**FORMER_DEFAULTS, **options}
        bias, noise, noise_std, top_k, weighting = (o[k] for k in ("bias", "noise", "noise_std", "top_k", "weighting"))
        temperature, input_norm, assignment = o["temperature"], o["input_norm"], o["assignment"]
        init, groups, stages = o["init"], o["groups"], o["stages"]
        super().__init__()
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"router: assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
        if init not in INITS:
            raise ValueError(f"router: init must be one of {INITS}, got {init!r}")
        if groups < 1 or experts % groups:
            raise ValueError(f"router: groups must divide experts={experts}, got {groups}")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"router: input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        if noise not in NOISE_KINDS:
            raise ValueError(f"router: noise must be one of {NOISE_KINDS}, got {noise!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"router: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if top_k is not None and not 1 <= top_k <= experts:
            raise ValueError(f"router: top_k must be between 1 and experts={experts}, got {top_k}")
        self.linear = nn.Linear(hidden, experts, bias=bias)
        self.group_linear = nn.Linear(hidden, groups, bias=bias) if groups > 1 else None
        for lin in (self.linear, self.group_linear):
            if lin is None:
                continue
            if init == "orthogonal":  # SMoP's init: orthogonal rows, each of norm 1
                nn.init.orthogonal_(lin.weight)
            else:
                nn.init.normal_(lin.weight, std=1.0 / math.sqrt(hidden))
            if bias:
                nn.init.zeros_(lin.bias)
        if stages is not None and (sum(stages) != experts or groups > 1):
            raise ValueError(f"router: stages must sum to experts={experts} (without groups), got {stages}")
        self.assignment, self.groups = assignment, groups
        self.stages = list(stages) if stages else None  # experts added per growth stage (grow.gate per_stage)
        self.replace: int | str | None = None  # set by replaced_routing: an expert index or UNIFORM
        self.experts, self.noise, self.noise_std = experts, noise, noise_std
        self.top_k, self.weighting, self.temperature = top_k, weighting, temperature
        self.input_norm = input_norm
        if input_norm == "standardize":  # running statistics, saved with the adapter
            self.register_buffer("input_mean", torch.zeros(hidden))
            self.register_buffer("input_var", torch.ones(hidden))
            self.register_buffer("input_count", torch.zeros(()))

    def _update_stats(self, x: torch.Tensor) -> None:  # the same merge, moved unchanged into the part
        StandardizedInput().observe(self, x)

    def router_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the linear layer reads: x as given, or standardised with the running statistics."""
        x = x.float()
        if self.input_norm == "standardize":
            x = (x - self.input_mean) / (self.input_var + 1e-6).sqrt()
        return x

    def clean_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits on pooled inputs x without exploration noise: what the router decides at inference
        (router-only losses of training read them)."""
        return self.linear(self.router_input(x).to(self.linear.weight.dtype))

    def forward(self, x: torch.Tensor, given: torch.Tensor | None = None) -> tuple[torch.Tensor, Routing]:
        """x: [B, H] fp32 -> weights [B, N] and the routing record (probs, selection, weights).
        given: [B] expert ids (the oracle): each row gets that expert at weight 1."""
        if self.input_norm == "standardize" and self.training:
            self._update_stats(x.float())
        z = self.router_input(x).to(self.linear.weight.dtype)
        logits = self._noisy(self.linear(z))
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if given is not None:
            selected = F.one_hot(given.long(), self.experts).to(probs.dtype)
            weights = selected
        else:
            if self.groups > 1:  # two levels: p(e) = p(group) * p(e | group), the chosen group's experts only
                probs = self._grouped_probs(z, logits)
            selected = self._select(probs)
            weights = self._weigh(self._per_stage(logits) if self.stages else probs, selected)
        if self.replace is not None:
            weights, selected = self._replaced(weights)
        # Switch-style load-balancing term N * sum_i f_i * P_i (f: share routed, P: mean prob) and the
        # ST-MoE z-loss; the adapter adds them when its config asks for them
        balance = self.experts * (selected.mean(0).detach() * probs.mean(0)).sum()
        z_loss = torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
        return weights, Routing(probs.detach(), selected.detach(), weights.detach(), balance, z_loss)

    def _noisy(self, logits: torch.Tensor) -> torch.Tensor:
        if self.training and self.noise != "none" and self.noise_std > 0:
            eps = torch.randn_like(logits) * self.noise_std
            return logits * (1 + eps) if self.noise == "multiplicative" else logits + eps
        return logits

    def _per_stage(self, logits: torch.Tensor) -> torch.Tensor:  # moved unchanged into the router's gate
        return NewRouter._per_stage(self, logits, None)

    _grouped_probs = NewRouter._grouped_probs  # moved unchanged

    def _select(self, probs: torch.Tensor) -> torch.Tensor:
        if self.top_k is None or self.top_k >= self.experts:  # non-selective: every expert
            return torch.ones_like(probs)
        if self.assignment == "expert_choice" and self.training:
            return expert_choice(probs.detach(), self.top_k)
        idx = probs.topk(self.top_k, dim=-1).indices
        return torch.zeros_like(probs).scatter_(-1, idx, 1.0)

    def _weigh(self, probs: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        selective = self.top_k is not None and self.top_k < self.experts
        if self.weighting == "probationary":  # selected experts scaled by their probability
            return probs * selected
        if self.weighting == "normalized":  # selected weights sum to one; gradient still via probs
            sel = probs * selected
            return sel / sel.sum(-1, keepdim=True).detach()
        # uniform over the selection; straight-through so the router still learns when selective
        hard = selected / selected.sum(-1, keepdim=True)
        return hard + (probs - probs.detach()) * selected if selective else hard

    def _replaced(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The routing replaced, the weight each row's experts got kept: all of it on one expert, or
        spread evenly over every expert (UNIFORM). Only which expert serves a row changes, not how much."""
        return Replaced(self.replace, self.experts)(weights, None)  # the same arithmetic, moved into the part
