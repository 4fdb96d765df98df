"""Does a routed adapter route a training row the same with and without its answer?

For a trained adapter (ptmoe, smop, attempt) and the training rows of a config (the same encoding,
mix and seed as `ptmoe train`), compare per row:
  training  -- the routing of the training forward: `PtmoeModel.build_inputs` on prompt + answer with
               its labels (the first thing `forward` does; `--full-forward` runs `forward` itself)
  prompt    -- the routing `generate` computes at prefill from the prompt alone (left-padded batch;
               `--full-forward` runs `generate` itself)
  leaky     -- the pre-fix rule, for contrast: the prompt module reading the whole attention mask of the
               training row (prompt + answer), as `build_inputs` did before `model.context_mask`.
It prints how many rows get a different top expert (or, for ATTEMPT, a different top source) than
the prompt alone, and the largest difference of any expert weight. After the fix `training` is 0 / 0.

    python benchmarks/routing_leak.py configs/demo.yaml runs/demo/best --rows 320
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from ptmoe.collate import pad_batch
from ptmoe.data.format import special_ids
from ptmoe.model import PtmoeModel
from ptmoe.models import load_base_model
from ptmoe.recipes.config import load_config
from ptmoe.recipes.train_data import load_sources


def routing(model) -> torch.Tensor:
    """The expert weights of the prompt module's last call (ATTEMPT: its attention over prompts)."""
    return model.prompt_module.routing.weights.float().clone()


def prompt_rows(rows: list[dict]) -> list[dict]:
    """Each training row cut to its prompt: the tokens before its first labelled position."""
    out = []
    for r in rows:
        first = next(i for i, lab in enumerate(r["labels"]) if lab != -100)
        out.append({"input_ids": r["input_ids"][:first]})
    return out


@torch.no_grad()
def measure(model, rows: list[dict], pad_id: int, batch_size: int, full_forward: bool) -> dict:
    model.eval()  # no exploration noise, running statistics frozen: the same function in every column
    cols = {"training": [], "prompt": [], "leaky": []}
    for s in range(0, len(rows), batch_size):
        batch = rows[s : s + batch_size]
        b = pad_batch(batch, pad_id)
        if full_forward:
            model(b["input_ids"], b["attention_mask"], b["labels"])
        else:
            model.build_inputs(b["input_ids"], b["attention_mask"], b["labels"])
        cols["training"].append(routing(model))
        embeds = model.lm.get_input_embeddings()(b["input_ids"])
        model.prompt_module(embeds, b["attention_mask"])  # pre-fix: every real token, the answer too
        cols["leaky"].append(routing(model))
        p = pad_batch(prompt_rows(batch), pad_id, side="left")
        if full_forward:
            model.generate(p["input_ids"], p["attention_mask"], max_new_tokens=1, pad_token_id=pad_id)
        else:
            model.build_inputs(p["input_ids"], p["attention_mask"])
        cols["prompt"].append(routing(model))
    w = {k: torch.cat(v) for k, v in cols.items()}
    top = {k: v.argmax(-1) for k, v in w.items()}
    n = len(rows)
    report = {"rows": n}
    for k in ("training", "leaky"):
        report[k] = {
            "rows_with_another_top_expert": int((top[k] != top["prompt"]).sum()),
            "max_weight_difference": float((w[k] - w["prompt"]).abs().max()),
        }
    report["expert_share_prompt_alone"] = (torch.bincount(top["prompt"], minlength=w["prompt"].shape[1]) / n).tolist()
    return report


def answer_share(rows: list[dict]) -> float:
    """The answer's share of a training row's real tokens (what a leaky router pooled), averaged."""
    return sum(sum(lab != -100 for lab in r["labels"]) / len(r["input_ids"]) for r in rows) / len(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="the training config (its data, encoding and seed pick the rows)")
    ap.add_argument("adapter", help="a trained routed adapter folder (e.g. RUN/best)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides of the config")
    ap.add_argument("--rows", type=int, default=320, help="training rows to sample")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--full-forward",
        action="store_true",
        help="route through forward() and generate() end to end (slower: runs the LM)",
    )
    args = ap.parse_intermixed_args()
    cfg = load_config(args.config, args.overrides)
    base, tok = load_base_model(cfg["model"])
    model = PtmoeModel.from_pretrained(args.adapter, base, tok)
    if model.spec.kind != "prompt" or model.method in ("pt", "dpt"):
        raise SystemExit(f"{args.adapter}: method {model.method!r} has no input-dependent prompt")
    rows, _ = load_sources(cfg, tok, log=lambda *a: None)
    rows = random.Random(0).sample(rows, min(args.rows, len(rows)))
    out = {
        "config": args.config,
        "adapter": args.adapter,
        "method": model.method,
        "answer_share_of_pooled_tokens": answer_share(rows),
        **measure(model, rows, special_ids(tok)[0], args.batch_size, args.full_forward),
    }
    print(json.dumps(out, indent=2))
    print(
        f"\n| routing of a training row | rows whose top expert differs from the prompt alone | max weight diff |\n"
        f"|---|---|---|\n"
        f"| training forward (this code) | {out['training']['rows_with_another_top_expert']} / {out['rows']} | "
        f"{out['training']['max_weight_difference']:.2e} |\n"
        f"| leaky (pre-fix) routing | {out['leaky']['rows_with_another_top_expert']} / {out['rows']} | "
        f"{out['leaky']['max_weight_difference']:.2e} |"
    )


if __name__ == "__main__":
    main()
