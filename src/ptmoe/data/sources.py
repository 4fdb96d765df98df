"""The prepared benchmark sets: `prepare()` builds them once into the user cache,
`list_sets()` and `load_split()` read them.

Sets and splits (documents = SQuAD articles, passages, or GSM templates; a document is
never in two splits of one set):
    squad                  train / heldout   SQuAD v1.1 dev, 8 whole articles held out
    squad_shifts_<domain>  test              new_wiki, nyt, reddit, amazon (all of it)
    quoref, drop, ropes,   train / heldout   ~20% of the passages held out; the
    coqa, cosmosqa                            benchmark evaluates these on `heldout`
    gsm_symbolic           train / heldout   variants of the 80 training templates (the 65
                                             whose reasoning-gym generator is marked ok)
                                             / of the 20 held-out templates
    gsm8k                  heldout           real GSM8K questions of the 20 held-out templates
    mathqa                 test              MathQA items whose correct option is a number

Record: {"id", "set", "task": "qa"|"math", "context", "question", "answers": [str],
"doc"} plus "answer_start" (QA, when known) and "solution" (math, when known).
"""

import ast
import hashlib
import json
import random
import re
import time

from . import gsm
from .fetch import ARCHIVES, BB, NI, data_dir, extract

VERSION = 2  # bump when the prepared data changes
SEED = 1234
SQUAD_HELDOUT_ARTICLES = 8
HELDOUT_FRACTION = 0.2
GSM_HELDOUT_TEMPLATES = 20
GSM_TRAIN_VARIANTS = 40  # per training template
GSM_HELDOUT_VARIANTS = 10  # per held-out template
SHIFTS = {"new_wiki": "new_wiki", "nyt": "nyt", "reddit": "reddit", "amazon": "amazon_reviews"}


# ------------------------------------------------------------------------ helpers


def _doc_id(text):
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _split_docs(examples, n_heldout, seed=SEED):
    """Split examples into (train, heldout) by whole documents, deterministically."""
    docs = sorted({e["doc"] for e in examples})
    random.Random(seed).shuffle(docs)
    held = set(docs[:n_heldout])
    return [e for e in examples if e["doc"] not in held], [e for e in examples if e["doc"] in held]


def _by_fraction(examples, fraction=HELDOUT_FRACTION):
    n_docs = len({e["doc"] for e in examples})
    return _split_docs(examples, round(n_docs * fraction))


def _qa(id, context, question, answers, doc, start=None):
    ex = {"id": id, "task": "qa", "context": context, "question": question.strip(), "answers": answers, "doc": doc}
    if start is not None:
        ex["answer_start"] = start
    return ex


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
                out.append(_qa(f"{name}-{qa['id']}", ctx, qa["question"], texts, doc, start))
    return out


def _ni_examples(path):
    with open(path) as f:
        return json.load(f)["examples"]


def quoref(raw):
    out = []
    for i, e in enumerate(_ni_examples(raw / NI / "subtask002_quoref_answer_generation/task.json")):
        passage, question = e["input"].rsplit("\nQuestion:", 1)
        passage = re.sub(r"^Passage:\s*", "", passage).strip()
        answers = [a for a in (_clean_answer(t, passage) for t in e["target"]) if a]
        if answers:
            out.append(_qa(f"quoref-{i}", passage, question, list(dict.fromkeys(answers)), _doc_id(passage)))
    return out


def drop(raw):
    """DROP, MRQA-like: keep questions whose answer is a single span found in the passage
    (spans of type Span, and Number answers that occur as a whole word in the passage)."""
    out = []
    for i, e in enumerate(_ni_examples(raw / NI / "subtask028_drop_answer_generation/task.json")):
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
            out.append(_qa(f"drop-{i}", passage, question, [a], _doc_id(passage)))
    return out


def ropes(raw):
    """ROPES: context = background + situation; answers are spans of it or the question;
    documents are background paragraphs (shared by many situations)."""
    out = []
    for i, e in enumerate(_ni_examples(raw / NI / "subtask061_ropes_answer_generation/task.json")):
        head, question = e["input"].rsplit("\nQuestion:", 1)
        background, story = head.split("\nStory:", 1)
        background = re.sub(r"^Background Paragraph:\s*", "", background).strip()
        context = f"Background: {background}\nSituation: {story.strip()}"
        answers = [a for a in (_clean_answer(t, context + " " + question) for t in e["target"]) if a]
        if answers:
            out.append(_qa(f"ropes-{i}", context, question, answers, _doc_id(background)))
    return out


def coqa(raw):
    """CoQA first turns: question 1 of each story with its free-form answers."""
    with open(raw / BB / "coqa_conversational_question_answering/coqa.test.json") as f:
        data = json.load(f)["data"]
    out = []
    for s in data:
        q, a = s["questions"][0], s["answers"][0]
        answers = [a["input_text"]] + [
            alt[0]["input_text"] for alt in s.get("additional_answers", {}).values() if alt and alt[0]["turn_id"] == 1
        ]
        answers = list(dict.fromkeys(x.strip() for x in answers if x.strip()))
        start = a.get("span_start") if s["story"][a["span_start"] : a["span_end"]].strip() else None
        out.append(_qa(f"coqa-{s['id']}", s["story"], q["input_text"], answers, _doc_id(s["story"]), start))
    return out


def cosmosqa(raw):
    """CosmosQA answer generation: a blog passage and a commonsense question whose answer is a
    written sentence (median 8 words) rather than a span: a QA set that wants answers of another
    form than SQuAD's."""
    out = []
    for i, e in enumerate(_ni_examples(raw / NI / "subtask024_cosmosqa_answer_generation/task.json")):
        passage, question = e["input"].rsplit("\nQuestion:", 1)
        passage = re.sub(r"^Context:\s*", "", passage).strip()
        answers = [a for a in (t.strip().rstrip(".").strip() for t in e["target"]) if a]
        if answers:
            out.append(_qa(f"cosmosqa-{i}", passage, question, list(dict.fromkeys(answers)), _doc_id(passage)))
    return out


def mathqa(raw):
    out = []
    for i, e in enumerate(_ni_examples(raw / BB / "elementary_math_qa/question_only/task.json")):
        right = [k.strip() for k, v in e["target_scores"].items() if v == 1]
        if len(right) == 1 and re.fullmatch(r"-?\d+(\.\d+)?", right[0]):
            q = e["input"].strip()
            out.append(
                {"id": f"mathqa-{i}", "task": "math", "context": "", "question": q, "answers": right, "doc": str(i)}
            )
    return out


def gsm_sets(raw):
    templates = gsm.load_templates(raw)
    gens, ok = gsm.load_generators(raw)
    gen_of = {t: i for i, t in gsm.match_generators(gens, templates).items()}
    usable = sorted(t for t in templates if gen_of[t] in ok)  # reasoning-gym's verified generators
    rng = random.Random(SEED)
    held = set(rng.sample(usable, GSM_HELDOUT_TEMPLATES))
    train_t = sorted(set(templates) - held)
    train = [v for t in train_t if t in usable for v in gsm.variants(gens[gen_of[t]], t, GSM_TRAIN_VARIANTS, SEED)]
    heldout = [v for t in sorted(held) for v in gsm.variants(gens[gen_of[t]], t, GSM_HELDOUT_VARIANTS, SEED + 1)]
    real = [gsm.real_question(t, templates[t]) for t in sorted(held)]
    return {"gsm_symbolic": {"train": train, "heldout": heldout}, "gsm8k": {"heldout": real}}


def build_all(raw):
    """{set: {split: [examples]}} from the extracted raw files."""
    sets = {}
    squad = squad_file(raw / BB / "squad_shifts/squaddev_v1.1.json", "squad")
    tr, ho = _split_docs(squad, SQUAD_HELDOUT_ARTICLES)
    sets["squad"] = {"train": tr, "heldout": ho}
    for short, fname in SHIFTS.items():
        name = f"squad_shifts_{short}"
        sets[name] = {"test": squad_file(raw / BB / f"squad_shifts/{fname}_v1.0.json", name)}
    for name, fn in (("quoref", quoref), ("drop", drop), ("ropes", ropes), ("coqa", coqa), ("cosmosqa", cosmosqa)):
        tr, ho = _by_fraction(fn(raw))
        sets[name] = {"train": tr, "heldout": ho}
    sets.update(gsm_sets(raw))
    sets["mathqa"] = {"test": mathqa(raw)}
    for name, splits in sets.items():
        for exs in splits.values():
            for e in exs:
                e["set"] = name
    return sets


# ------------------------------------------------------------------- public API


def _prepared(cache_dir=None):
    return data_dir(cache_dir) / "prepared"


def _manifest(cache_dir=None):
    path = _prepared(cache_dir) / "manifest.json"
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def prepare(cache_dir=None, force=False, log=print):
    """Download, verify, extract and split every source; returns {set: {split: count}}.
    Reuses the cache: a second call only reads the manifest."""
    man = _manifest(cache_dir)
    if man and not force and man.get("version") == VERSION:
        files = [_prepared(cache_dir) / s / f"{sp}.jsonl" for s, sps in man["sets"].items() for sp in sps]
        if all(p.exists() for p in files):
            log(f"prepared data is up to date in {_prepared(cache_dir)}")
            return man["sets"]
    t0 = time.time()
    raw = None
    for name in ARCHIVES:
        raw = extract(name, cache_dir, force=force, log=log)
    log("building splits")
    sets = build_all(raw)
    out = _prepared(cache_dir)
    counts = {}
    for name, splits in sets.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        counts[name] = {}
        for split, exs in splits.items():
            tmp = out / name / f"{split}.jsonl.tmp"
            with open(tmp, "w") as f:
                for e in exs:
                    f.write(json.dumps(e, ensure_ascii=False) + "\n")
            tmp.replace(out / name / f"{split}.jsonl")
            counts[name][split] = len(exs)
    man = {"version": VERSION, "seed": SEED, "archives": {k: v[3] for k, v in ARCHIVES.items()}, "sets": counts}
    with open(out / "manifest.json", "w") as f:
        json.dump(man, f, indent=1)
    log(f"prepared {len(counts)} sets in {out} ({time.time() - t0:.0f}s)")
    return counts


def list_sets(cache_dir=None):
    """{set: {split: count}} of the prepared data ({} if `prepare` has not run)."""
    man = _manifest(cache_dir)
    return man["sets"] if man else {}


def load_split(name, cache_dir=None):
    """Examples of a prepared split, name = "set/split" (e.g. "squad/train")."""
    set_, _, split = name.partition("/")
    path = _prepared(cache_dir) / set_ / f"{split}.jsonl"
    if not path.exists():
        known = ", ".join(f"{s}/{sp}" for s, sps in list_sets(cache_dir).items() for sp in sps)
        hint = f"known: {known}" if known else "run `ptmoe data prepare` first"
        raise FileNotFoundError(f"no prepared split {name!r} ({hint})")
    with open(path) as f:
        return [json.loads(line) for line in f]
