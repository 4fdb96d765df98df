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
Each choice is a small part picked once, when the router is built, from one table per option (the
config's allowed values are these tables' keys, so they are checked in one place): the input norm, the
exploration noise, the probabilities (flat or grouped), the selection, the gate the weights are read
from (all experts, or per growth stage) and the weighting. `forward` runs them in order with no branch on
an option. Two replacements serve measurement: `OracleRouter`, a router of its own, routes each row to a
known expert (the oracle bracket), and `replaced_routing` swaps in a replacement part that forces one
expert or the uniform mix on every input (the routing value).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .base import Routing
from .router_parts import (  # noqa: F401  (the tables and expert_choice are imported from here too)
    ASSIGNMENTS,
    INITS,
    INPUT_NORM_KINDS,
    INPUT_NORMS,
    NOISE_KINDS,
    NOISES,
    SELECTIONS,
    UNIFORM,
    WEIGHTINGS,
    WEIGHTS,
    EveryExpert,
    NoNoise,
    Replaced,
    StandardizedInput,
    every_expert_gate,
    expert_choice,
    kept,
)


def shape_problem(experts: int, groups: int, stages: list[int] | None) -> tuple[str, str] | None:
    """What is wrong with the grouping or growth stages of a router of `experts`: (option, what), or None.
    The config's check and the router's both ask here."""
    if groups < 1 or experts % groups:
        return "groups", f"must divide experts={experts}, got {groups}"
    if stages is not None and (sum(stages) != experts or min(stages, default=0) < 1 or groups > 1):
        return "stage_experts", f"must be positive counts summing to experts={experts} (without groups), got {stages}"
    return None


def _choose(table, value, name: str):
    if value not in table:
        raise ValueError(f"router: {name} must be one of {tuple(table)}, got {value!r}")
    return table[value]


def init_scores(layers: list[nn.Linear | None], hidden: int, init: str) -> None:
    """Scoring layers' rows: normal(0, 1/sqrt(hidden)), or orthogonal of norm 1 (SMoP's init); biases 0.
    Called once every layer exists: the random draws then come in the order every saved router had."""
    for lin in filter(None, layers):
        (nn.init.orthogonal_ if init == "orthogonal" else partial(nn.init.normal_, std=1.0 / math.sqrt(hidden)))(
            lin.weight
        )
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)


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
        selection, weigh = _choose(SELECTIONS, assignment, "assignment"), _choose(WEIGHTS, weighting, "weighting")
        norm, init = _choose(INPUT_NORMS, input_norm, "input_norm"), _choose(INITS, init, "init")
        _choose(NOISES, noise, "noise")
        if top_k is not None and not 1 <= top_k <= experts:
            raise ValueError(f"router: top_k must be between 1 and experts={experts}, got {top_k}")
        problem = shape_problem(experts, groups, stages)
        if problem:
            raise ValueError(f"router: {problem[0]} {problem[1]}")
        self.linear = nn.Linear(hidden, experts, bias=bias)
        self.group_linear = nn.Linear(hidden, groups, bias=bias) if groups > 1 else None
        init_scores([self.linear, self.group_linear], hidden, init)
        self.experts, self.groups, self.temperature, self.input_norm = experts, groups, temperature, input_norm
        self.stages = list(stages) if stages else None  # experts added per growth stage (grow.gate per_stage)
        self.noise_std = noise_std
        self.noise = noise  # the part, from the table (a property)
        self.norm = norm()
        selective = top_k is not None and top_k < experts
        self.select = selection(top_k) if selective else EveryExpert()
        self.weigh = partial(weigh, selective=selective)
        self.probs = self._grouped_probs if groups > 1 else self._flat_probs
        self.gate = self._per_stage if self.stages else every_expert_gate
        self.replacement = kept  # replaced_routing swaps in a `Replaced`
        if input_norm == "standardize":  # running statistics, saved with the adapter
            self.register_buffer("input_mean", torch.zeros(hidden))
            self.register_buffer("input_var", torch.ones(hidden))
            self.register_buffer("input_count", torch.zeros(()))

    @property
    def noise(self) -> str:
        return self._noise_kind

    @noise.setter
    def noise(self, kind: str) -> None:
        """The exploration noise part (training only; std 0 or "none": none)."""
        make = _choose(NOISES, kind, "noise")
        self._noise_kind = kind
        self._noise = make(self.noise_std) if make is not None and self.noise_std > 0 else NoNoise()

    def router_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the linear layer reads: x as given, or standardised with the running statistics."""
        return self.norm(self, x)

    def clean_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits on pooled inputs x without exploration noise: what the router decides at inference
        (router-only losses of training read them)."""
        return self.linear(self.router_input(x).to(self.linear.weight.dtype))

    def _noisy(self, logits: torch.Tensor) -> torch.Tensor:
        return self._noise(logits) if self.training else logits

    def _scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, H] -> the router input z and the (noisy in training) logits; training updates the input
        statistics first."""
        if self.training:
            self.norm.observe(self, x)
        z = self.router_input(x).to(self.linear.weight.dtype)
        return z, self._noisy(self.linear(z))

    def _record(self, weights, selected, probs, logits) -> tuple[torch.Tensor, Routing]:
        weights, selected = self.replacement(weights, selected)
        # Switch-style load-balancing term N * sum_i f_i * P_i (f: share routed, P: mean prob) and the
        # ST-MoE z-loss; the adapter adds them when its config asks for them
        balance = self.experts * (selected.mean(0).detach() * probs.mean(0)).sum()
        z_loss = torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
        return weights, Routing(probs.detach(), selected.detach(), weights.detach(), balance, z_loss)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        """x: [B, H] fp32 -> weights [B, N] and the routing record (probs, selection, weights)."""
        z, logits = self._scores(x)
        probs = self.probs(z, logits)
        selected = self.select(probs, self.training)
        return self._record(self.weigh(self.gate(logits, probs), selected), selected, probs, logits)

    def _flat_probs(self, z: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits / self.temperature, dim=-1)

    def _per_stage(self, logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
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

    @torch.no_grad()
    def init_from_centroids(self, centroids: torch.Tensor) -> None:
        """Nearest-centroid routing as the starting router: logit_i = c_i . z - |c_i|^2 / 2 (z the
        router input, centroids in the same space), so argmax is the nearest centroid."""
        self.linear.weight.copy_(centroids.to(self.linear.weight))
        if self.linear.bias is not None:
            self.linear.bias.copy_(-0.5 * centroids.pow(2).sum(-1))


class OracleRouter(Router):
    """The oracle bracket: each row goes to a known expert (`given`, its training source's) at weight 1.
    The router's own probabilities are still computed, for the record and the balance and z-loss terms."""

    def forward(self, x: torch.Tensor, given: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        z, logits = self._scores(x)
        probs = self._flat_probs(z, logits)
        selected = F.one_hot(given.long(), self.experts).to(probs.dtype)
        return self._record(selected, selected, probs, logits)


def routers(model: nn.Module) -> list[Router]:
    return [m for m in model.modules() if isinstance(m, Router)]


@contextmanager
def replaced_routing(model: nn.Module, replace: int | str):
    """Within the block every router of `model` sends every input to expert `replace`, or (UNIFORM)
    to all experts equally, with the weight the router gave the row (see `Replaced`)."""
    found = routers(model)
    if not found:
        raise ValueError("replaced_routing: the model has no router")
    for r in found:
        r.replacement = Replaced(replace, r.experts)
    try:
        yield
    finally:
        for r in found:
            r.replacement = kept
