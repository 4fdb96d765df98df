"""benchmarks/routing_leak.py on a tiny model (issue 14): the training forward routes every row as the
prompt alone (0 rows differ), through build_inputs and through forward()/generate() end to end, while
the pre-fix rule (the whole attention mask) does not."""

import importlib.util
from pathlib import Path

import pytest
import torch

from ptmoe.model import PtmoeModel
from ptmoe.models import load_shape

pytestmark = pytest.mark.usefixtures("one_thread")
spec = importlib.util.spec_from_file_location(
    "routing_leak", Path(__file__).resolve().parents[1] / "benchmarks" / "routing_leak.py"
)
routing_leak = importlib.util.module_from_spec(spec)
spec.loader.exec_module(routing_leak)


@pytest.mark.parametrize(
    "method, opts",
    [
        ("ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2}),
        ("smop", {"num_tokens": 4, "experts": 2}),
        ("attempt", {"num_tokens": 4, "num_random_sources": 2, "attn_dim": 4}),
    ],
)
@pytest.mark.parametrize("full_forward", [False, True])
def test_training_routing_equals_prompt_alone_and_the_leaky_rule_differs(method, opts, full_forward):
    base, tok = load_shape("tiny", seed=0)
    model = PtmoeModel(base, method, opts, tok, seed=1)
    with torch.no_grad():  # a router that reacts to its input strongly enough to show the leak
        m = model.prompt_module
        for p in (m.router.linear.weight,) if hasattr(m, "router") else (m.down.weight, m.up.weight):
            p.mul_(200)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n_prompt, n_answer in [(3, 9), (5, 7), (2, 12), (6, 6), (4, 10), (3, 3)]:
        ids = torch.randint(3, 259, (n_prompt + n_answer,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]})
    out = routing_leak.measure(model, rows, tok.pad_token_id or 0, batch_size=4, full_forward=full_forward)
    assert out["rows"] == 6
    assert out["training"]["rows_with_another_top_expert"] == 0
    assert out["training"]["max_weight_difference"] < 1e-5
    assert out["leaky"]["max_weight_difference"] > 1e-3  # the answer moves the pre-fix routing
