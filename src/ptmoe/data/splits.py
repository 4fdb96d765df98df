"""What every prepared set shares: the record, document ids and the split by whole documents
(a document, a passage, an article or a GSM template, is never in two splits of one set)."""

import hashlib
import random

SEED = 1234
HELDOUT_FRACTION = 0.2
YES_NO = frozenset({"yes", "no", "maybe", "true", "false"})


def doc_id(text):
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def split_docs(examples, n_heldout, seed=SEED):
    """Split examples into (train, heldout) by whole documents, deterministically."""
    docs = sorted({e["doc"] for e in examples})
    random.Random(seed).shuffle(docs)
    held = set(docs[:n_heldout])
    return [e for e in examples if e["doc"] not in held], [e for e in examples if e["doc"] in held]


def by_fraction(examples, fraction=HELDOUT_FRACTION):
    """{"train", "heldout"} with about `fraction` of the documents held out."""
    n_docs = len({e["doc"] for e in examples})
    train, heldout = split_docs(examples, round(n_docs * fraction))
    return {"train": train, "heldout": heldout}


def qa_record(id, context, question, answers, doc, answer_type, start=None):
    """One QA example. answer_type says what form the answer has: "span" (copied from the passage),
    "yes_no" (a yes / no / maybe label) or "free" (written, not found in the passage); only a span
    is ever looked for in the passage (data/format.py)."""
    ex = {
        "id": id,
        "task": "qa",
        "context": context,
        "question": question.strip(),
        "answers": answers,
        "doc": doc,
        "answer_type": answer_type,
    }
    if start is not None:
        ex["answer_start"] = start
    return ex
