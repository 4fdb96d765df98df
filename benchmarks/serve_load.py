"""Load benchmark of `ptmoe serve` on localhost: N chat requests from C concurrent clients (the official
openai client), greedy, for a mix of the base model, a pt and a ptmoe adapter. Three servers, one after
the other, in this one process: the hf engine decoding one request at a time (--max-batch 1), the hf
engine batching, and the vllm engine. Prints requests/s, tokens/s, p50/p95 latency and the ratios to
one-at-a-time as a markdown table.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/serve_load.py [--requests 64] [--clients 8]

Bounded: every phase stops after --phase-timeout seconds (unfinished requests are counted as such).
Adapters are untrained (text-initialised prompts): speed does not depend on what they learned.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

QUESTIONS = [
    "What is the capital of France?",
    "Name three colors.",
    "Why is the sky blue?",
    "Give me a word that rhymes with cat.",
    "What is 12 times 7?",
    "Describe a cat in one sentence.",
    "What is the boiling point of water?",
    "Who wrote Romeo and Juliet?",
]


def make_adapters(model_name: str, root: Path) -> dict[str, str]:
    from ptmoe.adapted import AdaptedModel
    from ptmoe.base_models import load_base_model

    base, tok = load_base_model(model_name)
    out = {}
    for i, (method, options) in enumerate(
        {"pt": {"num_tokens": 20}, "ptmoe": {"num_tokens": 20, "experts": 2, "rank": 8}}.items()
    ):
        out[method] = str(AdaptedModel(base, method, options, tok, seed=i).save_pretrained(root / method))
    return out


def load(url: str, names: list[str], requests: int, clients: int, max_tokens: int, timeout: float) -> dict:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=timeout)

    def one(i: int):
        t = time.perf_counter()
        r = client.chat.completions.create(
            model=names[i % len(names)],
            max_tokens=max_tokens,
            temperature=0,
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        )
        return time.perf_counter() - t, r.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one, i) for i in range(requests)]
        done, _ = wait(futures, timeout=timeout)
        for f in futures:
            f.cancel()
    wall = time.perf_counter() - start
    ok = [f.result() for f in done if f.exception() is None]
    lat = sorted(x[0] for x in ok)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    return {
        "done": len(ok),
        "failed": len(done) - len(ok),
        "unfinished": requests - len(done),
        "wall_s": wall,
        "req_per_s": len(ok) / wall,
        "tok_per_s": sum(x[1] for x in ok) / wall,
        "p50_s": statistics.median(lat) if lat else float("nan"),
        "p95_s": pct(0.95),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--phase-timeout", type=float, default=600)
    p.add_argument("--engines", default="one-at-a-time,hf,vllm")
    args = p.parse_args(argv)

    from ptmoe.serving.adapters import load_served
    from ptmoe.serving.app import create_app
    from ptmoe.serving.engine_hf import HFEngine
    from ptmoe.serving.server import Background

    with tempfile.TemporaryDirectory() as tmp:
        served = load_served(args.model, make_adapters(args.model, Path(tmp)))
        names = [served.base_name, "pt", "ptmoe"]
        rows = {}
        for phase in args.engines.split(","):
            if phase == "vllm":
                from ptmoe.serving.engine_vllm import VLLMEngine

                engine = VLLMEngine(served, max_model_len=2048)
            else:
                engine = HFEngine(served)
            app = create_app(
                engine,
                served,
                max_queue=args.requests,
                max_batch=1 if phase == "one-at-a-time" else args.clients,
                batch_wait=0.01,
                request_timeout=args.phase_timeout,
            )
            with Background(app) as url:
                load(url, names, 2, 1, 4, args.phase_timeout)  # warm-up
                rows[phase] = load(url, names, args.requests, args.clients, args.max_tokens, args.phase_timeout)
                rows[phase]["largest_batch"] = app.state.batcher.snapshot()["largest_batch"]
            engine.close()
            print(f"[bench] {phase}: {rows[phase]}", file=sys.stderr, flush=True)
    ref = rows.get("one-at-a-time") or next(iter(rows.values()))
    print(
        f"{args.requests} chat requests from {args.clients} concurrent clients, max_tokens {args.max_tokens}, "
        f"greedy, models {', '.join(names)} in turn; model {args.model}\n"
    )
    print("| server | done | req/s | tokens/s | p50 s | p95 s | largest batch | req/s ratio | p95 ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for phase, r in rows.items():
        print(
            f"| {phase} | {r['done']}/{args.requests} | {r['req_per_s']:.2f} | {r['tok_per_s']:.1f} | "
            f"{r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['largest_batch']} | {r['req_per_s'] / ref['req_per_s']:.2f}x "
            f"| {r['p95_s'] / ref['p95_s']:.2f}x |"
        )
    return 0


if __name__ == "__main__":  # the vllm engine spawns processes that re-import this module
    sys.exit(main())
