"""Can a router's input tell the tasks apart, before any training? (docs/routing.md)

For the training mix of a config (a train or compare config), read every candidate router input
(`router_input`: the input embeddings, or the frozen model's hidden states after layer L; `router_pool`:
mean or last token) of training rows (training windows, `data.train_max_length`) and of the held-out
evaluation questions as inference sees them (`data.max_length` prompts, no answer), and report per input:

- probe train->eval: a linear probe (logistic regression on standardised inputs, the router's own form)
  fit on training rows and scored on the evaluation questions: what a router taught in training keeps at use
  (the train / evaluation shift included);
- probe eval: the same probe fit on half of the evaluation questions, scored on the other half;
- k-means MI: the mutual information (bits) between task and a k-means clustering (k = the number of
  tasks) of the evaluation questions, and of the training rows: what a router that must find the split by
  itself (the paper's, `router_init: kmeans`, growth's new rows) can find;
- prefill cost: the router pass's time over a full forward of the same evaluation prompts.

    python benchmarks/router_separability.py configs/routing-mix.yaml --train-rows 300 --eval-rows 100

`--equal-windows` cuts training rows to the evaluation prompts' length: what is left between the two probe
columns then is not the window.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import yaml

from ptmoe.base_models import load_base_model
from ptmoe.collate import pad_batch
from ptmoe.config.loading import DATA_SUFFIXES
from ptmoe.data import load_eval_set
from ptmoe.data.format import encode_dataset, special_ids
from ptmoe.evaluation.routing import mutual_information_bits
from ptmoe.experiments.plan import shared_config
from ptmoe.inputs import context_mask, position_ids_from_mask
from ptmoe.methods.ptmoe import kmeans
from ptmoe.methods.router_input import hidden_states_after, pool_states
from ptmoe.training.data import encode_sources, read_sources


def task_of(set_name: str) -> str:
    """A prepared split's set (disflqa/heldout -> disflqa); a local file's name without its suffixes, as a
    training row's `set` names it (data/colour.jsonl -> colour)."""
    if set_name.endswith(DATA_SUFFIXES):
        return Path(set_name).name.split(".")[0]
    return set_name.split("/")[0]


def training_rows(cfg, tok, per_source):
    sources, _, rng = read_sources(cfg, log=lambda *a: None)
    sources = [(spec, ex[:per_source]) for spec, ex in sources]
    rows, _ = encode_sources(cfg, sources, [], rng, tok, log=lambda *a: None)
    return rows, [task_of(r["set"]) for r in rows]


def evaluation_rows(cfg, tok, per_set, tasks_trained):
    """Held-out questions of the evaluation sets that belong to a training task (SQuAD-Shifts has no
    training source of its own: a probe fit on the sources cannot be scored on it)."""
    rows, tasks = [], []
    for spec in cfg["data"]["eval"]:
        if task_of(spec) not in tasks_trained:
            continue
        examples = load_eval_set(spec, cfg["data"], log=lambda *a: None)[:per_set]
        enc, _ = encode_dataset(examples, tok, cfg["data"]["max_length"], train=False, max_new_tokens=16)
        rows += [dict(r, labels=[-100] * len(r["input_ids"])) for r in enc]
        tasks += [task_of(spec)] * len(enc)
    return rows, tasks


@torch.no_grad()
def read_inputs(lm, rows, pad_id, layers, pools, batch_size=16) -> dict:
    """{(layer, pool): [n, H]} for every layer (0: the embeddings) and pooling, one pass per batch."""
    emb, out = lm.get_input_embeddings(), {}
    hidden = [L for L in layers if L > 0]
    for i in range(0, len(rows), batch_size):
        b = pad_batch(rows[i : i + batch_size], pad_id, side="left")
        mask = context_mask(b["attention_mask"], b["labels"])
        e = emb(b["input_ids"])
        states = {0: e, **(hidden_states_after(lm, e, mask, hidden) if hidden else {})}
        for L in layers:
            for pool in pools:
                out.setdefault((L, pool), []).append(pool_states(states[L], mask, pool))
    return {k: torch.cat(v) for k, v in out.items()}


def probe(x_fit, y_fit, x_test, y_test, k, seed=0, steps=300):
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-6
    torch.manual_seed(seed)  # the probe's initialisation: the same figure on every rerun
    lin = torch.nn.Linear(x_fit.shape[1], k)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin((x_fit - mean) / std), y_fit).backward()
        opt.step()
    return (lin((x_test - mean) / std).argmax(-1) == y_test).float().mean().item()


def kmeans_bits(x, y, names):
    _, assign = kmeans(x, len(names), torch.Generator().manual_seed(0))
    counts = {n: torch.bincount(assign[y == i], minlength=len(names)).tolist() for i, n in enumerate(names)}
    return mutual_information_bits(counts)


@torch.no_grad()
def prefill_costs(lm, rows, pad_id, layers, repeats=2) -> dict:
    """Seconds of each router pass over the seconds of a full forward, on the same padded batch."""
    b = pad_batch(rows, pad_id, side="left")
    ids, mask = b["input_ids"], b["attention_mask"]
    e = lm.get_input_embeddings()(ids)

    def best(fn):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    full = best(lambda: lm(inputs_embeds=e, attention_mask=mask, position_ids=position_ids_from_mask(mask)))
    return {L: (best(lambda: hidden_states_after(lm, e, mask, [L])) / full if L else 0.0) for L in layers}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--train-rows", type=int, default=300, help="training rows per source")
    ap.add_argument("--eval-rows", type=int, default=100, help="evaluation questions per set")
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="0: the input embeddings")
    ap.add_argument("--pools", nargs="+", default=["mean", "last", "tail:32"], help="router_pool values")
    ap.add_argument(
        "--equal-windows", action="store_true", help="training rows cut to data.max_length too (the shift's part)"
    )
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    cfg = shared_config(yaml.safe_load(open(args.config)), args.config)
    cfg["seed"] = 0
    cfg["data"]["max_eval_examples"] = args.eval_rows
    if args.equal_windows:
        cfg["data"]["train_max_length"] = cfg["data"]["max_length"]
    random.seed(0)
    base, tok = load_base_model(cfg["model"], torch.float32)
    base.eval()
    pad_id = special_ids(tok)[0]
    train, train_tasks = training_rows(cfg, tok, args.train_rows)
    evals, eval_tasks = evaluation_rows(cfg, tok, args.eval_rows, set(train_tasks))
    names = sorted(set(train_tasks) | set(eval_tasks))
    y_train = torch.tensor([names.index(t) for t in train_tasks])
    y_eval = torch.tensor([names.index(t) for t in eval_tasks])
    x_train = read_inputs(base, train, pad_id, args.layers, args.pools)
    x_eval = read_inputs(base, evals, pad_id, args.layers, args.pools)
    costs = prefill_costs(base, evals[:16], pad_id, args.layers)
    half = torch.randperm(len(evals), generator=torch.Generator().manual_seed(0))
    a, b = half[: len(evals) // 2], half[len(evals) // 2 :]
    print(f"{args.config}: tasks {names}; {len(train)} training rows, {len(evals)} evaluation questions")
    print(
        "| router input | pool | probe train->eval | probe eval | k-means MI eval (bit) | k-means MI train (bit) | prefill cost |"
    )
    print("|---|---|---|---|---|---|---|")
    table = []
    for (L, pool), xe in x_eval.items():
        xt, k = x_train[(L, pool)], len(names)
        row = {
            "router_input": "embeddings" if L == 0 else f"hidden:{L}",
            "pool": pool,
            "probe_train_to_eval": probe(xt, y_train, xe, y_eval, k),
            "probe_eval": probe(xe[a], y_eval[a], xe[b], y_eval[b], k),
            "kmeans_bits_eval": kmeans_bits(xe, y_eval, names),
            "kmeans_bits_train": kmeans_bits(xt, y_train, names),
            "prefill_cost": costs[L],
        }
        table.append(row)
        print(
            f"| {row['router_input']} | {pool} | {row['probe_train_to_eval']:.3f} | {row['probe_eval']:.3f} | "
            f"{row['kmeans_bits_eval']:.2f} | {row['kmeans_bits_train']:.2f} | {row['prefill_cost']:.3f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "tasks": names, "rows": table}, f, indent=2)


if __name__ == "__main__":
    main()
