"""The routing leak that the routing fix closed, on a tiny model: the training forward routes every row as the prompt
alone (0 rows differ), through build_inputs and through forward()/generate() end to end, while the
pre-fix rule (the whole attention mask) does not. The measurement was benchmarks/routing_leak.py (closed
with the routing fix; its figures are in docs/parity.md); its measuring part lives on here."""

import pytest
import torch

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.collate import pad_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def routing(model) -> torch.Tensor:
    """The expert weights of the model's last call (ATTEMPT: its attention over prompts)."""
    return model.routing.weights.float().clone()


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
        leaky = model.prompt_module.prompt_call(embeds, b["attention_mask"])  # pre-fix: the answer too
        cols["leaky"].append(leaky.routing.weights.float().clone())
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
    model = AdaptedModel(base, method, opts, tok, seed=1)
    with torch.no_grad():  # a router that reacts to its input strongly enough to show the leak
        m = model.prompt_module
        for p in (m.router.linear.weight,) if hasattr(m, "router") else (m.down.weight, m.up.weight):
            p.mul_(200)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n_prompt, n_answer in [(3, 9), (5, 7), (2, 12), (6, 6), (4, 10), (3, 3)]:
        ids = torch.randint(3, 259, (n_prompt + n_answer,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]})
    out = measure(model, rows, tok.pad_token_id or 0, batch_size=4, full_forward=full_forward)
    assert out["rows"] == 6
    assert out["training"]["rows_with_another_top_expert"] == 0
    assert out["training"]["max_weight_difference"] < 1e-5
    assert out["leaky"]["max_weight_difference"] > 1e-3  # the answer moves the pre-fix routing
