"""Writes tests/data/format_v1: adapters saved by the FORMAT_VERSION 1 code (commit ec6a8ec) on the tiny
model, and the logits each gives on a fixed batch."""

import sys

import torch
from safetensors.torch import save_file

from ptmoe.adapted import AdaptedModel
from ptmoe.collate import pad_batch
from ptmoe.models import load_shape

OPTS = {
    "pt": {"num_tokens": 3},
    "dpt": {"num_tokens": 3, "rank": 2},
    "smop": {"num_tokens": 4, "experts": 2},
    "ptmoe": {"num_tokens": 3, "experts": 2, "rank": 2, "router_input_norm": "standardize"},
    "attempt": {"num_tokens": 3, "num_random_sources": 1},
    "lora": {"r": 1},
    "hydralora": {"r": 1, "heads": 2},
}
out = sys.argv[1]
expected = {}
for method, opts in OPTS.items():
    base, tok = load_shape("tiny", seed=0)
    model = AdaptedModel(base, method, opts, tok, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    b = pad_batch([{"input_ids": tok(t)["input_ids"]} for t in ["hello there", "x y", "what is 2+2?"]], 0, "left")
    model.train()
    with torch.no_grad():
        model(b["input_ids"], b["attention_mask"], return_logits=True)  # router statistics
    model.eval()
    with torch.no_grad():
        expected[method] = (
            model(b["input_ids"], b["attention_mask"], return_logits=True).logits[:, -1].contiguous()
        )  # last position
    model.save_pretrained(f"{out}/{method}")
    expected["input_ids"], expected["attention_mask"] = b["input_ids"].contiguous(), b["attention_mask"].contiguous()
save_file(expected, f"{out}/expected_logits.safetensors")
