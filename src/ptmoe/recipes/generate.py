"""`ptmoe generate`: answer questions with one or several trained adapters on one base model.
With several adapters, one batch mixes examples for all of them (each row gets its own prompt)."""

from __future__ import annotations

import json

import torch

from ..adapted import AdaptedModel
from ..base_models import DEFAULT_MODEL, check_model_name, load_base_model
from ..collate import pad_batch
from ..data.format import build_prompt_text, special_ids
from ..device import default_device, resolve_dtype
from ..evaluation.metrics import stop_answer


def add_arguments(p):
    p.add_argument("--model", default=DEFAULT_MODEL, help="base model")
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help='adapter folder; repeat to load several (rows pick one with "adapter": NAME)',
    )
    p.add_argument("--question", help="a question")
    p.add_argument("--context", default="", help="passage for a QA question")
    p.add_argument("--task", choices=["qa", "math"], default=None, help="default: qa with a context, else math")
    p.add_argument(
        "--file",
        help="jsonl of {question, context?, task?, adapter?}; one line out per row: question, answer and the adapter "
        "that answered (the NAME the row gave, else the folder of the first --adapter; null: the base model)",
    )
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU and on CPUs with bf16 instructions), bf16, fp32")


def parse_adapters(items):
    out = {}
    for i, item in enumerate(items):
        name, _, path = item.rpartition("=") if "=" in item else (f"a{i}", "", item)
        out[name or f"a{i}"] = path
    return out


def run(args):
    rows = []
    if args.file:
        with open(args.file) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{args.file}:{n}: invalid JSON ({e.msg})") from None
                    if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                        raise ValueError(f"{args.file}:{n}: field 'question' missing or not a string")
                    rows.append(row)
    elif args.question:
        rows.append({"question": args.question, "context": args.context})
    else:
        raise ValueError("give --question or --file")
    adapters = parse_adapters(args.adapter)
    check_model_name(args.model)  # fail before any load: a wrong name or adapter folder
    for path in adapters.values():
        AdaptedModel.read_adapter_config(path)
    for row in rows:
        row.setdefault("task", args.task or ("qa" if row.get("context") else "math"))
        if row.get("adapter") is not None and row["adapter"] not in adapters:  # never answer it with another model
            raise ValueError(f"adapter {row['adapter']!r} not given with --adapter (have {sorted(adapters) or 'none'})")
    answers = answer(rows, args.model, adapters, args.batch_size, args.max_new_tokens, args.dtype)
    first = next(iter(adapters), None)  # what answers a row that names no adapter
    for row, a in zip(rows, answers):
        used = row.get("adapter") or adapters.get(first)  # the row's name, else the folder (None: the base model)
        print(json.dumps({"question": row["question"], "adapter": used, "answer": a}) if args.file else a)
    return 0


@torch.no_grad()
def answer(rows, model_name, adapters: dict, batch_size=16, max_new_tokens=None, dtype: str = "auto"):
    device = default_device()
    base, tok = load_base_model(model_name, resolve_dtype(dtype, device))
    base = base.to(device)
    names = list(adapters)
    if names:
        model = AdaptedModel.from_pretrained(adapters[names[0]], base, tok, adapter_name=names[0])
        for n in names[1:]:
            model.load_adapter(adapters[n], n)
    else:
        model = AdaptedModel(base, "none", {}, tok)  # the frozen base model alone
    model.eval()
    pad_id, eos = special_ids(tok)
    out = []
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        enc = [
            {"input_ids": tok(build_prompt_text(r, tok), add_special_tokens=not tok.chat_template)["input_ids"]}
            for r in chunk
        ]
        b = pad_batch(enc, pad_id, side="left")
        mixed = [r.get("adapter", names[0]) for r in chunk] if len(names) > 1 else None
        limit = max_new_tokens or max(24 if r["task"] == "qa" else 200 for r in chunk)
        ids = model.generate(
            b["input_ids"].to(device),
            b["attention_mask"].to(device),
            max_new_tokens=limit,
            eos_token_id=eos,
            pad_token_id=pad_id,
            adapter_names=mixed,
        )
        out += [stop_answer(tok.decode(x, skip_special_tokens=True), r["task"]) for r, x in zip(chunk, ids.tolist())]
    return out
