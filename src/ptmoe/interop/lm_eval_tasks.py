"""Offline lm-evaluation-harness tasks on the data `ptmoe data prepare` builds.

lm-eval's stock tasks (squadv2, gsm8k, mathqa, ...) read from the hub. These read the prepared local
files through lm-eval's documented route (`dataset_path: json` + `data_files`):
    ptmoe_squad   squad/heldout    generate_until   f1, em (SQuAD v1.1 definitions, as `ptmoe eval`)
    ptmoe_gsm8k   gsm8k/heldout    generate_until   exact_match of the final number
    ptmoe_mathqa  mathqa/test      multiple_choice  acc, acc_norm (log-likelihood of each option)
    ptmoe_offline                  the group of the three
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
TASKS = ("ptmoe_squad", "ptmoe_gsm8k", "ptmoe_mathqa")
GROUP = "ptmoe_offline"
UTILS = "from ptmoe.interop.lm_eval_tasks import doc_to_text, mathqa_choices, process_math, process_qa  # noqa\n"


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


def mathqa_choices(doc: dict) -> list[str]:
    return [f"The answer is {option}." for option in doc["options"]]


# ---- writing the task folder -----------------------------------------------------------------------
def _mathqa_with_options(prepared: Path, raw: Path, out: Path) -> Path:
    """mathqa/test keeps only the right answer; the options come from the same raw BIG-bench file
    (prepared id mathqa-<i> is raw example i)."""
    # on use: `ptmoe lm-eval --help` starts without torch (base_models, data.fetch)
    from ..data.fetch import BB

    raw_file = raw / BB / "elementary_math_qa/question_only/task.json"
    if not raw_file.is_file():
        raise FileNotFoundError(f"{raw_file}: not found; run `ptmoe data prepare`")
    examples = json.loads(raw_file.read_text())["examples"]
    path = out / "mathqa_choices.jsonl"
    with open(path, "w") as f, open(prepared / "mathqa" / "test.jsonl") as src:
        for line in src:
            doc = json.loads(line)
            scores = examples[int(doc["id"].split("-")[1])]["target_scores"]
            options = [k.strip() for k in scores]
            doc.update(options=options, gold=options.index(doc["answers"][0]))
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return path


def write_tasks(out_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Write the task YAMLs (paths filled in) and utils.py into out_dir (default: <cache>/lm_eval_tasks)."""
    # on use: `ptmoe lm-eval --help` starts without torch (base_models, data.fetch)
    from ..base_models import cache_dir as default_cache
    from ..data.fetch import data_dir

    data = data_dir(cache_dir)
    prepared = data / "prepared"
    files = {
        "squad_heldout": prepared / "squad" / "heldout.jsonl",
        "gsm8k_heldout": prepared / "gsm8k" / "heldout.jsonl",
    }
    for path in [*files.values(), prepared / "mathqa" / "test.jsonl"]:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: prepared data not found; run `ptmoe data prepare` first")
    out = Path(out_dir) if out_dir else Path(cache_dir or default_cache()) / "lm_eval_tasks"
    out.mkdir(parents=True, exist_ok=True)
    files["mathqa_choices"] = _mathqa_with_options(prepared, data / "raw", out)
    for template in sorted(TEMPLATES.glob("*.yaml")):
        text = Template(template.read_text()).substitute({k: json.dumps(str(v)) for k, v in files.items()})
        (out / template.name).write_text(text)
    (out / "utils.py").write_text(UTILS)
    return out


if __name__ == "__main__":
    import sys

    print(write_tasks(sys.argv[1] if len(sys.argv) > 1 else None))
