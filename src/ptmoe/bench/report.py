"""bench.md: the tables of one benchmark run."""

from __future__ import annotations


def to_markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"Command: `{result['command']}`",
        "",
        f"Device: {result['device']}; dtype {cfg['dtype']}; versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
    ]
    if result.get("synthetic"):
        lines += [
            f"Synthetic batch: {cfg['batch_size']} x {cfg['seq_len']} tokens + {cfg['prompt_length']} "
            f"prompt tokens, loss on the last half; median of {cfg['steps']} steps after "
            f"{cfg['warmup']} warm-up, methods interleaved round-robin (LoRA after, alone). "
            f"Memory: {result['synthetic'][0]['memory']}.",
            "",
            "| method | ms/step (median) | min ms | tokens/s | peak memory (GiB) | x forward | x PEFT PT (time) "
            "| x PEFT PT (memory) | trainable |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in result["synthetic"]:
            f = lambda k, fmt="{:.2f}": fmt.format(r[k]) if k in r else "-"
            lines.append(
                f"| {r['method']} | {r['ms']:.1f} | {min(r['ms_all']):.1f} | {r['tokens_per_s']:.0f} | "
                f"{r['peak_bytes'] / 2**30:.3f} | {f('x_forward')} | {f('x_peft_pt')} | "
                f"{f('mem_x_peft_pt')} | {r['trainable']:,} |"
            )
        lines.append("")
    if result.get("real"):
        r = result["real"]
        lines += [
            f"Real data: {r['examples']} Disfl-QA training examples (mean {r['mean_len']:.0f} tokens, "
            f"{r['label_tokens']} answer tokens), {r['batches']} batches of {cfg['batch_size']}, one pass, the two "
            "pipelines in lockstep (a batch of each in turn), collation included.",
            "",
            "| pipeline | seconds | real tokens/s | padding | x PEFT PT |",
            "|---|---:|---:|---:|---:|",
            f"| ours ({r['ours']['method']}, length-grouped, fast loss) | {r['ours']['seconds']:.2f} | "
            f"{r['ours']['tokens_per_s']:.0f} | {r['ours']['pad_fraction']:.1%} | {r['x_peft_pt']:.2f} |",
            f"| PEFT prompt tuning (DataCollatorForSeq2Seq, random order) | {r['peft_pt']['seconds']:.2f} | "
            f"{r['peft_pt']['tokens_per_s']:.0f} | {r['peft_pt']['pad_fraction']:.1%} | 1.00 |",
            "",
        ]
    if result.get("generate"):
        r = result["generate"]
        lines += [
            f"Generation: {r['examples']} held-out Disfl-QA questions, batches of {cfg['batch_size']}, greedy, "
            f"{r['max_new_tokens']} new tokens each (EOS ignored), same batches for both.",
            "",
            "| generate | seconds | examples/s | new tokens/s | x PEFT PT |",
            "|---|---:|---:|---:|---:|",
            f"| ours (AdaptedModel.generate, pt, {r.get('cache', 'dynamic')} cache) | {r['ours']['seconds']:.2f} | {r['ours']['examples_per_s']:.2f} | "
            f"{r['ours']['new_tokens_per_s']:.1f} | {r['x_peft_pt']:.2f} |",
            f"| PEFT prompt tuning generate | {r['peft_pt']['seconds']:.2f} | "
            f"{r['peft_pt']['examples_per_s']:.2f} | {r['peft_pt']['new_tokens_per_s']:.1f} | 1.00 |",
            "",
        ]
    if result.get("tokens"):
        r = result["tokens"]
        parted = ", ".join(f"row {d['row']} at step {d['first_step']}" for d in r["differ"][:10])
        lines += [
            f"Tokens: our generate with the {r['cache']} cache against the plain path ({r['plain']} cache, eager), "
            f"{r['examples']} held-out questions, batches of {cfg['batch_size']}, {r['max_new_tokens']} greedy "
            f"tokens each: **{r['rows_equal']}/{r['examples']} rows the same**"
            + (f" (differ: {parted})" if parted else "")
            + ".",
            "",
        ]
    if result.get("profile"):
        lines += _profile_lines(result["profile"])
    return "\n".join(lines)


def _profile_lines(r: dict) -> list[str]:
    cuda = "device_busy" in r["ours"]
    names = {"ours": f"ours ({r['cache']} cache)", "peft_pt": "PEFT prompt tuning"}
    lines = [
        f"Profile: one batch of {r['profiled_batch']} (the longest prompts), {r['max_new_tokens']} new tokens "
        "each, under torch.profiler after one warm-up call. Host syncs: reads of a device value "
        "(`aten::_local_scalar_dense`) and stream/device synchronizations.",
        "",
        "| generate | ms (profiled) | host ops / new token | host syncs |"
        + (" device busy | kernels | gaps > 50 µs | their ms |" if cuda else ""),
        "|---|---:|---:|---:|" + ("---:|---:|---:|---:|" if cuda else ""),
    ]
    for k, name in names.items():
        p = r[k]
        row = f"| {name} | {p['ms']:.1f} | {p['host_ops_per_token']:.0f} | {p['syncs']} |"
        if cuda:
            row += f" {p['device_busy']:.0%} | {p['kernels']} | {p['gaps']} | {p['gap_ms']:.1f} |"
        lines.append(row)
    lines += ["", f"Top {'kernels (device time)' if cuda else 'operations (self CPU time)'}:", ""]
    for k, name in names.items():
        tops = "; ".join(f"`{n[:60]}` {ms:.1f} ms x{c}" for n, ms, c in r[k]["top"])
        lines.append(f"* {name}: {tops}")
    return lines + [""]
