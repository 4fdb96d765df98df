"""How well can a grown router keep old inputs on old experts and send new ones to the new expert?
(docs/continual.md)

Growth freezes the old router rows and trains one new row with two router-only losses: replay
(cross-entropy of stored old inputs toward the expert the old router chose) and route (-log of the
new expert's probability on the new task's inputs). This fits that new row alone, offline, on the
pooled router inputs (`AdaptedModel.pooled_inputs`) of the old and new training sets, with replay
stores of several sizes and several step counts, and reports on held-out questions the share of old
inputs still on old experts and of new inputs on the new expert. A linear probe with every row free
(logistic regression on standardised inputs) is the bracket: how separable the two tasks are at all
for a router of this form. Embedding lookups and a linear layer only (a few minutes on a CPU).

    python benchmarks/growth_router.py configs/continual-qa.yaml --adapter RUN/train/best \
        --old disflqa --new boolq --stores 64,1000 --steps 40,400,2000
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_base_model
from ptmoe.config.loading import read_config_file
from ptmoe.data.format import special_ids
from ptmoe.experiments.plan import shared_config
from ptmoe.training.data import load_sources


def pooled(model, tok, cfg, spec: str, n: int, window: bool) -> torch.Tensor:
    """Router inputs of n rows of a set: training windows (data.train_max_length) or whole prompts."""
    cfg = copy.deepcopy(cfg)
    cfg["data"].update(train=[spec], valid_examples=1, max_train_examples=n + 1)
    if not window:
        cfg["data"]["train_max_length"] = None
    rows, _ = load_sources(cfg, tok, log=lambda *a, **k: None)
    with torch.no_grad():
        return model.pooled_inputs(rows[:n], special_ids(tok)[0]).float()


def fit_new_row(router, old_x, new_x, store: int, steps: int, lr: float, batch: int, replay_batch: int, seed: int):
    """The new row (weight, bias) trained with the replay and route losses; the old rows frozen."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        old_choice = router.clean_logits(old_x[:store]).argmax(-1)
    w = torch.zeros(old_x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)

    def logits(x):
        with torch.no_grad():
            old = router.clean_logits(x).float()
        return torch.cat([old, (router.router_input(x) @ w + b)[:, None]], 1)

    for _ in range(steps):
        i = torch.randint(0, store, (replay_batch,), generator=g)
        j = torch.randint(0, len(new_x), (batch,), generator=g)
        replay = F.cross_entropy(logits(old_x[:store][i]), old_choice[i])
        route = -torch.log_softmax(logits(new_x[j]), -1)[:, -1].mean()
        opt.zero_grad()
        (replay + route).backward()
        opt.step()
    return lambda x: logits(x).argmax(-1).detach()


def probe(old_x, new_x, old_test, new_test, steps: int = 500) -> float:
    """Held-out accuracy of a logistic regression old vs new on standardised inputs (every weight free)."""
    x = torch.cat([old_x, new_x])
    y = torch.cat([torch.zeros(len(old_x)), torch.ones(len(new_x))])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w, b = torch.zeros(x.shape[1], requires_grad=True), torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(((x - mu) / sd) @ w + b, y) + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        right = torch.cat([(((old_test - mu) / sd) @ w + b) < 0, (((new_test - mu) / sd) @ w + b) > 0])
    return right.float().mean().item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="a continual config (model and data lengths)")
    p.add_argument("--adapter", required=True, help="the trained adapter to grow (a first stage's train/best)")
    p.add_argument("--old", default="disflqa", help="the old task's prepared set name")
    p.add_argument("--new", default="boolq", help="the new task's prepared set name")
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--test-rows", type=int, default=200)
    p.add_argument("--stores", default="64,1000", help="replay store sizes (old training inputs kept)")
    p.add_argument("--steps", default="40,400,2000")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    raw = read_config_file(args.config)
    cfg = shared_config({k: v for k, v in raw.items() if k in ("model", "dtype", "data", "train", "grow")}, args.config)
    base, tok = load_base_model(cfg["model"])
    model = AdaptedModel.from_pretrained(args.adapter, base, tok).eval()
    router = model.prompt_module.router
    old_x, new_x = (pooled(model, tok, cfg, f"{s}/train", args.train_rows, True) for s in (args.old, args.new))
    old_t, new_t = (pooled(model, tok, cfg, f"{s}/heldout", args.test_rows, False) for s in (args.old, args.new))
    experts = router.experts
    print(f"{len(old_x)} + {len(new_x)} training inputs, {len(old_t)} + {len(new_t)} held-out questions")
    print(
        f"linear probe, every weight free ({args.old} vs {args.new}, held out): {probe(old_x, new_x, old_t, new_t):.3f}"
    )
    print(f"| store | steps | held-out {args.old} on old experts | held-out {args.new} on the new expert |")
    print("|---|---|---|---|")
    for store in (int(s) for s in args.stores.split(",")):
        for steps in (int(s) for s in args.steps.split(",")):
            route = fit_new_row(
                router,
                old_x,
                new_x,
                min(store, len(old_x)),
                steps,
                lr=cfg["train"]["lr"],
                batch=cfg["train"]["batch_size"],
                replay_batch=cfg["grow"]["replay_batch"],
                seed=args.seed,
            )
            kept = (route(old_t) < experts).float().mean().item()
            moved = (route(new_t) == experts).float().mean().item()
            print(f"| {store} | {steps} | {kept:.3f} | {moved:.3f} |")


if __name__ == "__main__":
    main()
