"""Why a routed adapter's expert shares differ between training and evaluation.

`ptmoe train` reports the expert shares accumulated over the whole run (router moving, exploration
noise on, training rows); `ptmoe eval` those of the final adapter on the evaluation questions, noise
off. This script takes one run folder and changes one factor at a time (routing only: embedding
lookups and the router, no LM forward, seconds on one core):

  run_total            the run's own accumulated training share (train_summary.json)
  run_windows          the share in each logged window of the run (log.jsonl): how far the router moved
  final_train_rows     the adapter on the training rows' prompts, noise off
  final_train_noise    the same with the exploration noise of training on (mean over --draws draws)
  final_eval           the adapter on the evaluation questions (as `ptmoe eval` encodes them), noise off;
                       eval_passages: how many distinct passages those questions are on (the pooled
                       input is mostly the passage; rerun with data.max_eval_examples=N for more)
  final_eval_stats_*   (router_input_norm: standardize only) the evaluation questions with the
                       running statistics re-estimated on the training prompts / on the eval questions

    python benchmarks/expert_shares.py configs/demo.yaml runs/demo [key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_base_model
from ptmoe.collate import pad_batch
from ptmoe.config.loading import load_config
from ptmoe.data import load_eval_set
from ptmoe.data.format import encode_dataset, special_ids
from ptmoe.inputs import context_mask
from ptmoe.methods.base import masked_mean
from ptmoe.training.data import load_sources


@torch.no_grad()
def shares(model, module, rows, pad_id, train_mode=False, batch_size=16) -> list[float]:
    """Share of rows whose top-1 expert is each expert, routing on what inference sees (the prompt)."""
    module.train(train_mode)
    counts = None
    for s in range(0, len(rows), batch_size):
        b = pad_batch(rows[s : s + batch_size], pad_id)
        embeds = model.lm.get_input_embeddings()(b["input_ids"])
        routing = module.prompt_call(embeds, context_mask(b["attention_mask"], b.get("labels"))).routing
        top = routing.selected * routing.probs
        c = torch.bincount(top.argmax(-1), minlength=top.shape[1]).float()
        counts = c if counts is None else counts + c
    module.eval()
    return (counts / counts.sum()).tolist()


@torch.no_grad()
def restandardise(model, module, rows, pad_id, batch_size=16):
    """A copy of the module whose running statistics are re-estimated on `rows` (prompts only)."""
    m = copy.deepcopy(module)
    r = m.router
    r.input_mean.zero_(), r.input_var.fill_(1.0), r.input_count.zero_()
    for s in range(0, len(rows), batch_size):
        b = pad_batch(rows[s : s + batch_size], pad_id)
        embeds = model.lm.get_input_embeddings()(b["input_ids"])
        r._update_stats(masked_mean(embeds, context_mask(b["attention_mask"], b.get("labels"))))
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("run", help="a run folder of `ptmoe train` (train_summary.json, log.jsonl, best/)")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--adapter", default="best", help="adapter folder inside the run")
    ap.add_argument("--draws", type=int, default=20, help="noise draws for final_train_noise")
    args = ap.parse_intermixed_args()
    cfg = load_config(args.config, args.overrides)
    run = Path(args.run)
    base, tok = load_base_model(cfg["model"])
    model = AdaptedModel.from_pretrained(run / args.adapter, base, tok)
    module, pad_id = model.prompt_module, special_ids(tok)[0]
    train_rows, _ = load_sources(cfg, tok, log=lambda *a: None)
    eval_rows, passages = [], set()
    for spec in cfg["data"]["eval"]:
        ex = load_eval_set(spec, cfg["data"], log=lambda *a: None)
        passages |= {(spec, e.get("context", "")) for e in ex}
        task = ex[0].get("task", "qa")
        enc, _ = encode_dataset(
            ex, tok, cfg["data"]["max_length"], train=False, max_new_tokens=cfg["eval"]["max_new_tokens"].get(task, 32)
        )
        eval_rows += enc
    summary = json.loads((run / "train_summary.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    out = {
        "run": str(run),
        "adapter": args.adapter,
        "train_rows": len(train_rows),
        "eval_rows": len(eval_rows),
        "eval_passages": len(passages),  # questions on one passage pool nearly the same tokens
        "run_total": summary["router"].get("expert_share"),
        "run_windows": {r["step"]: [round(x, 3) for x in r["expert_share"]] for r in log if "expert_share" in r},
        "final_train_rows": shares(model, module, train_rows, pad_id),
    }
    # train mode (noise on) would also update running statistics: each draw on a copy
    noisy = [shares(model, copy.deepcopy(module), train_rows, pad_id, train_mode=True) for _ in range(args.draws)]
    out["final_train_noise"] = [sum(x) / len(noisy) for x in zip(*noisy)]
    out["final_eval"] = shares(model, module, eval_rows, pad_id)
    if module.router.input_norm == "standardize":
        out["final_eval_stats_train_prompts"] = shares(
            model, restandardise(model, module, train_rows, pad_id), eval_rows, pad_id
        )
        out["final_eval_stats_eval_questions"] = shares(
            model, restandardise(model, module, eval_rows, pad_id), eval_rows, pad_id
        )
    shares_fmt = lambda v: [round(x, 3) for x in v] if isinstance(v, list) else v
    print("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(shares_fmt(v))}" for k, v in out.items()) + "\n}")


if __name__ == "__main__":
    main()
