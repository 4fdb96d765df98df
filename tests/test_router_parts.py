"""The router built from parts chosen once (methods/router.py) routes exactly as the router it replaced
(tests/former_router.py, kept as the reference): for the defaults, every preset and every option that
picks a part, the same initial weights from the same seed, and bit for bit the same probabilities,
selection, weights, balance and z-loss terms in training (the same exploration noise) and at inference,
for the oracle and under both routing-value replacements. The config and the router check options in
one place."""

import pytest
import torch

import former_router
from ptmoe.config.loading import load_config
from ptmoe.config.presets import apply_preset
from ptmoe.methods import ptmoe as ptmoe_method
from ptmoe.methods.router import UNIFORM, OracleRouter, Router, replaced_routing

H = 16
PRESETS = ["default", "paper", "balanced", "clustered", "supervised"]
OPTIONS = {
    "top2-normalized": {"top_k": 2, "experts": 3, "weighting": "normalized"},
    "uniform-top1-additive": {"weighting": "uniform", "noise": "additive", "noise_std": 0.5},
    "dense-uniform": {"top_k": 3, "experts": 3, "weighting": "uniform"},
    "dense-probationary": {"top_k": 4, "experts": 4, "noise_std": 0.3},
    "expert-choice": {"assignment": "expert_choice", "experts": 3, "noise": "none"},
    "groups": {"experts": 4, "groups": 2, "noise_std": 0.3},
    "stages": {"experts": 3, "stage_experts": [2, 1], "weighting": "normalized", "top_k": 2},
    "orthogonal-temperature": {
        "router_init": "orthogonal",
        "router_temperature": 0.5,
        "router_input_norm": "standardize",
    },
    "oracle": {"route_by": "source", "sources": ["a", "b"]},
}


def router_kwargs(options: dict):
    """What PT-MoE's prompt builds its router with, from its options (defaults filled in)."""
    cfg = ptmoe_method.PTMoEConfig(**options)
    return ptmoe_method.router_options(cfg), cfg


def preset_options(name: str) -> dict:
    cfg = apply_preset(load_config(None, ["model=shape:tiny", f"preset={name}", "data.train=[a/train, b/train]"]))
    return {k: v for k, v in cfg["method_options"].items() if k in ptmoe_method.PTMoEConfig.__dataclass_fields__}


CASES = {**{f"preset {p}": preset_options(p) for p in PRESETS}, "defaults": {}, **OPTIONS}


def outputs(router, x, given=None):
    weights, r = router(x) if given is None else router(x, given)
    return [weights, r.probs, r.selected, r.weights, r.balance_loss, r.z_loss]


@pytest.mark.parametrize("case", list(CASES))
def test_the_router_from_parts_routes_as_the_former_router(case):
    kwargs, cfg = router_kwargs(CASES[case])
    oracle = cfg.route_by == "source"
    torch.manual_seed(0)
    new = (OracleRouter if oracle else Router)(H, cfg.experts, **kwargs)
    torch.manual_seed(0)
    old = former_router.Router(H, cfg.experts, **kwargs)
    assert new.state_dict().keys() == old.state_dict().keys()
    for k, v in old.state_dict().items():
        assert torch.equal(new.state_dict()[k], v), k  # the same initial router from the same seed
    g = torch.Generator().manual_seed(1)
    given = torch.tensor([0, 1, 1, 0, 1, 0]) if oracle else None
    for training in (True, True, False):  # twice in training: the input statistics move on
        x = torch.randn(6, H, generator=g) + 0.5
        new.train(training), old.train(training)
        torch.manual_seed(2)
        got = outputs(new, x, given)
        torch.manual_seed(2)
        want = outputs(old, x, given)
        for a, b in zip(got, want):
            assert torch.equal(a, b), case
    for k, v in old.state_dict().items():
        assert torch.equal(new.state_dict()[k], v), k  # the running statistics too
    for replace in (1, UNIFORM):
        with replaced_routing(new, replace):
            got = outputs(new, x, given)
        old.replace = replace
        want = outputs(old, x, given)
        old.replace = None
        assert all(torch.equal(a, b) for a, b in zip(got, want)), (case, replace)
    assert all(torch.equal(a, b) for a, b in zip(outputs(new, x, given), outputs(old, x, given)))  # restored


def test_options_are_checked_in_one_place():
    for bad, match in (({"groups": 2}, "'groups'"), ({"stage_experts": [1, 2], "groups": 3}, "'stage_experts'")):
        with pytest.raises(ValueError, match=match):
            ptmoe_method.PTMoEConfig(experts=3, **bad).validate()
    with pytest.raises(ValueError, match="'stage_experts'"):
        ptmoe_method.PTMoEConfig(experts=3, stage_experts=[1, 1]).validate()
    with pytest.raises(ValueError, match="router: groups must divide"):
        Router(H, 3, groups=2)
    for option, value in (
        ("noise", "loud"),
        ("weighting", "x"),
        ("assignment", "x"),
        ("input_norm", "x"),
        ("init", "x"),
    ):
        with pytest.raises(ValueError, match=f"router: {option} must be one of"):
            Router(H, 2, **{option: value})
    # the config's allowed values are the router's tables
    assert ptmoe_method.CHOICES["noise"] == ("multiplicative", "additive", "none")
    assert ptmoe_method.CHOICES["router_input_norm"] == ("none", "standardize")
