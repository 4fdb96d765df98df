"""Input-dependent routing over N experts, shared by SMoP and PT-MoE (one place for it).

l = W x + b on the masked mean of the input embeddings; exploration noise in training only;
softmax (with temperature); top-k selection; expert weights w per example.

Optionally (input_norm="standardize") x is standardised per dimension with running statistics
first. Why: mean-pooled embeddings of real inputs share one large common component (on the
SmolLM2 QA mix the mean vector has norm 0.76, the per-input deviation 0.24), so a randomly
initialised router gives every input nearly the same logits (logit-difference std 0.014; one expert
gets 99% of inputs before any training) and training only deepens it. Standardised, the same router
separates inputs (std 1.41, a 49/51 split). Measured by `python benchmarks/router_input.py
configs/compare-qa.yaml`.

Mechanisms that make experts specialise (docs/routing.md measures each): a Switch balance loss and
the ST-MoE router z-loss (the adapter adds them), expert-choice assignment in training (each expert
takes an equal share of the batch; top-k at inference), an orthogonal initialisation (SMoP), a
data initialisation (k-means centroids of the pooled training inputs, `init_from_centroids`), and
two-level routing (`groups`: a group first, then an expert within it, each top-1 and probationary).
A grown router can weigh each expert within its growth stage (`stages`, docs/continual.md).
Two replacements serve measurement: `given` routes each row to a known expert (the oracle bracket)
and `replaced_routing` forces one expert or the uniform mix on every input (the routing value).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .base import Routing

NOISE_KINDS = ("multiplicative", "additive", "none")
WEIGHTINGS = ("probationary", "normalized", "uniform")
INPUT_NORMS = ("none", "standardize")
ASSIGNMENTS = ("top_k", "expert_choice")
INITS = ("normal", "orthogonal")
UNIFORM = "uniform"  # replaced_routing: every expert, equal weights


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
        assignment: str = "top_k",
        init: str = "normal",
        groups: int = 1,
        stages: list[int] | None = None,
    ):
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

    def _per_stage(self, logits: torch.Tensor) -> torch.Tensor:
        """A softmax over each growth stage's experts separately: an expert's weight no longer depends on
        the rows added after it (the selection still compares every expert)."""
        return torch.cat([torch.softmax(x / self.temperature, -1) for x in logits.split(self.stages, -1)], -1)

    def _grouped_probs(self, z: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Hierarchical routing: the top-1 group (probationary: its probability scales the result),
        then a softmax over that group's experts only."""
        group_probs = torch.softmax(self._noisy(self.group_linear(z)) / self.temperature, dim=-1)
        group = group_probs.argmax(-1)
        per_group = self.experts // self.groups
        member = torch.arange(self.experts, device=z.device) // per_group  # expert -> its group
        in_group = member[None, :] == group[:, None]
        inner = torch.softmax((logits / self.temperature).masked_fill(~in_group, float("-inf")), dim=-1)
        return inner * group_probs.gather(1, group[:, None])

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
        mass = weights.sum(-1, keepdim=True)
        if self.replace == UNIFORM:
            selected = torch.ones_like(weights)
        else:
            selected = F.one_hot(torch.full_like(mass[:, 0], self.replace).long(), self.experts).to(weights.dtype)
        return mass * selected / selected.sum(-1, keepdim=True), selected

    @torch.no_grad()
    def init_from_centroids(self, centroids: torch.Tensor) -> None:
        """Nearest-centroid routing as the starting router: logit_i = c_i . z - |c_i|^2 / 2 (z the
        router input, centroids in the same space), so argmax is the nearest centroid."""
        self.linear.weight.copy_(centroids.to(self.linear.weight))
        if self.linear.bias is not None:
            self.linear.bias.copy_(-0.5 * centroids.pow(2).sum(-1))


def expert_choice(probs: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Balanced assignment (expert-choice routing, Zhou et al. 2022, with every row served): each expert
    takes at most ceil(B * k / N) rows, the most confident (row, expert) pairs first. -> [B, N] 0/1."""
    B, N = probs.shape
    capacity = math.ceil(B * k / N)
    selected = torch.zeros_like(probs)
    load = [0] * N
    for flat in probs.flatten().argsort(descending=True).tolist():
        row, e = divmod(flat, N)
        if selected[row].sum() < k and load[e] < capacity:
            selected[row, e] = 1.0
            load[e] += 1
    return selected


def routers(model: nn.Module) -> list[Router]:
    return [m for m in model.modules() if isinstance(m, Router)]


@contextmanager
def replaced_routing(model: nn.Module, replace: int | str):
    """Within the block every router of `model` sends every input to expert `replace`, or (UNIFORM)
    to all experts equally, with the weight the router gave the row (see Router._replaced)."""
    found = routers(model)
    if not found:
        raise ValueError("replaced_routing: the model has no router")
    for r in found:
        r.replace = replace
    try:
        yield
    finally:
        for r in found:
            r.replace = None
