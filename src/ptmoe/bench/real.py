"""The real-data parts: Disfl-QA training examples (ours vs PEFT prompt tuning, collation included) and
batched greedy generation on held-out questions."""

from __future__ import annotations

import gc
import random
import time

import torch
from transformers import DataCollatorForSeq2Seq

from ..collate import length_grouped_batches, pad_batch
from ..data import format as fmt
from ..data.format import special_ids
from ..generation import default_cache
from .common import _dev_batch, _ours, _peft_pt, _prepared_rows, _sync, _train_step, _unwrap
from .options import generate_cache

REAL_SET = "disflqa"  # span answers on Wikipedia passages (SQuAD 2.0 rewritten), a set every machine can get


def bench_real(base, tok, args, device, log) -> dict:
    B, T = args.batch_size, args.prompt_length
    encoded = []
    for ex in _prepared_rows(REAL_SET + "/train", args.real_examples, args.seed):
        enc = fmt.encode_train(ex, tok, args.seq_len)
        if enc is not None:
            encoded.append(enc)
        if len(encoded) == args.real_examples:
            break
    n_batches = len(encoded) // B
    if n_batches == 0:
        raise ValueError(
            f"real part: only {len(encoded)} Disfl-QA examples fit in --seq-len {args.seq_len}; "
            f"need at least --batch-size {B}"
        )
    encoded = encoded[: n_batches * B]
    real_tokens = sum(len(e["input_ids"]) for e in encoded)
    label_tokens = sum(sum(1 for x in e["labels"] if x != -100) for e in encoded)
    lengths = [len(e["input_ids"]) for e in encoded]
    pad_id = special_ids(tok)[0]
    out = {
        "examples": len(encoded),
        "batches": n_batches,
        "real_tokens": real_tokens,
        "label_tokens": label_tokens,
        "mean_len": real_tokens / max(len(encoded), 1),
    }

    # ours: length-grouped batches, right padding, the fast loss
    torch.manual_seed(args.seed)
    ours = _ours(base, args.real_method, T, tok).train()
    opt_o = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-3)
    grouped = length_grouped_batches(lengths, B, args.seed)
    collate_ours = lambda b: pad_batch([encoded[i] for i in b], pad_id, side="right")
    # PEFT prompt tuning: random order, transformers' padding collator (prompt learning leaves the base as is)
    torch.manual_seed(args.seed)
    peft_model = _peft_pt(base, T).train()
    opt_p = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    order = list(range(len(encoded)))
    random.Random(args.seed).shuffle(order)
    rand_batches = [order[i : i + B] for i in range(0, n_batches * B, B)]
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100, return_tensors="pt")
    collate_peft = lambda b: collator(
        [{"input_ids": encoded[i]["input_ids"], "labels": encoded[i]["labels"]} for i in b]
    )
    pipes = {
        "ours": (_train_step(ours, opt_o, None, ours=True), grouped, collate_ours),
        "peft_pt": (_train_step(peft_model, opt_p, None, ours=False), rand_batches, collate_peft),
    }
    for step, batches, collate in pipes.values():  # warm-up
        step(_dev_batch(collate(batches[0]), device))
    _sync(device)
    secs, padded = {k: 0.0 for k in pipes}, {k: 0 for k in pipes}
    for i in range(n_batches):  # lockstep: one batch of each in turn (fair under shared-machine load)
        for k, (step, batches, collate) in pipes.items():
            t0 = time.perf_counter()
            batch = _dev_batch(collate(batches[i]), device)
            step(batch)
            _sync(device)
            secs[k] += time.perf_counter() - t0
            padded[k] += batch["input_ids"].numel()
    for k in pipes:
        out[k] = {
            "seconds": secs[k],
            "tokens_per_s": real_tokens / secs[k],
            "padded_tokens": padded[k],
            "pad_fraction": 1 - real_tokens / padded[k],
        }
    out["ours"]["method"] = args.real_method
    for k, label in (("ours", f"ours ({args.real_method})"), ("peft_pt", "peft-pt")):
        log(f"  {label:14s} {out[k]['tokens_per_s']:9.1f} real tokens/s, pad {out[k]['pad_fraction']:.1%}")
    _unwrap(peft_model)
    del ours, peft_model, opt_o, opt_p, pipes
    gc.collect()
    out["x_peft_pt"] = out["ours"]["tokens_per_s"] / out["peft_pt"]["tokens_per_s"]
    return out


def _gen_batches(tok, args, device):
    """The held-out questions in length-sorted batches, collate(batch, side), the part's description."""
    B, M = args.batch_size, args.max_new_tokens
    prompts = []
    for ex in _prepared_rows(REAL_SET + "/heldout", args.gen_examples, args.seed):
        ids = fmt.encode_eval(ex, tok, args.seq_len + M, M)
        if ids is not None:
            prompts.append(ids)
        if len(prompts) == args.gen_examples:
            break
    if not prompts:
        raise ValueError(f"generation part: no held-out Disfl-QA question fits in --seq-len {args.seq_len}")
    prompts.sort(key=len)  # the same length-sorted batches for both
    batches = [prompts[i : i + B] for i in range(0, len(prompts), B)]
    pad_id = special_ids(tok)[0]
    out = {
        "examples": len(prompts),
        "batches": len(batches),
        "max_new_tokens": M,
        "prompt_tokens": sum(map(len, prompts)),
        "cache": generate_cache(args) or default_cache(device),
    }
    collate = lambda b, side: _dev_batch(pad_batch([{"input_ids": p} for p in b], pad_id, side), device)
    return batches, collate, out


def generation_contenders(base, tok, args, device):
    """The held-out questions in batches (the same for both) and the two contenders: -> batches,
    {name: (generate(batch) -> new tokens made, padding side)}, collate(batch, side), the part's
    description, PEFT's model (to unwrap when done)."""
    T, M = args.prompt_length, args.max_new_tokens
    batches, collate, out = _gen_batches(tok, args, device)
    pad_id = special_ids(tok)[0]

    torch.manual_seed(args.seed)
    ours = _ours(base, "pt", T, tok).eval()

    def gen_ours(batch):
        new = ours.generate(
            batch["input_ids"],
            batch["attention_mask"],
            max_new_tokens=M,
            eos_token_id=None,
            pad_token_id=pad_id,
            cache=generate_cache(args),
        )
        return new.numel()

    torch.manual_seed(args.seed)
    peft_model = _peft_pt(base, T).eval()

    def gen_peft(batch):
        with torch.no_grad():
            seq = peft_model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                max_new_tokens=M,
                min_new_tokens=M,
                do_sample=False,
                pad_token_id=pad_id,
            )
        return seq[:, batch["input_ids"].shape[1] :].numel()

    # ours pads on the right (generate left-aligns itself); HF generate needs left padding
    pipes = {"ours": (gen_ours, "right"), "peft_pt": (gen_peft, "left")}
    return batches, pipes, collate, out, peft_model


def bench_generate(base, tok, args, device, log) -> dict:
    batches, pipes, collate, out, peft_model = generation_contenders(base, tok, args, device)
    # warm-up: on CUDA every batch (each new shape of the static cache compiles once: that time is
    # reported apart, as warmup_seconds), elsewhere the first batch
    warm = batches if device.type == "cuda" else batches[:1]
    warmup = {}
    for k, (fn, side) in pipes.items():
        t0 = time.perf_counter()
        for b in warm:
            fn(collate(b, side))
        _sync(device)
        warmup[k] = time.perf_counter() - t0
    secs, made = {k: 0.0 for k in pipes}, {k: 0 for k in pipes}
    for b in batches:  # lockstep, as in the real-data part
        for k, (fn, side) in pipes.items():
            _sync(device)
            t0 = time.perf_counter()
            made[k] += fn(collate(b, side))
            _sync(device)
            secs[k] += time.perf_counter() - t0
    for k in pipes:
        out[k] = {
            "seconds": secs[k],
            "examples_per_s": out["examples"] / secs[k],
            "new_tokens_per_s": made[k] / secs[k],
            "new_tokens": made[k],
            "warmup_seconds": warmup[k],
        }
    log(f"  ours (pt)      {out['ours']['new_tokens_per_s']:9.1f} new tokens/s")
    log(f"  peft-pt        {out['peft_pt']['new_tokens_per_s']:9.1f} new tokens/s")
    _unwrap(peft_model)  # (the models are freed on return: the closures above hold them until then)
    out["x_peft_pt"] = out["ours"]["new_tokens_per_s"] / out["peft_pt"]["new_tokens_per_s"]
    return out


def check_tokens(base, tok, args, device, log) -> dict:
    """Our generate's fast path (``--gen-cache``, default per device) against the plain one (dynamic
    cache, eager): the same greedy tokens for every held-out question? Rows that differ are listed
    with the first step where they part."""
    batches, collate, out = _gen_batches(tok, args, device)
    fast = out["cache"]
    torch.manual_seed(args.seed)
    model = _ours(base, "pt", args.prompt_length, tok).eval()
    pad_id = special_ids(tok)[0]
    differ = []
    for i, b in enumerate(batches):
        batch = collate(b, "left")
        got = {
            cache: model.generate(
                batch["input_ids"], batch["attention_mask"], args.max_new_tokens, None, pad_id, cache=cache
            )
            for cache in ("dynamic", fast)
        }
        for r in range(len(b)):
            parted = (got["dynamic"][r] != got[fast][r]).nonzero()
            if len(parted):
                differ.append({"row": i * args.batch_size + r, "first_step": int(parted[0, 0])})
    out.update(plain="dynamic", rows_equal=out["examples"] - len(differ), differ=differ)
    log(f"  {fast} cache vs dynamic: {out['rows_equal']}/{out['examples']} rows the same tokens")
    return out
