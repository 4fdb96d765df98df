"""The synthetic part: a fixed batch, every contender's training step interleaved round-robin."""

from __future__ import annotations

import gc

import torch

from .common import PEFT, _dev_batch, _interleaved, _ours, _train_step, _unwrap, changes_base


def bench_synthetic(base, tok, args, device, methods, log) -> list[dict]:
    B, S, T = args.batch_size, args.seq_len, args.prompt_length
    g = torch.Generator().manual_seed(args.seed)
    vocab = base.get_input_embeddings().weight.shape[0]
    ids = torch.randint(3, min(vocab, 32000), (B, S), generator=g)
    labels = ids.clone()
    labels[:, : S // 2] = -100  # loss on the last half of the tokens
    batch = _dev_batch({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}, device)
    full = _dev_batch(
        {"input_ids": torch.cat([torch.randint(3, min(vocab, 32000), (B, T), generator=g), ids], 1)}, device
    )
    full_mask = torch.ones_like(full["input_ids"])

    def forward_step():
        with torch.no_grad():
            base(input_ids=full["input_ids"], attention_mask=full_mask, use_cache=False)

    results = {}
    # group 1: the frozen forward and every prompt method share the untouched base model;
    # then each contender that changes the base model's weights (LoRA) runs alone and is removed
    groups = [[m for m in methods if not changes_base(m)]] + [[m] for m in methods if changes_base(m)]
    for group in groups:
        if not group:
            continue
        steps, mods, keep, trainable = {}, {}, [], {}
        for name in group:
            if name == "forward":
                steps[name], mods[name], trainable[name] = forward_step, [base], 0
                continue
            torch.manual_seed(args.seed)
            peft = PEFT.get(name)
            module = (peft(base, T) if peft else _ours(base, name, T, tok)).train()
            params = [p for p in module.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=1e-3)
            steps[name] = _train_step(module, opt, batch, ours=name not in PEFT)
            mods[name], trainable[name] = [module], sum(p.numel() for p in params)
            keep.append((name, module))
        res = _interleaved(steps, device, args.steps, args.warmup, mods)
        for name in group:
            results[name] = dict(res[name], trainable=trainable[name])
        for name, module in keep:  # leave the base model as it was for the next group
            _unwrap(module) if name in PEFT else module.adapter.remove()
        del steps, mods, keep
        gc.collect()
    rows = []
    for name in methods:
        r = dict(results[name], method=name)
        r["tokens_per_s"] = B * S / (r["ms"] / 1000)
        log(f"  {name:10s} {r['ms']:10.1f} ms/step  {r['peak_bytes'] / 2**30:7.3f} GiB")
        rows.append(r)
    ref = {r["method"]: r for r in rows}
    for r in rows:
        for key, other in (("x_forward", "forward"), ("x_peft_pt", "peft-pt")):
            if other in ref:
                r[key] = r["ms"] / ref[other]["ms"]
        if "peft-pt" in ref:
            r["mem_x_peft_pt"] = r["peak_bytes"] / ref["peft-pt"]["peak_bytes"]
    return rows
