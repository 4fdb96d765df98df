"""What the evaluation window costs: on the prepared QA sets, how many evaluation prompts change when an
over-long passage is cut by the question (`eval.window: question`, the default, what a user's question
gets) instead of around the gold answer as ptmoe did before (`eval.window: answer` with every answer
looked for in the passage, yes/no labels too, and a question whose answer is not found dropped and scored
0: the label read to build the prompt), and the F1 of the base model and an adapter under each (docs/data.md).

    python benchmarks/eval_window.py --sets disflqa boolq narrativeqa pubmedqa --n 48 \
        [--adapter RUN/best] [--max-length 320]

Prompts are counted on every held-out question of each set; F1 is measured on the first --n questions
per set (one per passage in turn), each model under both windows, greedy, as `ptmoe eval` scores them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ptmoe.config.loading import load_config
from ptmoe.data import load_split, prepare
from ptmoe.data.format import encode_eval
from ptmoe.device import default_device
from ptmoe.evaluation.evaluate import evaluate, load_for_eval


def as_before(examples):
    """The examples as the former window saw them: every answer a span to look for in the passage."""
    return [{**ex, "answer_type": "span"} for ex in examples]


def changed_prompts(examples, tok, max_length, max_new):
    """(prompts that differ between the two windows, prompts cut at all, questions)."""
    changed = cut = 0
    for ex, before in zip(examples, as_before(examples)):
        by_answer = encode_eval(before, tok, max_length, max_new, "answer")
        by_question = encode_eval(ex, tok, max_length, max_new, "question")
        full = encode_eval(ex, tok, 10**6, max_new, "question")
        cut += by_question != full
        changed += by_answer != by_question
    return changed, cut, len(examples)


def scores(cfg, adapter, window, model, tok, examples):
    cfg = {**cfg, "eval": {**cfg["eval"], "window": window}}
    if window == "answer":  # the former rule: the eval sets written out as span records
        cfg = {**cfg, "data": {**cfg["data"], "eval": [str(examples[s]) for s in cfg["data"]["eval"]]}}
    res = evaluate(cfg, adapter, None, model=model, tok=tok, log=lambda *a: None, progress=False)
    res["sets"] = {
        spec: res["sets"][str(examples[spec])] if window == "answer" else res["sets"][spec] for spec in examples
    }
    return {spec: r["f1"] for spec, r in res["sets"].items()}, res["average"]["f1"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", nargs="+", default=["disflqa", "boolq", "narrativeqa", "pubmedqa"])
    p.add_argument("--n", type=int, default=48, help="questions per set for the F1 columns")
    p.add_argument("--max-length", type=int, default=320, help="data.max_length (the demo's)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--adapter", default=None, help="an adapter folder to score as well (e.g. RUN/best)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--skip-base", action="store_true", help="score the adapter only")
    args = p.parse_args()

    done = prepare(args.sets, log=lambda *a: None)
    if done.missing:
        raise SystemExit(next(iter(done.missing.values())))
    specs = [f"{s}/heldout" for s in args.sets]
    cfg = load_config(
        None,
        [
            f"model={args.model}",
            f"data.eval={specs}",
            f"data.max_length={args.max_length}",
            f"data.max_eval_examples={args.n}",
            "data.eval_sample=per_passage",
            f"eval.max_new_tokens={{qa: {args.max_new_tokens}}}",
            "eval.routing_value=false",
        ],
    )
    device = default_device()
    model, tok = load_for_eval(cfg, None, device)
    print(f"max_length {args.max_length}, {args.max_new_tokens} new tokens: prompts over every held-out question")
    print("| set | questions | passage cut | prompt changed (answer -> question window) |")
    print("|---|---|---|---|")
    for spec in specs:
        changed, cut, n = changed_prompts(load_split(spec), tok, args.max_length, args.max_new_tokens)
        print(f"| {spec} | {n} | {cut} ({100 * cut / n:.0f}%) | {changed} ({100 * changed / n:.0f}%) |")

    rows = [] if args.skip_base and args.adapter else [("base model", None, model)]
    if args.adapter:
        rows.append((f"adapter {args.adapter}", args.adapter, load_for_eval(cfg, args.adapter, device)[0]))
    print(f"\nF1 on the first {args.n} questions per set (one per passage in turn), greedy")
    print("| model | window | " + " | ".join(specs) + " | average |")
    print("|---|---|" + "---|" * (len(specs) + 1))
    folder = Path(tempfile.mkdtemp(prefix="eval_window_"))
    files = {}
    for spec in specs:  # the held-out sets as the former window saw them, as files `ptmoe eval` reads
        files[spec] = folder / f"{spec.split('/')[0]}.jsonl"
        files[spec].write_text("".join(json.dumps(e) + "\n" for e in as_before(load_split(spec))))
    for name, adapter, m in rows:
        got = {w: scores(cfg, adapter, w, m, tok, files) for w in ("answer", "question")}
        for w, (per_set, avg) in got.items():
            print(f"| {name} | {w} | " + " | ".join(f"{per_set[s]:.2f}" for s in specs) + f" | {avg:.2f} |")
        delta = [got["question"][0][s] - got["answer"][0][s] for s in specs] + [got["question"][1] - got["answer"][1]]
        print(f"| {name} | question - answer | " + " | ".join(f"{d:+.2f}" for d in delta) + " |")


if __name__ == "__main__":
    main()
