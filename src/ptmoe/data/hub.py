"""The paper's own benchmarks from the Hugging Face hub through `datasets` (online users), or from a
local copy: MRQA's 12 sets (`mrqa-workshop/mrqa`, one row per question) and the math sets GSM8K,
SVAMP, ASDiv and MAWPS. The same converter reads hub rows and a local copy, so a copy saved with
`datasets` (`save_to_disk`) or MRQA's official jsonl.gz files give the same records as the hub.

    mrqa_<name>  train / heldout (validation)   the six in-domain sets
    mrqa_<name>  test                           the six out-of-domain sets
    gsm8k_full   train / test;  svamp train / test;  asdiv test;  mawps train / test
"""

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .fetch import SourceError
from .splits import doc_id, qa_record

MAX_ROWS = 20_000  # per set and split: enough for the paper's budgets, a bounded read of a 1.5 GB stream


@dataclass(frozen=True)
class HubDataset:
    dataset: str
    config: str | None
    splits: dict  # our split -> the hub's split
    in_split: dict | None = None  # our split -> the subsets it holds (a stream stops once they are read)


# the paper's table names -> MRQA's `subset` values
MRQA_IN_DOMAIN = {
    "squad": "SQuAD",
    "newsqa": "NewsQA",
    "triviaqa": "TriviaQA-web",
    "searchqa": "SearchQA",
    "hotpotqa": "HotpotQA",
    "naturalquestions": "NaturalQuestionsShort",
}
MRQA_OUT_OF_DOMAIN = {
    "bioasq": "BioASQ",
    "drop": "DROP",
    "duorc": "DuoRC.ParaphraseRC",
    "race": "RACE",
    "relationextraction": "RelationExtraction",
    "textbookqa": "TextbookQA",
}


def mrqa_example(row, subset_name):
    """A hub-schema MRQA row -> a QA record (span answers; the first detected span's offset kept)."""
    context, answers = row["context"], [a.strip() for a in row["answers"] if a.strip()]
    if not answers:
        return None
    start = None
    spans = (row.get("detected_answers") or {}).get("char_spans") or []
    if spans and spans[0].get("start"):
        s = spans[0]["start"][0]
        start = s if context[s : s + len(answers[0])] == answers[0] else None
    if start is None and answers[0] in context:
        start = context.find(answers[0])
    return qa_record(
        f"mrqa_{subset_name}-{row['qid']}", context, row["question"], answers, doc_id(context), "span", start
    )


def _mrqa_build(name, subset):
    def build(rows_by_subset):
        return {
            split: [e for e in (mrqa_example(r, name) for r in rows) if e is not None]
            for split, rows in rows_by_subset[subset].items()
            if rows
        }

    return build


MRQA = HubDataset(
    "mrqa-workshop/mrqa",
    "plain_text",
    {"train": "train", "heldout": "validation", "test": "test"},
    {
        "train": set(MRQA_IN_DOMAIN.values()),
        "heldout": set(MRQA_IN_DOMAIN.values()),
        "test": set(MRQA_OUT_OF_DOMAIN.values()),
    },
)
MRQA_SETS = {f"mrqa_{n}": (_mrqa_build(n, s), s) for n, s in {**MRQA_IN_DOMAIN, **MRQA_OUT_OF_DOMAIN}.items()}


# ------------------------------------------------------------------------------------ math


def _number(text):
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?", str(text))
    if m is None:
        return None
    v = float(m.group(0).replace(",", ""))
    return str(int(v)) if v == int(v) else str(v)


def math_record(id, question, answer, solution=None):
    ex = {"id": id, "task": "math", "context": "", "question": question.strip(), "answers": [answer], "doc": id}
    if solution:
        ex["solution"] = solution
    return ex


def gsm8k_row(row, i):
    answer = _number(row["answer"].rsplit("####", 1)[-1])
    return math_record(f"gsm8k_full-{i}", row["question"], answer, row["answer"]) if answer else None


def svamp_row(row, i):
    answer = _number(row["Answer"])
    question = f"{row['Body'].strip()} {row['Question'].strip()}"
    return math_record(f"svamp-{row.get('ID', i)}", question, answer) if answer else None


def asdiv_row(row, i):
    answer = _number(row["answer"].split(" (")[0])  # "5 (apples)"
    return math_record(f"asdiv-{i}", f"{row['body'].strip()} {row['question'].strip()}", answer) if answer else None


def mawps_row(row, i):
    answer = _number(row["result"])
    return math_record(f"mawps-{row.get('id', i)}", row["question"], answer) if answer else None


def _math_build(convert):
    def build(rows_by_subset):
        (splits,) = rows_by_subset.values()
        return {
            split: [e for e in (convert(r, i) for i, r in enumerate(rows)) if e is not None]
            for split, rows in splits.items()
            if rows
        }

    return build


# set -> (the hub dataset, (build, subset))
MATH_SETS = {
    "gsm8k_full": (
        HubDataset("openai/gsm8k", "main", {"train": "train", "test": "test"}),
        (_math_build(gsm8k_row), None),
    ),
    "svamp": (HubDataset("ChilleD/SVAMP", None, {"train": "train", "test": "test"}), (_math_build(svamp_row), None)),
    "asdiv": (HubDataset("EleutherAI/asdiv", "asdiv", {"test": "validation"}), (_math_build(asdiv_row), None)),
    "mawps": (
        HubDataset("MU-NLPC/Calc-mawps", None, {"train": "train", "test": "test"}),
        (_math_build(mawps_row), None),
    ),
}


# ----------------------------------------------------------------------------- reading


def _collect(source: HubDataset, subsets, rows_of_split):
    """{subset: {our split: [rows]}} from rows_of_split(hub split) -> iterable of hub rows, at most
    MAX_ROWS per subset and split (a stream is read only as far as it must)."""
    out = {s: {} for s in subsets}
    for ours, theirs in source.splits.items():
        for s in subsets:
            out[s][ours] = []
        rows = rows_of_split(theirs)
        if rows is None:
            continue
        expected = [k for k in subsets if source.in_split is None or k in source.in_split[ours]]
        for row in rows:
            s = row.get("subset") if subsets != [None] else None
            if s in out and len(out[s][ours]) < MAX_ROWS:
                out[s][ours].append(row)
            if all(len(out[k][ours]) >= MAX_ROWS for k in expected):
                break
    return out


def read_hub(source: HubDataset, subsets, log=print):
    """Rows of the hub dataset through `datasets` (streamed); SourceError when it can't be reached."""
    try:
        import datasets  # optional: only online users need it
    except ImportError:
        raise SourceError("the `datasets` package is not installed (pip install datasets)") from None
    log(f"reading {source.dataset} from the Hugging Face hub (streamed, at most {MAX_ROWS} rows per set and split)")

    def rows_of_split(split):
        try:
            return datasets.load_dataset(source.dataset, source.config, split=split, streaming=True)
        except Exception as e:  # offline, unknown id, ...: one line
            raise SourceError(
                f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'unreachable'}"
            ) from None

    try:
        return _collect(source, list(subsets), rows_of_split)
    except SourceError:
        raise
    except Exception as e:  # a stream that breaks part way
        raise SourceError(f"{type(e).__name__}: {str(e)[:200]}") from None


def read_local(source: HubDataset, path: Path):
    """{subset: {split: [rows]}} from a local copy: a folder written with `datasets`' save_to_disk (the
    hub's schema), or MRQA's official jsonl.gz files (a header line naming dataset and split, then one
    passage per line with its questions)."""
    subsets = list(MRQA_SETS[n][1] for n in MRQA_SETS) if source is MRQA else [None]
    if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
        try:
            import datasets  # optional: only a copy saved with `datasets` needs it
        except ImportError:
            raise SourceError("reading a saved dataset needs `pip install datasets`") from None
        saved = datasets.load_from_disk(str(path))
        splits = saved if isinstance(saved, datasets.DatasetDict) else {"train": saved}
        return _collect(source, subsets, lambda split: splits[split] if split in splits else None)
    if source is not MRQA:
        raise SourceError(f"{path} is not a dataset saved with `datasets` (no dataset_dict.json)")
    files = sorted(path.rglob("*.jsonl.gz")) + sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    rows = {}  # hub split -> rows
    for f in files:
        split = None
        with gzip.open(f, "rt", encoding="utf-8") if f.name.endswith(".gz") else open(f, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                if "header" in rec:
                    split, subset = rec["header"].get("split", "train"), rec["header"]["dataset"]
                    split = {"dev": "validation"}.get(split, split)
                    continue
                if split is None:
                    raise SourceError(f"{f}: no MRQA header line (expected {{'header': {{'dataset', 'split'}}}})")
                for qa in rec["qas"]:
                    spans = [s for d in qa.get("detected_answers", []) for s in d.get("char_spans", [])]
                    rows.setdefault(split, []).append(
                        {
                            "subset": subset,
                            "context": rec["context"],
                            "qid": qa["qid"],
                            "question": qa["question"],
                            "answers": qa["answers"],
                            "detected_answers": {"char_spans": [{"start": [s[0] for s in spans[:1]]}]},
                        }
                    )
    if not rows:
        raise SourceError(f"{path}: no MRQA jsonl(.gz) files")
    return _collect(source, subsets, lambda split: rows.get(split))
