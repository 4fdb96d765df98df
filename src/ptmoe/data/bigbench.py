"""The sets of the bigbench 1.0.0 source archive (no longer on the package registry: a local copy is read
with `ptmoe data prepare --from bigbench-1.0.0.tar.gz`). Each builder takes the raw/ folder its
files were extracted to and returns {split: [examples]}.

    squad                  train / heldout   SQuAD v1.1 dev, 8 whole articles held out
    squad_shifts_<domain>  test              new_wiki, nyt, reddit, amazon (all of it)
    quoref, drop, ropes,   train / heldout   ~20% of the passages held out
    coqa, cosmosqa
    mathqa                 test              MathQA items whose correct option is a number
"""

import ast
import json
import re

from .fetch import BB, NI
from .splits import by_fraction, doc_id, qa_record, split_docs

SQUAD_HELDOUT_ARTICLES = 8
SHIFTS = {"new_wiki": "new_wiki", "nyt": "nyt", "reddit": "reddit", "amazon": "amazon_reviews"}


def _clean_answer(a, context):
    """Natural-instructions targets end with '.'; keep the form found in the context."""
    a = a.strip()
    for cand in (a, a.rstrip("."), a.rstrip(".").strip()):
        if cand and cand in context:
            return cand
    return None


# ----------------------------------------------------------------------- builders


def squad_file(path, name):
    """SQuAD-format JSON -> QA examples (doc = article title, or title#paragraph when
    one article holds everything). Answer offsets are re-found in the context."""
    with open(path) as f:
        data = json.load(f)["data"]
    out = []
    for a_i, art in enumerate(data):
        for p_i, para in enumerate(art["paragraphs"]):
            ctx = para["context"]
            doc = f"{art.get('title', a_i)}" + (f"#{p_i}" if len(data) == 1 else "")
            for qa in para["qas"]:
                texts, start = [], None
                for ans in qa["answers"]:
                    t = ans["text"].strip()
                    if t and t not in texts:
                        texts.append(t)
                first = qa["answers"][0] if qa["answers"] else None
                if first:
                    s, t = first.get("answer_start", -1), first["text"].strip()
                    start = s if ctx[s : s + len(t)] == t else (ctx.find(t) if t in ctx else None)
                out.append(qa_record(f"{name}-{qa['id']}", ctx, qa["question"], texts, doc, "span", start))
    return out


def _ni_examples(path):
    with open(path) as f:
        return json.load(f)["examples"]


def quoref(raw):
    out = []
    for i, e in enumerate(_ni_examples(raw / (NI + "subtask002_quoref_answer_generation/task.json"))):
        passage, question = e["input"].rsplit("\nQuestion:", 1)
        passage = re.sub(r"^Passage:\s*", "", passage).strip()
        answers = [a for a in (_clean_answer(t, passage) for t in e["target"]) if a]
        if answers:
            out.append(
                qa_record(f"quoref-{i}", passage, question, list(dict.fromkeys(answers)), doc_id(passage), "span")
            )
    return out


def drop(raw):
    """DROP, MRQA-like: keep questions whose answer is a single span found in the passage
    (spans of type Span, and Number answers that occur as a whole word in the passage)."""
    out = []
    for i, e in enumerate(_ni_examples(raw / (NI + "subtask028_drop_answer_generation/task.json"))):
        passage, rest = e["input"].rsplit("\nQuestion:", 1)
        passage = re.sub(r"^Passage:\s*", "", passage).strip()
        question, _, atype = rest.partition("\nAnswer type:")
        target = e["target"][0].strip()
        if atype.strip() == "Span":
            try:
                spans = ast.literal_eval(target.rstrip("."))
            except (ValueError, SyntaxError):
                continue
            if len(spans) != 1:
                continue
            target = spans[0]
        a = _clean_answer(target, passage)
        if a and re.search(r"(?<!\w)" + re.escape(a) + r"(?!\w)", passage):
            out.append(qa_record(f"drop-{i}", passage, question, [a], doc_id(passage), "span"))
    return out


def ropes(raw):
    """ROPES: context = background + situation; answers are spans of it or the question;
    documents are background paragraphs (shared by many situations)."""
    out = []
    for i, e in enumerate(_ni_examples(raw / (NI + "subtask061_ropes_answer_generation/task.json"))):
        head, question = e["input"].rsplit("\nQuestion:", 1)
        background, story = head.split("\nStory:", 1)
        background = re.sub(r"^Background Paragraph:\s*", "", background).strip()
        context = f"Background: {background}\nSituation: {story.strip()}"
        answers = [a for a in (_clean_answer(t, context + " " + question) for t in e["target"]) if a]
        if answers:
            out.append(qa_record(f"ropes-{i}", context, question, answers, doc_id(background), "span"))
    return out


def coqa(raw):
    """CoQA first turns: question 1 of each story with its free-form answers."""
    with open(raw / (BB + "coqa_conversational_question_answering/coqa.test.json")) as f:
        data = json.load(f)["data"]
    out = []
    for s in data:
        q, a = s["questions"][0], s["answers"][0]
        answers = [a["input_text"]] + [
            alt[0]["input_text"] for alt in s.get("additional_answers", {}).values() if alt and alt[0]["turn_id"] == 1
        ]
        answers = list(dict.fromkeys(x.strip() for x in answers if x.strip()))
        start = a.get("span_start") if s["story"][a["span_start"] : a["span_end"]].strip() else None
        out.append(
            qa_record(f"coqa-{s['id']}", s["story"], q["input_text"], answers, doc_id(s["story"]), "free", start)
        )
    return out


def cosmosqa(raw):
    """CosmosQA answer generation: a blog passage and a commonsense question whose answer is a
    written sentence (median 8 words) rather than a span: a QA set that wants answers of another
    form than SQuAD's."""
    out = []
    for i, e in enumerate(_ni_examples(raw / (NI + "subtask024_cosmosqa_answer_generation/task.json"))):
        passage, question = e["input"].rsplit("\nQuestion:", 1)
        passage = re.sub(r"^Context:\s*", "", passage).strip()
        answers = [a for a in (t.strip().rstrip(".").strip() for t in e["target"]) if a]
        if answers:
            out.append(
                qa_record(f"cosmosqa-{i}", passage, question, list(dict.fromkeys(answers)), doc_id(passage), "free")
            )
    return out


def mathqa(raw):
    out = []
    for i, e in enumerate(_ni_examples(raw / (BB + "elementary_math_qa/question_only/task.json"))):
        right = [k.strip() for k, v in e["target_scores"].items() if v == 1]
        if len(right) == 1 and re.fullmatch(r"-?\d+(\.\d+)?", right[0]):
            q = e["input"].strip()
            out.append(
                {"id": f"mathqa-{i}", "task": "math", "context": "", "question": q, "answers": right, "doc": str(i)}
            )
    return out


def squad(raw):
    train, heldout = split_docs(
        squad_file(raw / (BB + "squad_shifts/squaddev_v1.1.json"), "squad"), SQUAD_HELDOUT_ARTICLES
    )
    return {"train": train, "heldout": heldout}


def squad_shift(short):
    def build(raw):
        name = f"squad_shifts_{short}"
        return {"test": squad_file(raw / (BB + f"squad_shifts/{SHIFTS[short]}_v1.0.json"), name)}

    return build


# set -> (builder, the archive members it reads)
SETS = {
    "squad": (squad, [BB + "squad_shifts/squaddev_v1.1.json"]),
    **{f"squad_shifts_{s}": (squad_shift(s), [BB + f"squad_shifts/{f}_v1.0.json"]) for s, f in SHIFTS.items()},
    "quoref": (lambda raw: by_fraction(quoref(raw)), [NI + "subtask002_quoref_answer_generation/task.json"]),
    "drop": (lambda raw: by_fraction(drop(raw)), [NI + "subtask028_drop_answer_generation/task.json"]),
    "ropes": (lambda raw: by_fraction(ropes(raw)), [NI + "subtask061_ropes_answer_generation/task.json"]),
    "coqa": (lambda raw: by_fraction(coqa(raw)), [BB + "coqa_conversational_question_answering/coqa.test.json"]),
    "cosmosqa": (lambda raw: by_fraction(cosmosqa(raw)), [NI + "subtask024_cosmosqa_answer_generation/task.json"]),
    "mathqa": (lambda raw: {"test": mathqa(raw)}, [BB + "elementary_math_qa/question_only/task.json"]),
}
