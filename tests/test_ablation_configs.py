"""The paper's ablations as compare configs: each parses, names its baseline, and varies
exactly the grid the issue asks for on the QA mix and budget of compare-qa.yaml."""

from pathlib import Path

import pytest
import yaml

from ptmoe.config.presets import apply_preset
from ptmoe.experiments.plan import method_config, shared_config

ROOT = Path(__file__).resolve().parents[1]


def expanded(name):
    path = ROOT / "configs" / f"ablation-{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    shared = shared_config(raw, str(path))
    assert raw["seeds"] == [0] and raw["baseline"] in [m["name"] for m in raw["methods"]]
    qa = yaml.safe_load((ROOT / "configs" / "compare-qa.yaml").read_text())
    assert raw["data"] == qa["data"] and raw["train"]["steps"] == qa["train"]["steps"]
    return [apply_preset(method_config(shared, m, str(path)))["method_options"] for m in raw["methods"]]


@pytest.mark.parametrize(
    "name, key, values",
    [("experts", "experts", [1, 2, 4, 8]), ("length", "num_tokens", [10, 20, 40, 80]), ("rank", "rank", [12, 36, 72])],
)
def test_size_ablations(name, key, values):
    assert [o[key] for o in expanded(name)] == values


def test_routing_ablation_grid():
    opts = expanded("routing")
    grid = {(o["top_k"], o["weighting"], o["noise"], o["noise_std"], o["router_input_norm"]) for o in opts}
    for top_k in (1, 2):  # selective / non-selective x probationary / not, at the paper's noise
        for weighting in ("probationary", "uniform"):
            assert (top_k, weighting, "multiplicative", 0.01, "none") in grid
    for noise, std in (("none", 0.01), ("additive", 0.01), ("multiplicative", 1.0)):
        assert (1, "probationary", noise, std, "none") in grid
