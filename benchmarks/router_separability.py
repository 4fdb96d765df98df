"""Can a router's input tell the training sources apart? (issue 23, docs/routing.md)

For the training mix of a compare config, pool each training row's router input (the masked mean of
the frozen input embeddings over what the router may read, `context_mask`) and report, on held-out
rows: the accuracy of a linear probe (logistic regression on the standardised input, the router's own
form) that predicts the source, and the mutual information between source and a k-means clustering
(k = the number of sources, the `router_init: kmeans` start). A probe near 100% with k-means near
0 bits means the task is in the input but not in its largest directions. Embedding lookups only.

    python benchmarks/router_separability.py configs/routing-mix.yaml --rows 1000
"""

from __future__ import annotations

import argparse
import json
import random

import torch
import yaml

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_base_model
from ptmoe.data.format import special_ids
from ptmoe.methods.ptmoe import kmeans
from ptmoe.recipes.compare_plan import shared_config
from ptmoe.recipes.routing import mutual_information_bits
from ptmoe.recipes.train_data import encode_sources, read_sources


def pooled_inputs(cfg, rows_per_source):
    """The router's input for each training row (`AdaptedModel.pooled_inputs`) and its source's index."""
    base, tok = load_base_model(cfg["model"])
    sources, valid, rng = read_sources(cfg, log=lambda *a: None)
    sources = [(spec, ex[:rows_per_source]) for spec, ex in sources]
    rows, _ = encode_sources(cfg, sources, [], rng, tok, log=lambda *a: None)
    names = sorted({r["set"] for r in rows})
    x = AdaptedModel(base, "none", {}, tok).pooled_inputs(rows, special_ids(tok)[0])
    return x, torch.tensor([names.index(r["set"]) for r in rows]), names


def linear_probe(x, y, k, seed=0, steps=500):
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    train, test = order[: len(x) // 2], order[len(x) // 2 :]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    z = (x - mean) / std
    torch.manual_seed(seed)  # the probe's initialisation: the same figure on every rerun
    probe = torch.nn.Linear(x.shape[1], k)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe(z[train]), y[train]).backward()
        opt.step()
    return (probe(z[test]).argmax(-1) == y[test]).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--rows", type=int, default=1000, help="training rows per source")
    args = ap.parse_args()
    raw = yaml.safe_load(open(args.config))
    cfg = shared_config(raw, args.config)
    cfg["seed"] = 0
    random.seed(0)
    x, y, names = pooled_inputs(cfg, args.rows)
    k = len(names)
    out = {"config": args.config, "sources": names, "rows": len(x)}
    out["linear_probe_accuracy"] = linear_probe(x, y, k)
    for space in ("raw", "standardized"):
        z = x if space == "raw" else (x - x.mean(0)) / (x.std(0) + 1e-6)
        _, assign = kmeans(z, k, torch.Generator().manual_seed(0))
        counts = {n: torch.bincount(assign[y == i], minlength=k).tolist() for i, n in enumerate(names)}
        out[f"kmeans_{space}"] = {"per_source": counts, "mutual_information_bits": mutual_information_bits(counts)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
