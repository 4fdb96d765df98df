"""How large a trained soft prompt is next to the model's own token embeddings: the L2 norm of each
prompt row (the prompt an adapter builds for real evaluation prompts, routing included) against the
norms of the vocabulary's embedding rows. A prompt far outside the embeddings' range is one lead for why
a short run can garble names it should copy (docs/parity.md, "The demo on AVX2"). Seconds on one core.

    python benchmarks/prompt_norms.py configs/demo.yaml runs/demo/best
"""

from __future__ import annotations

import argparse

import torch

from ptmoe.data import load_eval_set
from ptmoe.data.format import encode
from ptmoe.inputs import context_mask
from ptmoe.model import PtmoeModel
from ptmoe.models import load_base_model
from ptmoe.recipes.config import load_config


def quantiles(x: torch.Tensor) -> str:
    q = torch.quantile(x.float(), torch.tensor([0.0, 0.5, 1.0]))
    return f"min {q[0]:.2f}  median {q[1]:.2f}  max {q[2]:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("adapter")
    ap.add_argument("--rows", type=int, default=32, help="evaluation prompts to build prompts for")
    args = ap.parse_args()
    cfg = load_config(args.config, [])
    base, tok = load_base_model(cfg["model"])
    model = PtmoeModel.from_pretrained(args.adapter, base, tok).eval()
    spec = cfg["data"]["eval"][0]
    examples = load_eval_set(spec, cfg["data"], log=lambda *a: None)[: args.rows]
    batch = encode(examples, tok, train=False, max_length=cfg["data"]["max_length"])
    with torch.no_grad():
        embeds = base.get_input_embeddings()(batch["input_ids"])
        prompt = model.adapter.soft_prompt(embeds, context_mask(batch["attention_mask"], None))
        vocab = base.get_input_embeddings().weight.norm(dim=-1)
        text = embeds.norm(dim=-1)[batch["attention_mask"].bool()]
    print(f"adapter {args.adapter}: {prompt.shape[1]} prompt rows, {len(examples)} prompts of {spec}")
    print(f"prompt row norms      {quantiles(prompt.norm(dim=-1).flatten())}")
    print(f"vocabulary row norms  {quantiles(vocab)}")
    print(f"prompt tokens' norms  {quantiles(text)}  (the real tokens of the same prompts)")


if __name__ == "__main__":
    main()
