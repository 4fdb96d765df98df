"""Run keys (the run store of `ptmoe compare` / `ptmoe continual`): each is the key the store gave before the
methods declared their own added options, so no stored run is run again; and every option of every method
is either in the key or declared as added (`MethodConfig.added_options`: at its default it drops out), so a
new option cannot silently change the keys of the runs stored before it."""

import dataclasses

import pytest

from ptmoe.config.loading import load_config
from ptmoe.config.schema import METHODS
from ptmoe.experiments.store import run_key
from ptmoe.methods import REGISTRY

CASES = {  # overrides -> the key stored runs have
    "ptmoe": ["model=shape:tiny"],
    "ptmoe-paper": ["model=shape:tiny", "preset=paper"],
    "ptmoe-balanced": ["model=shape:tiny", "preset=balanced"],
    "ptmoe-clustered": ["model=shape:tiny", "preset=clustered"],
    "ptmoe-supervised": ["model=shape:tiny", "preset=supervised", "data.train=[squad/train, drop/train]"],
    "ptmoe-opts": ["model=shape:tiny", "method_options={z_loss: 0.1, groups: 2, experts: 4, router_input: 'hidden:2'}"],
    "ptmoe-defaults-written": [
        "model=shape:tiny",
        "method_options={z_loss: 0.0, assignment: top_k, router_pool: mean}",
    ],
    "ptmoe-no-rv": ["model=shape:tiny", "eval.routing_value=false"],
    "smop": ["model=shape:tiny", "method=smop"],
    "smop-pool": ["model=shape:tiny", "method=smop", "method_options={router_pool: last}"],
    "attempt": ["model=shape:tiny", "method=attempt", "method_options={num_random_sources: 2}"],
    "pt": ["model=shape:tiny", "method=pt"],
    "pt-no-rv": ["model=shape:tiny", "method=pt", "eval.routing_value=false"],
    "dpt": ["model=shape:tiny", "method=dpt"],
    "lora": ["model=shape:tiny", "method=lora"],
    "hydralora": ["model=shape:tiny", "method=hydralora"],
    "ft": ["model=shape:tiny", "method=ft"],
    "grow": ["model=shape:tiny", "grow.store_size=8"],
}
# The keys since every run's evaluation window is part of its key (eval.window: the question's window, where
# runs stored before it were evaluated on windows around the gold answer, so they are evaluated again) and the
# default data moved to reachable sets; the method-declared added options left them as they were.
KEYS = {
    "ptmoe": "71dc2697a85a",
    "ptmoe-paper": "8b104d621bb3",
    "ptmoe-balanced": "5f9b6f64de37",
    "ptmoe-clustered": "ddfd19e69578",
    "ptmoe-supervised": "d18df9a2ff8c",
    "ptmoe-opts": "02a8d3328331",
    "ptmoe-defaults-written": "71dc2697a85a",
    "ptmoe-no-rv": "e2aec7fe3b5d",
    "smop": "dcfe0b7e587d",
    "smop-pool": "8ace95a71a9c",
    "attempt": "ae862c139d89",
    "pt": "bba8058f05a1",
    "pt-no-rv": "bba8058f05a1",
    "dpt": "e28da3bae222",
    "lora": "ebcc2b6c95cc",
    "hydralora": "52a4074b8cbe",
    "ft": "c0a642c3082d",
    "grow": "9c84196bc5d9",
}

# the options each method's run keys have always held; an option added since must be declared as added
KEYED = {
    "attempt": [
        "num_tokens",
        "source_prompts",
        "num_random_sources",
        "attn_dim",
        "attn_bias",
        "temperature",
        "init_text",
    ],
    "dpt": ["num_tokens", "rank", "init", "init_text"],
    "ft": [],
    "hydralora": ["r", "heads", "alpha", "dropout", "target_modules"],
    "lora": ["r", "alpha", "dropout", "target_modules"],
    "none": [],
    "pt": ["num_tokens", "init_text"],
    "ptmoe": [
        "num_tokens",
        "experts",
        "rank",
        "top_k",
        "weighting",
        "noise",
        "noise_std",
        "router_temperature",
        "router_input_norm",
        "init_text",
        "init_noise",
        "load_balance",
    ],
    "smop": ["num_tokens", "experts", "noise", "noise_std", "top_k", "init_text"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_run_keys_are_those_stored_runs_have(name):
    assert run_key(load_config(None, CASES[name])) == KEYS[name]


def test_every_option_of_every_method_is_keyed_or_declared_added():
    assert set(KEYED) == {*METHODS, "none"} <= set(REGISTRY)  # every built-in method
    for name in KEYED:
        config = REGISTRY[name].config_cls
        options = {f.name for f in dataclasses.fields(config)}
        added = set(config.added_options)
        assert added <= options, (name, added - options)  # a declared option exists
        assert not added & set(KEYED[name]), name  # an option is keyed or added, not both
        assert options - added == set(KEYED[name]), (name, options - added - set(KEYED[name]))


def test_an_added_option_away_from_its_default_changes_the_key():
    base = ["model=shape:tiny"]
    for option, value in (("z_loss", 0.1), ("router_pool", "last"), ("groups", 2)):
        other = [*base, f"method_options={{{option}: {value}, experts: 4}}"]
        assert run_key(load_config(None, other)) != run_key(load_config(None, [*base, "method_options={experts: 4}"]))
