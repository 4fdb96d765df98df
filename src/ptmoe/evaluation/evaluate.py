"""Evaluation (`ptmoe eval`, and every command that scores a run): batched greedy generation with the
KV cache, per-task answer length and stop rules, F1/EM (QA) or accuracy (math) per set and averaged,
the router's usage and routing value, written to results.json."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..adapted import AdaptedModel
from ..base_models import load_base_model
from ..collate import pad_batch
from ..config.presets import eval_route
from ..config.schema import ConfigError
from ..data import load_eval_set
from ..data.format import encode_dataset, special_ids
from ..data.load import entry_for
from ..device import default_device, resolve_dtype
from ..methods.router import routers
from .metrics import average, set_scores
from .routing import RouterMonitor, plot_usage
from .routing_value import routing_value


def load_for_eval(cfg: dict, adapter: str | None, device):
    base, tok = load_base_model(cfg["model"], resolve_dtype(cfg["dtype"], device))
    base = base.to(device)
    if adapter:
        return AdaptedModel.from_pretrained(adapter, base, tok), tok
    return AdaptedModel(base, "none", {}, tok), tok  # the frozen base model behind the same interface


@torch.no_grad()
def generate_answers(
    model,
    tok,
    examples,
    batch_size,
    max_length,
    max_new_tokens,
    monitor=None,
    progress=True,
    window="question",
    route_as=None,
):
    """Greedy answers for examples, batched by length (left padding); an over-long passage is cut by the
    rule `window` (data/format.py), which never reads the answer unless it is `answer`. route_as: the training
    source the rows belong to for `route_by: source` (default: each row's set). Returns (texts, n_dropped)."""
    enc, dropped = encode_dataset(examples, tok, max_length, train=False, max_new_tokens=max_new_tokens, window=window)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]["input_ids"]))
    texts = [None] * len(examples)
    device = next(model.parameters()).device
    pad_id, eos = special_ids(tok)
    for s in tqdm(range(0, len(order), batch_size), disable=not progress, desc="generate", file=sys.stderr):
        rows = [enc[i] for i in order[s : s + batch_size]]
        b = pad_batch(rows, pad_id, side="left")
        sets = [examples[r["index"]].get("set", "?") for r in rows]
        out, routing = model.generate(
            b["input_ids"].to(device),
            b["attention_mask"].to(device),
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad_id,
            row_sources=[route_as or s for s in sets],  # only the oracle bracket (route_by: source) reads them
            return_routing=True,
        )
        if monitor is not None:
            monitor.observe(sets, routing)
        for r, ids in zip(rows, out.tolist()):
            texts[r["index"]] = tok.decode(ids, skip_special_tokens=True)
    return texts, dropped


def score_set(examples, texts) -> dict:
    return set_scores(examples[0].get("task", "qa"), texts, [ex["answers"] for ex in examples])


def evaluate(
    cfg: dict, adapter: str | None = None, out_dir: str | None = None, model=None, tok=None, log=print, progress=True
) -> dict:
    device = default_device()
    if model is None:
        model, tok = load_for_eval(cfg, adapter, device)
    model.eval()
    monitor = RouterMonitor(log=log)
    e, d = cfg["eval"], cfg["data"]
    results = {
        "model": cfg["model"],
        "adapter": adapter,
        "method": model.method if adapter else "base",
        "num_trainable": model.num_trainable() if adapter else 0,
        "sets": {},
        "predictions": {},
    }
    t0 = time.time()
    loaded = {}
    for spec in d["eval"]:
        examples = loaded[spec] = load_eval_set(spec, d, log=log)
        if not examples:
            raise ConfigError(f"data.eval: {spec} has no examples")
        task = examples[0].get("task", "qa")
        max_new = e["max_new_tokens"].get(task, 32)
        by_source = getattr(model.adapter, "route_by", None) == "source" and entry_for(d["eval_source"], spec)
        route_as = eval_route(cfg, spec, list(model.adapter.sources)) if by_source else None
        texts, dropped = generate_answers(
            model, tok, examples, e["batch_size"], d["max_length"], max_new, monitor, progress, e["window"], route_as
        )
        res = score_set(examples, texts)
        if dropped:
            log(
                f"[data] {spec}: {dropped} of {len(examples)} questions do not fit data.max_length="
                f"{d['max_length']} even with the passage cut to a window (eval.window: {e['window']}): scored 0"
            )
        res["dropped_too_long"] = dropped
        results["sets"][spec] = res
        results["predictions"][spec] = [
            {"id": ex.get("id"), "answers": ex["answers"], "prediction": t} for ex, t in zip(examples, texts)
        ]
    results["average"] = average(results["sets"])
    if monitor.totals():  # a routed adapter was used
        results["router"] = monitor.totals()
        found = routers(model)
        if e["routing_value"] and found and found[0].experts > 1:
            answer = lambda ex, max_new: generate_answers(
                model, tok, ex, e["batch_size"], d["max_length"], max_new, window=e["window"]
            )[0]
            max_new = {spec: e["max_new_tokens"].get(ex[0].get("task", "qa"), 32) for spec, ex in loaded.items()}
            results["router"]["routing_value"] = routing_value(
                model, loaded, results["predictions"], answer, max_new, log
            )
    results["wall_s"] = time.time() - t0
    if out_dir or adapter:
        out = Path(out_dir) if out_dir else Path(adapter).parent / "eval"
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        if results.get("router", {}).get("per_set"):
            (out / "router.json").write_text(json.dumps(results["router"], indent=2))
            plot_usage(results["router"], out / "router.png")
        results["results_path"] = str(out / "results.json")
    return results


def format_table(results: dict) -> str:
    lines = [f"{'set':32s} {'n':>5s} {'F1':>7s} {'EM':>7s} {'acc':>7s}"]
    for name, r in results["sets"].items():
        f1, em, acc = (f"{r[k]:7.2f}" if k in r else f"{'':7s}" for k in ("f1", "em", "accuracy"))
        lines.append(f"{name:32s} {r['n']:5d} {f1} {em} {acc}")
    a = results["average"]
    f1, em, acc = (f"{a[k]:7.2f}" if k in a else f"{'':7s}" for k in ("f1", "em", "accuracy"))
    lines.append(f"{'average':32s} {'':5s} {f1} {em} {acc}")
    lines.append(f"trainable parameters: {results['num_trainable']:,}  ({results['method']})")
    return "\n".join(lines)
