"""The `ptmoe` command line. Each subcommand lives with its recipe; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys

from . import __version__
from .training.run_folder import RunStopped

# subcommand -> module with add_arguments(parser) and run(args)
COMMANDS = {
    "params": ("ptmoe.cli", "Print the trainable parameter count of a method on a base model"),
    "train": ("ptmoe.recipes.train", "Train a method from a YAML config (key=value overrides)"),
    "eval": ("ptmoe.recipes.evaluate", "Evaluate a base model or adapter on QA / math sets"),
    "generate": ("ptmoe.recipes.generate", "Answer questions with one or several trained adapters"),
    "compare": ("ptmoe.recipes.compare", "Train and evaluate several methods side by side"),
    "continual": (
        "ptmoe.recipes.continual",
        "Learn tasks in sequence (growth and brackets): R[stage][task], forgetting",
    ),
    "demo": ("ptmoe.recipes.demo", "The main job: PT-MoE on QA with the embedded model, before/after"),
    "bench": ("ptmoe.bench", "Speed and memory, side by side with PEFT"),
    "data": ("ptmoe.data.cli", "Prepare and list the packaged benchmark data"),
    "export": ("ptmoe.recipes.export", "Write an adapter in another library's format (PEFT)"),
    "lm-eval": ("ptmoe.interop.lm_eval_cli", "lm-evaluation-harness with --model ptmoe and the offline ptmoe_* tasks"),
    "serve": ("ptmoe.recipes.serve", "An OpenAI-compatible HTTP server for the base model and adapters"),
    "config": ("ptmoe.recipes.config", "Show a resolved config (every default) or write the config reference"),
}
DESCRIPTION = (
    "Fine-tune a frozen causal language model with PT-MoE soft prompts or a baseline (prompt tuning, DPT, "
    "SMoP, ATTEMPT, LoRA, HydraLoRA, full fine-tuning): train, evaluate, compare, answer, serve and export "
    "adapters. `ptmoe COMMAND --help` describes a command; `ptmoe demo` runs the main example."
)
OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")  # a dotted key=value override

# short flags for the most used method options
OPTION_FLAGS = {"prompt_length": "num_tokens", "experts": "experts", "rank": "rank", "top_k": "top_k", "lora_r": "r"}


def parse_assignments(items: list[str], where: str) -> dict:
    # on use: `ptmoe --help` and each command start without torch, loading only what they run
    from .config.loading import parse_value

    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"ptmoe: error: {where}: expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v)  # the config's number rules: 5e-5 is a float
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
    # on use: `ptmoe --help` and each command start without torch, loading only what they run
    from .base_models import DEFAULT_MODEL, check_model_name, count_trainable, load_base_config

    check_model_name(args.model or DEFAULT_MODEL)
    config = load_base_config(args.model or DEFAULT_MODEL)
    print(count_trainable(args.method, method_options_from_args(args), config))
    return 0


def _version() -> str:
    return __version__


def build_parser(chosen=()) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command line, with the arguments of the commands in `chosen` (each imports its module; the
    others are names only, which keeps `ptmoe --help` fast). -> (parser, command -> its parser)."""
    parser = argparse.ArgumentParser(prog="ptmoe", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for name, (module, help_text) in COMMANDS.items():
        p = commands[name] = sub.add_parser(
            name, help=help_text, description=help_text, epilog=f"What it does, in detail: docs/cli.md#ptmoe-{name}"
        )
        if name in chosen and name != "lm-eval":  # lm-eval parses its own arguments
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    if chosen == "lm-eval":  # every argument after it is lm-eval's own
        return importlib.import_module(COMMANDS[chosen][0]).main(argv[1:])
    parser, _ = build_parser([chosen] if chosen else [])
    args, extra = parser.parse_known_args(argv)
    place_overrides(args, extra, parser)
    try:
        return args._run(args) or 0
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"ptmoe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:  # training ended early: where things are, and how to continue
        print(f"ptmoe {args.command}: {e}", file=sys.stderr)
        if e.resumable and args.command == "train":
            again = [a for a in argv if a != "--resume"]
            print(f"resume with: ptmoe {' '.join(shlex.quote(a) for a in again)} --resume", file=sys.stderr)
        elif e.resumable and args.command in ("compare", "continual"):
            print("run the same command again: finished runs are kept, the stopped one resumes", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # training catches its own (it says where to resume); elsewhere: no traceback
        print(f"ptmoe {args.command}: interrupted", file=sys.stderr)
        return 130


def place_overrides(args, extra: list[str], parser) -> None:
    """key=value overrides may come anywhere, also after flags (`eval cfg.yaml --adapter X data.max_eval_examples=4`):
    argparse leaves those it could not place in `extra`; they join the overrides (the first non-override
    word is the config file when none was given). Any other word joins them too, so that an override
    missing its `=` is named as one wherever it stands."""
    if extra and hasattr(args, "overrides"):
        for item in extra:
            if item.startswith("-"):
                parser.error(f"unrecognized arguments: {item}")
            elif hasattr(args, "config") and args.config is None and not OVERRIDE.match(item):
                args.config = item
            else:
                args.overrides.append(item)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")


if __name__ == "__main__":
    sys.exit(main())
