"""The router's parts (methods/router.py builds a router from them once): how it reads its input, its
exploration noise, its selection, its weighting and the routing-value replacement, and one table per
option whose keys are the values the config allows."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

UNIFORM = "uniform"  # replaced_routing: every expert, equal weights


# ---- the parts ------------------------------------------------------------------------------------------
class RawInput:
    """The router reads x as given."""

    def observe(self, router, x: torch.Tensor) -> None:
        pass

    def __call__(self, router, x: torch.Tensor) -> torch.Tensor:
        return x.float()


class StandardizedInput(RawInput):
    """x standardised per dimension with running statistics of every training input (buffers of the router,
    saved with the adapter): cumulative mean / variance merged batch by batch (Chan et al.); the input,
    pooled frozen embeddings, does not drift."""

    @torch.no_grad()
    def observe(self, router, x: torch.Tensor) -> None:
        x = x.float()
        n, m = router.input_count, float(x.shape[0])
        bmean, bvar = x.mean(0), x.var(0, unbiased=False)
        total = n + m
        delta = bmean - router.input_mean
        router.input_var.copy_((router.input_var * n + bvar * m + delta.pow(2) * n * m / total) / total)
        router.input_mean.add_(delta * m / total)
        router.input_count.fill_(total)

    def __call__(self, router, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - router.input_mean) / (router.input_var + 1e-6).sqrt()


class NoNoise:
    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


class MultiplicativeNoise:
    """Exploration noise l (1 + eps), eps ~ N(0, std^2), in training only."""

    def __init__(self, std: float):
        self.std = std

    def draw(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(logits) * self.std

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * (1 + self.draw(logits))


class AdditiveNoise(MultiplicativeNoise):
    """l + eps, eps ~ N(0, std^2)."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.draw(logits)


class TopK:
    """The k most probable experts of each row."""

    def __init__(self, k: int):
        self.k = k

    def __call__(self, probs: torch.Tensor, training: bool) -> torch.Tensor:
        idx = probs.topk(self.k, dim=-1).indices
        return torch.zeros_like(probs).scatter_(-1, idx, 1.0)


class ExpertChoice(TopK):
    """In training each expert takes an equal share of the batch (`expert_choice`); top-k at inference."""

    def __call__(self, probs: torch.Tensor, training: bool) -> torch.Tensor:
        return expert_choice(probs.detach(), self.k) if training else super().__call__(probs, training)


class EveryExpert:
    """Non-selective: every expert serves every row."""

    def __call__(self, probs: torch.Tensor, training: bool) -> torch.Tensor:
        return torch.ones_like(probs)


def probationary(probs, selected, selective):  # selected experts scaled by their probability
    return probs * selected


def normalized(probs, selected, selective):  # selected weights sum to one; gradient still via probs
    sel = probs * selected
    return sel / sel.sum(-1, keepdim=True).detach()


def uniform(probs, selected, selective):  # uniform over the selection; straight-through when selective
    hard = selected / selected.sum(-1, keepdim=True)
    return hard + (probs - probs.detach()) * selected if selective else hard


class Replaced:
    """The routing replaced, the weight each row's experts got kept: all of it on one expert, or spread evenly
    over every expert (UNIFORM). Only which expert serves a row changes, not how much."""

    def __init__(self, replace: int | str, experts: int):
        self.replace, self.experts = replace, experts

    def __call__(self, weights: torch.Tensor, selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mass = weights.sum(-1, keepdim=True)
        if self.replace == UNIFORM:
            selected = torch.ones_like(weights)
        else:
            selected = F.one_hot(torch.full_like(mass[:, 0], self.replace).long(), self.experts).to(weights.dtype)
        return mass * selected / selected.sum(-1, keepdim=True), selected


def kept(weights: torch.Tensor, selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return weights, selected


def every_expert_gate(logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    return probs  # the weights are read from the probabilities over every expert


# one table per option; the config's allowed values are their keys
INPUT_NORMS = {"none": RawInput, "standardize": StandardizedInput}
NOISES = {"multiplicative": MultiplicativeNoise, "additive": AdditiveNoise, "none": None}
WEIGHTS = {"probationary": probationary, "normalized": normalized, "uniform": uniform}
SELECTIONS = {"top_k": TopK, "expert_choice": ExpertChoice}
INITS = {"normal": "normal", "orthogonal": "orthogonal"}
NOISE_KINDS, WEIGHTINGS, ASSIGNMENTS = tuple(NOISES), tuple(WEIGHTS), tuple(SELECTIONS)
INPUT_NORM_KINDS = tuple(INPUT_NORMS)


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
