"""`ptmoe lm-eval ARGS...` (= `python -m ptmoe.interop.lm_eval_cli ARGS...`): lm-eval's own command line
with the `ptmoe` model registered and the offline `ptmoe_*` tasks on the include path.

lm-eval 0.4.x finds model classes only in its registry, filled by imports (it has no plugin entry
points), so the plain `lm_eval` command cannot see `--model ptmoe`; this entry imports the registration
first, writes the task folder (`lm_eval_tasks.write_tasks`) and then calls lm-eval's CLI main.
For the ptmoe_* tasks it adds `--apply_chat_template` unless given: adapters are trained on prompts
rendered with the chat template (data.format).
"""

from __future__ import annotations

import argparse
import sys


def lm_eval_argv(args: list[str]) -> list[str]:
    # on use: `ptmoe --help` and each command start without torch, loading only what they run
    from .lm_eval_tasks import write_tasks

    args = list(args)
    tasks = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--tasks"), "")
    tasks = tasks or next((a.split("=", 1)[1] for a in args if a.startswith("--tasks=")), "")
    if "ptmoe" in tasks:
        if not any(a == "--include_path" or a.startswith("--include_path=") for a in args):
            args += ["--include_path", str(write_tasks())]
        if not any(a.startswith("--apply_chat_template") for a in args):
            args.append("--apply_chat_template")
    return args


def main(argv: list[str] | None = None) -> int:
    # on use: `ptmoe --help` and each command start without torch, loading only what they run
    from lm_eval.__main__ import cli_evaluate

    from . import lm_eval_model  # noqa: F401  registers --model ptmoe

    args = lm_eval_argv(sys.argv[1:] if argv is None else argv)
    sys.argv = ["lm-eval", *args]
    cli_evaluate()
    return 0


# `ptmoe lm-eval`: everything after the subcommand goes to lm-eval unchanged
def add_arguments(p) -> None:
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="lm-eval arguments (lm-eval run --help)")


def run(args) -> int:
    return main(args.lm_eval_args)


if __name__ == "__main__":
    sys.exit(main())
