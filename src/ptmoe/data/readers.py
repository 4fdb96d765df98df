"""The file formats `load_examples` reads (load.py): SQuAD JSON, JSON lines (MRQA, GSM8K-style or
generic rows mapped with `columns`), CSV and hf: datasets, each row checked; a bad row raises DataError
"file:line: what"."""

import csv
import gzip
import hashlib
import json


class DataError(ValueError):
    """A malformed input file or row; the message names the file, line and field."""


class Examples(list):
    """A list of examples that also carries how many bad rows were skipped."""

    n_skipped = 0


FIELDS = ("question", "answers", "context", "id", "doc", "solution")


def parse_columns(columns):
    if columns is None:
        return {}
    if isinstance(columns, str):
        pairs = [p.split("=", 1) for p in columns.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"bad column mapping {columns!r}: expected field=column,...")
        columns = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        raise ValueError(f"bad column mapping {columns!r}: expected field: column pairs")
    columns = {("answers" if k == "answer" else k): v for k, v in columns.items()}  # either spelling
    unknown = set(columns) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown fields in column mapping: {sorted(unknown)} (known: {FIELDS})")
    return dict(columns)


def _open(path):
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")


def _final_number(answer, where):
    if "####" not in answer:
        raise DataError(f"{where}: field 'answer' has no '#### N' final answer")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def _str(row, key, where, field=None, required=True):
    field = field or key
    if key not in row or row[key] is None:
        if required:
            raise DataError(f"{where}: field '{field}' missing")
        return None
    v = row[key]
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise DataError(f"{where}: field '{field}' must be a string, got {type(v).__name__}")
    return str(v)


def _answers(v, where, field):
    """str | [str] | {"text": [str]} (Hugging Face SQuAD) | JSON list as a string (csv)."""
    if isinstance(v, dict) and "text" in v:
        v = v["text"]
    if isinstance(v, str) and v.startswith("["):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            pass
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(a, (str, int, float)) for a in v):
        raise DataError(f"{where}: field '{field}' must be a string or a list of strings")
    v = [str(a).strip() for a in v if str(a).strip()]
    if not v:
        raise DataError(f"{where}: field '{field}' is empty")
    return v


def row_to_example(row, where, columns=None, task=None):
    """One generic row -> example (docs/data.md). The task comes from `task` (data.task), else the row's
    own "task" field, else the answer: one ending in '#### N' is math (GSM8K style), one with a passage
    ("context") is QA. A singular "answer" with neither a passage nor '#### N' is an error (a GSM8K row
    missing its final answer, or a QA row missing its passage); plural "answers" without one is closed-book QA."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: row must be a JSON object, got {type(row).__name__}")
    mapped = parse_columns(columns)
    col = {f: f for f in FIELDS}
    col.update(mapped)
    if "answers" not in mapped and "answers" not in row and "answer" in row:
        col["answers"] = "answer"
    q = _str(row, col["question"], where, col["question"])
    if col["answers"] not in row:
        raise DataError(f"{where}: field '{col['answers']}' missing")
    raw = row[col["answers"]]
    if task is None and row.get("task") is not None:
        task = row["task"]
        if task not in ("qa", "math"):
            raise DataError(f"{where}: field 'task' must be 'qa' or 'math', got {task!r}")
    context = _str(row, col["context"], where, required=False) or ""
    final = isinstance(raw, str) and "####" in raw
    if task is None:
        if not final and not context and col["answers"] == "answer" and "answers" not in mapped:
            raise DataError(
                f"{where}: field 'answer' has no '#### N' final answer (math) and the row has no "
                f"'context' (QA); add one, or set the task (data.task or a 'task' field)"
            )
        task = "math" if final else "qa"
    ex = {"id": _str(row, col["id"], where, required=False) or where, "task": task}
    if task == "math" and final:
        ex.update(answers=[_final_number(raw, where)], solution=raw.strip())
    else:
        ex["answers"] = _answers(raw, where, col["answers"])
        sol = _str(row, col["solution"], where, required=False)
        if sol:
            ex["solution"] = sol
    ex["context"] = context
    ex["question"] = q
    ex["doc"] = _str(row, col["doc"], where, required=False) or hashlib.sha1(ex["context"].encode()).hexdigest()[:12]
    if task == "qa":
        _answer_form(row, ex, where)
    return ex


ANSWER_TYPES = ("span", "yes_no", "free")


def _answer_form(row, ex, where):
    """A row's optional `answer_type` (span / yes_no / free: how its passage may be cut, data/format.py) and
    `answer_start` (a span's character offset), as prepared sets write them."""
    kind = row.get("answer_type")
    if kind is not None:
        if kind not in ANSWER_TYPES:
            raise DataError(f"{where}: field 'answer_type' must be one of {', '.join(ANSWER_TYPES)}, got {kind!r}")
        ex["answer_type"] = kind
    start = row.get("answer_start")
    if start is not None:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise DataError(f"{where}: field 'answer_start' must be a character offset (an integer >= 0)")
        ex["answer_start"] = start


# ------------------------------------------------------------------------ readers


def read_squad(path, name, skip):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}:1: field 'data' missing or not a list (not SQuAD JSON)")
    for a_i, art in enumerate(data["data"]):
        for p_i, para in enumerate(art.get("paragraphs", []) if isinstance(art, dict) else [None]):
            where = f"{path}:data[{a_i}].paragraphs[{p_i}]"
            try:
                if not isinstance(para, dict):
                    raise DataError(f"{where}: paragraph must be an object")
                ctx = _str(para, "context", where)
                qas = para.get("qas")
                if not isinstance(qas, list):
                    raise DataError(f"{where}: field 'qas' missing or not a list")
            except DataError as e:
                skip(e)
                continue
            for q_i, qa in enumerate(qas):
                w = f"{where}.qas[{q_i}]"
                try:
                    if not isinstance(qa, dict):
                        raise DataError(f"{w}: question must be an object")
                    answers = _answers(
                        [a.get("text") if isinstance(a, dict) else a for a in qa.get("answers") or []], w, "answers"
                    )
                    yield {
                        "id": str(qa.get("id", f"{name}-{a_i}-{p_i}-{q_i}")),
                        "task": "qa",
                        "context": ctx,
                        "question": _str(qa, "question", w),
                        "answers": list(dict.fromkeys(answers)),
                        "doc": str(art.get("title", a_i)),
                    }
                except DataError as e:
                    skip(e)


def _json_lines(path):
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line), None
            except json.JSONDecodeError as e:
                yield lineno, None, DataError(f"{path}:{lineno}: invalid JSON ({e.msg})")


def read_jsonl(path, columns, task, skip):
    mrqa = None
    for lineno, row, err in _json_lines(path):
        where = f"{path}:{lineno}"
        try:
            if err:
                raise err
            if mrqa is None:  # decided on the first row
                mrqa = isinstance(row, dict) and ("header" in row or "qas" in row) and not columns
                if isinstance(row, dict) and "header" in row:
                    continue
            if mrqa:
                yield from mrqa_row(row, where, lineno)
            else:
                yield row_to_example(row, where, columns, task)
        except DataError as e:
            skip(e)


def mrqa_row(row, where, lineno):
    if not isinstance(row, dict):
        raise DataError(f"{where}: row must be a JSON object")
    ctx = _str(row, "context", where)
    qas = row.get("qas")
    if not isinstance(qas, list):
        raise DataError(f"{where}: field 'qas' missing or not a list")
    out = []
    for i, qa in enumerate(qas):
        w = f"{where}: qas[{i}]"
        if not isinstance(qa, dict):
            raise DataError(f"{w} must be an object")
        if "answers" in qa:
            answers = _answers(qa["answers"], where, f"qas[{i}].answers")
        elif "detected_answers" in qa and isinstance(qa["detected_answers"], list):
            answers = _answers(
                [d.get("text") for d in qa["detected_answers"] if isinstance(d, dict)],
                where,
                f"qas[{i}].detected_answers",
            )
        else:
            raise DataError(f"{where}: field 'qas[{i}].answers' missing")
        question = _str(qa, "question", where, f"qas[{i}].question")
        out.append(
            {
                "id": str(qa.get("qid", f"{lineno}-{i}")),
                "task": "qa",
                "context": ctx,
                "question": question,
                "answers": list(dict.fromkeys(answers)),
                "doc": str(row.get("id", lineno)),
            }
        )
    return out  # a whole row is valid or bad as one


def read_csv(path, columns, task, skip):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            try:
                yield row_to_example(
                    {k: v for k, v in row.items() if v not in (None, "")}, f"{path}:{reader.line_num}", columns, task
                )
            except DataError as e:
                skip(e)


def read_hf(spec, split, columns, task, skip):
    try:
        import datasets  # optional: only hf: specs need it
    except ImportError:
        raise RuntimeError(f"{spec}: Hugging Face datasets need `pip install datasets`") from None
    name, _, config = spec[3:].partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # hub unreachable, unknown id, ...
        raise RuntimeError(f"{spec}: could not load the dataset ({type(e).__name__}: {e})") from None
    for i, row in enumerate(ds):
        try:
            yield row_to_example(row, f"{spec}[{split}]:{i}", columns, task)
        except DataError as e:
            skip(e)
