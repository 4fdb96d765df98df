"""Why a linear router on pooled embeddings collapses, and what standardising its input changes.

For the training mix of a compare config, pool the frozen input embeddings of each training row
(masked mean, the router's input) and report: the norm of the mean vector against the per-row
deviation from it, and the spread across rows of the logit difference of a randomly initialised
2-expert router (PT-MoE's init) on the raw and on the standardised input, with the share of rows each
expert would get. Embedding lookups only: about a minute on one core.

    python benchmarks/router_input.py configs/compare-qa.yaml --rows 2000
"""

from __future__ import annotations

import argparse
import json
import random

import torch
import yaml

from ptmoe.base_models import load_base_model
from ptmoe.experiments.plan import shared_config
from ptmoe.methods.router import Router
from ptmoe.training.data import load_sources


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=5, help="random routers to average over")
    args = ap.parse_args()
    raw = yaml.safe_load(open(args.config))
    cfg = shared_config(raw, args.config)
    cfg["seed"] = 0
    base, tok = load_base_model(cfg["model"])
    rows, _ = load_sources(cfg, tok, log=lambda *a: None)
    rows = random.Random(0).sample(rows, min(args.rows, len(rows)))
    emb = base.get_input_embeddings().weight.detach().float()
    x = torch.stack([emb[torch.tensor(r["input_ids"])].mean(0) for r in rows])
    mean = x.mean(0)
    out = {
        "config": args.config,
        "rows": len(rows),
        "sets": sorted({r["set"] for r in rows}),
        "mean_vector_norm": mean.norm().item(),
        "row_deviation_norm": (x - mean).norm(dim=1).mean().item(),
    }
    for norm in ("none", "standardize"):
        spread, minority = [], []
        for seed in range(args.seeds):
            torch.manual_seed(seed)  # PT-MoE's router init
            router = Router(x.shape[1], 2, noise="none", input_norm=norm)
            with torch.no_grad():
                if norm == "standardize":
                    router.train()(x)  # gather the statistics
                router.eval()
                logits = router.linear(router.router_input(x))
                share = router(x)[1].selected.mean(0)
            spread.append((logits[:, 0] - logits[:, 1]).std().item())
            minority.append(share.min().item())
        out[norm] = {
            "logit_diff_std": sum(spread) / len(spread),
            "minority_expert_share": sum(minority) / len(minority),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
