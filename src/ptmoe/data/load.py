"""`load_examples(spec)`: examples from a prepared split or from data users already have.

spec is one of
    "set/split"                 a prepared split (see sources.py)
    file.json                   SQuAD JSON ({"data": [{"title", "paragraphs": [...]}]})
    file.jsonl[.gz]             MRQA (header line, then {"context", "qas"}), GSM8K-style
                                ({"question", "answer": "... #### N"}), or generic rows
                                mapped with `columns`
    file.csv                    generic rows mapped with `columns`
    "hf:NAME[:CONFIG]"          a Hugging Face dataset (needs `datasets` and the hub);
                                rows are mapped like generic rows, split via `split`

`columns` maps record fields to row keys, as a dict or "question=q,context=ctx,answers=ans"
(fields: question, answers (or answer), context, id, doc, solution); `task` forces qa or math.
docs/data.md lists every format with an example row and how the task is decided. A bad row raises DataError
"file:line: what"; with skip_bad=True bad rows are skipped and counted in `.n_skipped`.
"""

import re
from pathlib import Path

from .readers import DataError, Examples, read_csv, read_hf, read_jsonl, read_squad
from .sources import load_split, missing_split_line, split_path


def load_examples(
    spec, columns=None, task=None, split="train", skip_bad=False, set_name=None, cache_dir=None, log=print
):
    """Examples (dicts as in sources.py) from spec; see the module docstring.

    task: "qa"/"math" to force the task (default: inferred). set_name: the "set" field
    (default: the file stem). Returns an Examples list; `.n_skipped` counts bad rows.
    """
    spec = str(spec)
    path = Path(spec)
    out = Examples()

    def skip(err):
        if not skip_bad:
            raise err
        out.n_skipped += 1

    if spec.startswith("hf:"):
        rows = read_hf(spec, split, columns, task, skip)
        default_set = spec[3:].replace("/", "_")
    elif not path.exists():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
            return Examples(load_split(spec, cache_dir))
        raise FileNotFoundError(f"{spec}: no such file, prepared split or hf: dataset")
    else:
        name = path.name.lower()
        default_set = re.sub(r"\.(jsonl|json|csv)(\.gz)?$", "", path.name)
        if name.endswith(".json"):
            rows = read_squad(path, default_set, skip)
        elif name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
            rows = read_jsonl(path, columns, task, skip)
        elif name.endswith(".csv"):
            rows = read_csv(path, columns, task, skip)
        else:
            raise DataError(f"{path}: unknown format (expected .json, .jsonl[.gz] or .csv)")
    for ex in rows:
        ex["set"] = set_name or default_set
        out.append(ex)
    if out.n_skipped:
        log(f"{spec}: skipped {out.n_skipped} bad rows")
    return out


def check_prepared(specs, cache_dir=None):
    """Before any model loads: every prepared `set/split` among specs exists, else the one-line
    FileNotFoundError naming the set and how to get it (files and hf: specs are read later)."""
    for spec in map(str, specs):
        named = not spec.startswith("hf:") and not Path(spec).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", spec)
        if named and not split_path(spec, cache_dir).exists():
            raise FileNotFoundError(missing_split_line(spec, cache_dir))


def eval_subset(examples: list[dict], n: int | None, sample: str = "first") -> list[dict]:
    """The questions of one evaluation set: the first n (`first`), or one question per passage in turn
    (`per_passage`: the first question of each passage in file order, then the second, ...), since the
    questions on one passage are correlated: 64 questions on 3 passages are worth about 3 draws."""
    if sample == "first" or n is None or n >= len(examples):
        return examples[:n]
    by_passage: dict[str, list[dict]] = {}
    for ex in examples:
        by_passage.setdefault(ex.get("context") or ex["question"], []).append(ex)
    rounds = max(map(len, by_passage.values()))
    spread = [qs[r] for r in range(rounds) for qs in by_passage.values() if r < len(qs)]
    return spread[:n]


def load_set(spec, data: dict, log=print) -> Examples:
    """One data set as a config's `data` section reads it (columns, task, skip_bad): one place for
    training sources, evaluation sets and the task-text init alike."""
    columns = columns_for(data.get("columns"), spec)
    return load_examples(spec, columns=columns, task=data.get("task"), skip_bad=data["skip_bad"], log=log)


def per_set_columns(columns) -> bool:
    """data.columns keyed by data set ({"train.jsonl": {"question": "q"}}), not one mapping for every file."""
    return isinstance(columns, dict) and bool(columns) and all(isinstance(v, dict) for v in columns.values())


def columns_for(columns, spec):
    """data.columns for one data set: the one mapping (or `field=column,...` text) every file shares, or, keyed
    by data set, the entry naming `spec` as the config wrote it, by its file name, or by a path it ends with
    (none: the standard names)."""
    return entry_for(columns, spec) if per_set_columns(columns) else columns


def entry_for(by_set: dict, spec):
    """The value a mapping keyed by data set holds for `spec`: under the spec as the config wrote it, its file
    name, or a path it ends with; None if no key names it."""
    spec = str(spec)
    for key, value in (by_set or {}).items():
        if spec == key or Path(spec).name == key or spec.endswith("/" + str(key).removeprefix("./")):
            return value
    return None


def load_eval_set(spec, data: dict, log=print) -> list[dict]:
    """The questions of one evaluation set as `ptmoe eval` asks them, by a resolved config's `data`
    section (load_set's keys, max_eval_examples, eval_sample): one place, so the train-eval overlap
    warning and the bench scripts see exactly the evaluated questions."""
    return eval_subset(list(load_set(spec, data, log)), data["max_eval_examples"], data["eval_sample"])
