"""How much each exploration-noise setting actually explores: the share of training rows whose
top-1 expert changes when the router's training noise is drawn, against the noise-free choice.

For the training rows of a config (their prompts: what the router reads), a PT-MoE router is taken
either at initialisation (`--preset paper|default`: the router as a run starts) or from a trained
adapter (`--adapter`), and each noise setting of configs/ablation-routing.yaml is drawn `--draws`
times. Routing only (embedding lookups and one linear layer): about a minute on one core.

    python benchmarks/noise_exploration.py configs/compare-qa.yaml --preset paper
    python benchmarks/noise_exploration.py configs/demo.yaml --adapter runs/demo/best
"""

from __future__ import annotations

import argparse
import copy
import random

import torch
import yaml

from ptmoe.collate import pad_batch
from ptmoe.data.format import special_ids
from ptmoe.methods.base import masked_mean
from ptmoe.model import PtmoeModel, context_mask
from ptmoe.models import load_base_model
from ptmoe.recipes.compare import shared_config
from ptmoe.recipes.config import merge, parse_override
from ptmoe.recipes.presets import apply_preset, task_init_text
from ptmoe.recipes.train_data import load_sources

SETTINGS = [("multiplicative", 0.01), ("additive", 0.01), ("multiplicative", 1.0)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--preset", default="paper", help="router at initialisation with this preset")
    ap.add_argument("--adapter", help="a trained PT-MoE adapter instead")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=20)
    args = ap.parse_intermixed_args()
    raw = yaml.safe_load(open(args.config))  # a train or a compare config: the shared part
    for item in args.overrides:
        raw = merge(raw, parse_override(item))
    cfg = shared_config(raw, args.config)
    base, tok = load_base_model(cfg["model"])
    if args.adapter:
        model = PtmoeModel.from_pretrained(args.adapter, base, tok)
    else:
        cfg = apply_preset({**cfg, "method": "ptmoe", "preset": args.preset})
        model = PtmoeModel(base, "ptmoe", task_init_text(cfg), tok, seed=cfg["seed"])
    rows, _ = load_sources(cfg, tok, log=lambda *a: None)
    rows = random.Random(0).sample(rows, min(args.rows, len(rows)))
    pad = special_ids(tok)[0]
    with torch.no_grad():
        xs = []
        for s in range(0, len(rows), 32):
            b = pad_batch(rows[s : s + 32], pad)
            emb = model.lm.get_input_embeddings()(b["input_ids"])
            xs.append(masked_mean(emb, context_mask(b["attention_mask"], b["labels"])))
        x = torch.cat(xs)
        router = copy.deepcopy(model.prompt_module.router)
        if router.input_norm == "standardize" and not args.adapter:  # statistics as training gathers them
            router._update_stats(x)
        logits = router.linear(router.router_input(x))
        clean = logits.argmax(-1)
        print(
            f"rows {len(rows)}, router {'adapter ' + args.adapter if args.adapter else 'init, preset ' + args.preset}"
            f" (input_norm {router.input_norm}); logits: mean |l| {logits.abs().mean():.4f}, "
            f"std of l0 - l1 over rows {(logits[:, 0] - logits[:, 1]).std():.4f}; "
            f"share of expert 0 without noise {(clean == 0).float().mean():.3f}"
        )
        print(
            "| noise | std | rows whose top expert flips (mean over draws) | mean abs logit change |\n|---|---|---|---|"
        )
        for kind, std in SETTINGS:
            flips, change = 0.0, 0.0
            for d in range(args.draws):
                torch.manual_seed(d)
                eps = torch.randn_like(logits) * std
                noisy = logits * (1 + eps) if kind == "multiplicative" else logits + eps
                flips += float((noisy.argmax(-1) != clean).float().mean()) / args.draws
                change += float((noisy - logits).abs().mean()) / args.draws
            print(f"| {kind} | {std:g} | {flips:.4f} | {change:.2e} |")


if __name__ == "__main__":
    main()
