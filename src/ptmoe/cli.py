"""The `ptmoe` command line. Each subcommand lives with its recipe; this file only wires them."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module with add_arguments(parser) and run(args)
COMMANDS = {
    "params": ("ptmoe.cli", "Print the trainable parameter count of a method on a base model"),
    "train": ("ptmoe.recipes.train", "Train a method from a YAML config (key=value overrides)"),
    "eval": ("ptmoe.recipes.evaluate", "Evaluate a base model or adapter on QA / math sets"),
    "generate": ("ptmoe.recipes.generate", "Answer questions with one or several trained adapters"),
    "compare": ("ptmoe.recipes.compare", "Train and evaluate several methods side by side"),
    "demo": ("ptmoe.recipes.demo", "The main job: PT-MoE on QA with the embedded model, before/after"),
    "bench": ("ptmoe.bench", "Speed and memory, side by side with PEFT"),
    "data": ("ptmoe.data.cli", "Prepare and list the packaged benchmark data"),
}

# short flags for the most used method options
OPTION_FLAGS = {"prompt_length": "num_tokens", "experts": "experts", "rank": "rank", "top_k": "top_k",
                "lora_r": "r"}


def parse_value(text: str):
    """YAML scalars for key=value options: 1 -> int, 0.3 -> float, true -> bool, [a, b] -> list."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_assignments(items: list[str], where: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"ptmoe: error: {where}: expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def method_options_from_args(args) -> dict:
    opts = {field: getattr(args, flag) for flag, field in OPTION_FLAGS.items() if getattr(args, flag, None) is not None}
    opts.update(parse_assignments(getattr(args, "option", None), "--option"))
    return opts


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="ptmoe", help="ptmoe, pt, dpt, smop, attempt, lora, hydralora, ft, none")
    p.add_argument("--prompt-length", dest="prompt_length", type=int, help="soft prompt tokens (T)")
    p.add_argument("--experts", type=int, help="number of experts (N)")
    p.add_argument("--rank", type=int, help="rank of the decomposition (R)")
    p.add_argument("--top-k", dest="top_k", type=int, help="experts selected per input")
    p.add_argument("--lora-r", dest="lora_r", type=int, help="LoRA rank")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="any other method option")


# ---- params ---------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="base model (default: the embedded smollm2-135m-instruct)")
    add_method_arguments(p)


def run(args) -> int:
    from .base_models import DEFAULT_MODEL, count_trainable, load_base_config

    config = load_base_config(args.model or DEFAULT_MODEL)
    print(count_trainable(args.method, method_options_from_args(args), config))
    return 0


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptmoe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:  # import only the module that runs: keeps `ptmoe --help` fast
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    args = parser.parse_args(argv)
    try:
        return args._run(args) or 0
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"ptmoe {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
