"""`ptmoe serve`: an OpenAI-compatible HTTP server for a base model and its adapters.

    ptmoe serve --adapter qa=runs/qa/best --adapter math=runs/math/best [--engine hf|vllm]
    ptmoe serve --adapter runs/qa/best            (served as model `qa`)

The request's `model` picks the adapter (the base model's name: no adapter). See serving/ for the
pieces: routes (app.py), the request queue (batcher.py), the engines (engine_hf.py, engine_vllm.py).
"""

from __future__ import annotations

import logging

from ..base_models import DEFAULT_MODEL


def add_arguments(p):
    p.add_argument("--model", default=DEFAULT_MODEL, help="base model (its name is the model id for no adapter)")
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="serve the adapter in PATH as model NAME (a bare PATH: named after its folder, or its run's for "
        "RUN/best); repeat for several",
    )
    p.add_argument(
        "--engine",
        choices=["hf", "vllm"],
        default="hf",
        help="hf: the project's batched generation (every method); vllm: vLLM's engine",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together at most")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before new ones get 503")
    p.add_argument("--batch-wait", type=float, default=0.02, help="seconds to wait for company for a batch")
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds before a request gets 504")
    p.add_argument("--max-tokens", type=int, default=512, help="chat max_tokens when a request gives none")
    p.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to vllm.LLM (e.g. tensor_parallel_size=2, max_model_len=4096)",
    )
    p.add_argument("--log-level", default="info")


def build(args):
    """(app, engine) from the parsed arguments; every bad option is named before a model loads."""
    # on use: `ptmoe --help` and each command start without torch, loading only what they run
    import torch

    from ..cli import parse_assignments
    from ..serving.adapters import load_served, parse_adapter_args
    from ..serving.app import create_app

    for flag in ("max_batch", "max_queue"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')}: must be >= 1")
    if args.request_timeout <= 0 or args.batch_wait < 0:
        raise ValueError("--request-timeout must be > 0 and --batch-wait >= 0")
    adapters = parse_adapter_args(args.adapter, args.model, note=logging.getLogger("ptmoe.serve").info)
    vllm_options = parse_assignments(args.vllm_arg, "--vllm-arg")
    if vllm_options and args.engine != "vllm":
        raise ValueError("--vllm-arg: only with --engine vllm")
    if args.engine == "vllm":
        from ..persistence import read_adapter_config
        from ..serving.engine_vllm import check_supported

        check_supported(args.model, {n: read_adapter_config(p)["method"] for n, p in adapters.items()})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    served = load_served(args.model, adapters, device=device)
    if args.engine == "vllm":
        from ..serving.engine_vllm import VLLMEngine

        engine = VLLMEngine(served, **vllm_options)
    else:
        from ..serving.engine_hf import HFEngine

        engine = HFEngine(served)
    app = create_app(
        engine, served, args.max_queue, args.max_batch, args.batch_wait, args.request_timeout, args.max_tokens
    )
    return app, engine


def run(args):
    # on use: `ptmoe --help` and each command start without torch, loading only what they run
    from ..serving.server import serve_forever

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app, _ = build(args)
    serve_forever(app, args.host, args.port, args.log_level)
    return 0
