"""Offline lm-evaluation-harness tasks on the data `ptmoe data prepare` builds.

lm-eval's stock tasks (squadv2, gsm8k, mathqa, ...) read from the hub. These read the prepared local
files through lm-eval's documented route (`dataset_path: json` + `data_files`):
    ptmoe_disflqa   disflqa/heldout   generate_until   f1, em (SQuAD v1.1 definitions, as `ptmoe eval`)
    ptmoe_gsm8k     gsm8k/heldout     generate_until   exact_match of the final number
    ptmoe_pubmedqa  pubmedqa/heldout  multiple_choice  acc, acc_norm (log-likelihood of yes / no / maybe)
    ptmoe_offline                     the group of the three
`write_tasks()` fills the YAML templates shipped in ./tasks with the prepared files' paths and writes
them, with the functions below (utils.py), into a folder for `--include_path`.
Prompts are the training prompts: `doc_to_text` is the user turn of `data.format`, and
`--apply_chat_template` renders it as training does (the ptmoe model's `apply_chat_template`).
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

from ..data.format import user_text
from ..evaluation.metrics import math_correct, qa_scores, stop_answer

TEMPLATES = Path(__file__).parent / "tasks"
TASKS = ("ptmoe_disflqa", "ptmoe_gsm8k", "ptmoe_pubmedqa")
GROUP = "ptmoe_offline"
UTILS = "from ptmoe.interop.lm_eval_tasks import doc_to_text, label_choices, label_index, process_math, process_qa  # noqa\n"


# ---- functions the task YAMLs call (`!function utils.NAME`) ---------------------------------------
def doc_to_text(doc: dict) -> str:
    return user_text(doc)


def first_line(text: str) -> str:
    """A QA answer: the generation up to its first line break (`metrics.stop_answer`)."""
    return stop_answer(text, "qa")


def process_qa(doc: dict, results: list[str]) -> dict:
    em, f1 = qa_scores(first_line(results[0]), doc["answers"])
    return {"f1": f1, "em": em}


def process_math(doc: dict, results: list[str]) -> dict:
    return {"exact_match": float(math_correct(results[0], doc["answers"][0]))}


LABELS = ("yes", "no", "maybe")


def label_choices(doc: dict) -> list[str]:
    return list(LABELS)


def label_index(doc: dict) -> int:
    return LABELS.index(doc["answers"][0])


# ---- writing the task folder -----------------------------------------------------------------------
def write_tasks(out_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Write the task YAMLs (paths filled in) and utils.py into out_dir (default: <cache>/lm_eval_tasks)."""
    # on use: `ptmoe lm-eval --help` starts without torch (base_models, data.fetch)
    from ..base_models import cache_dir as default_cache
    from ..data.fetch import data_dir

    data = data_dir(cache_dir)
    prepared = data / "prepared"
    files = {f"{name}_heldout": prepared / name / "heldout.jsonl" for name in ("disflqa", "gsm8k", "pubmedqa")}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: prepared data not found; run `ptmoe data prepare` first")
    out = Path(out_dir) if out_dir else Path(cache_dir or default_cache()) / "lm_eval_tasks"
    out.mkdir(parents=True, exist_ok=True)
    for template in sorted(TEMPLATES.glob("*.yaml")):
        text = Template(template.read_text()).substitute({k: json.dumps(str(v)) for k, v in files.items()})
        (out / template.name).write_text(text)
    (out / "utils.py").write_text(UTILS)
    return out


if __name__ == "__main__":
    import sys

    print(write_tasks(sys.argv[1] if len(sys.argv) > 1 else None))
