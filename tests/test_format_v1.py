"""Adapters saved by the FORMAT_VERSION 1 code (before the method interface) still load
and give the logits they gave when saved. Fixtures: tests/data/format_v1 (written by make_v1.py)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptmoe import AdaptedModel
from ptmoe.base_models import load_shape

DATA = Path(__file__).parent / "data" / "format_v1"
METHODS = ["pt", "dpt", "smop", "ptmoe", "attempt", "lora", "hydralora"]


@pytest.mark.parametrize("method", METHODS)
def test_format_v1_adapters_load_and_give_the_saved_logits(method):
    expected = load_file(str(DATA / "expected_logits.safetensors"))
    base, tok = load_shape("tiny", seed=0)
    model = AdaptedModel.from_pretrained(DATA / method, base, tok).eval()
    with torch.no_grad():
        logits = model(expected["input_ids"], expected["attention_mask"], return_logits=True).logits[:, -1]
    torch.testing.assert_close(logits, expected[method], rtol=0, atol=1e-5)
