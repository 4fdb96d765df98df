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
            f"Real data: {r['examples']} SQuAD training examples (mean {r['mean_len']:.0f} tokens, "
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
            f"Generation: {r['examples']} held-out SQuAD questions, batches of {cfg['batch_size']}, greedy, "
            f"{r['max_new_tokens']} new tokens each (EOS ignored), same batches for both.",
            "",
            "| generate | seconds | examples/s | new tokens/s | x PEFT PT |",
            "|---|---:|---:|---:|---:|",
            f"| ours (AdaptedModel.generate, pt) | {r['ours']['seconds']:.2f} | {r['ours']['examples_per_s']:.2f} | "
            f"{r['ours']['new_tokens_per_s']:.1f} | {r['x_peft_pt']:.2f} |",
            f"| PEFT prompt tuning generate | {r['peft_pt']['seconds']:.2f} | "
            f"{r['peft_pt']['examples_per_s']:.2f} | {r['peft_pt']['new_tokens_per_s']:.1f} | 1.00 |",
            "",
        ]
    return "\n".join(lines)
