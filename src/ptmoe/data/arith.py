"""arith_easy: short arithmetic problems a frozen 135M-parameter model answers now and then (GSM-Symbolic's
are beyond it: every method scores ~0%), from reasoning-gym's seeded generators at their easiest levels.

Three generators (sums and differences of two numbers, one-digit products, counting the legs of one or two
kinds of animal), each with its config fixed below. train and heldout are the same generators at disjoint
seeds: reasoning-gym seeds item i with `seed + i`; heldout reads items from HELDOUT_START on, training items
from 0 on, skipping any question heldout has (small numbers repeat), so no question is in both splits (doc =
the question's hash). Held-out seeds, not held-out tasks: this measures in-domain learning, as GSM8K train /
test does in the paper; a held-out task would ask a 135M model to transfer between unrelated tasks instead.

reasoning-gym's package __init__ imports its whole dependency tree (and coaching/__init__ needs yaml), so
bare package objects stand in for both and only fetch.RG_ARITH_MODULES are loaded, from the extracted files.
"""

import importlib
import sys

from .gsm import bare_package
from .splits import SEED, doc_id

ARITH_SET = "arith_easy"
# task -> (module, dataset class, config class, config, training questions): the generators' easiest levels
# (two terms; one digit for products), leg counting with one or two animals. Chosen on a probe of seeds past
# both splits' (2,000,000 on), never on heldout: SmolLM2-135M answered 28% of chain sums of one- or two-digit
# numbers, 58% of one-digit products and no leg count, which it can only learn. One-digit products have 100
# questions: 60 are held out, the other 40 are all training has of that task.
TASKS = {
    "chain_sum": (
        "chain_sum",
        "ChainSumDataset",
        "ChainSumConfig",
        {"min_terms": 2, "max_terms": 2, "max_digits": 2},
        400,
    ),
    "products": ("products", "ProductsDataset", "ProductsConfig", {"max_digits": 1}, 40),
    "leg_counting": (
        "leg_counting",
        "LegCountingDataset",
        "LegCountingConfig",
        {"min_animals": 1, "max_animals": 2, "max_instances": 3},
        400,
    ),
}
HELDOUT_PER_TASK = 60
HELDOUT_START = 1_000_000  # first item index of heldout: far past every training item's seed


def load_modules(raw):
    """{module name: module} for the three generators, loaded from raw/ without reasoning-gym's __init__."""
    root = raw / "reasoning_gym"
    bare_package("reasoning_gym", root)
    coaching = bare_package("reasoning_gym.coaching", root / "coaching")
    bare_package("reasoning_gym.arithmetic", root / "arithmetic")
    # what the generators import from `..coaching`, which coaching/__init__ would have re-exported
    coaching.BaseCurriculum = importlib.import_module("reasoning_gym.coaching.base_curriculum").BaseCurriculum
    attrs = importlib.import_module("reasoning_gym.coaching.attributes")
    coaching.RangeAttributeDefinition = attrs.RangeAttributeDefinition
    coaching.ScalarAttributeDefinition = attrs.ScalarAttributeDefinition
    return {m: importlib.import_module(f"reasoning_gym.arithmetic.{m}") for m, *_ in TASKS.values()}


def generator(modules, task):
    """The task's reasoning-gym dataset at its fixed config, seeded with SEED."""
    module, dataset, config, options, _ = TASKS[task]
    mod = modules[module]
    return getattr(mod, dataset)(getattr(mod, config)(seed=SEED, size=HELDOUT_START * 2, **options))


def solution(task, item) -> str:
    """A short worked solution (the target trained on before 'The answer is N.')."""
    meta = item["metadata"]
    if task == "leg_counting":
        legs = meta["animals"]
        module = sys.modules["reasoning_gym.arithmetic.leg_counting"]
        parts = [f"{n} {a}: {n} * {module.ANIMALS[a]} = {n * module.ANIMALS[a]}" for a, n in legs.items()]
        total = " + ".join(str(n * module.ANIMALS[a]) for a, n in legs.items())
        return "\n".join([*parts, f"{total} = {item['answer']}"])
    return f"{meta['expression']} = {item['answer']}"


def record(task, index, item) -> dict:
    question = item["question"].strip()
    return {
        "id": f"{ARITH_SET}-{task}-{index}",
        "task": "math",
        "context": "",
        "question": question,
        "answers": [str(item["answer"])],
        "solution": solution(task, item),
        "doc": doc_id(question),
    }


def draw(gen, task, start, n, skip=frozenset()):
    """n records of distinct questions from item `start` on, none of whose doc is in `skip`."""
    out, seen = [], set(skip)
    i = start
    while len(out) < n:
        r = record(task, i, gen[i])
        if r["doc"] not in seen:
            seen.add(r["doc"])
            out.append(r)
        i += 1
        if i - start > 50 * n:
            raise ValueError(f"{ARITH_SET}: {task} gives fewer than {n} distinct questions")
    return out


def arith_sets(raw):
    """{"arith_easy": {"train", "heldout"}}: each task's items from HELDOUT_START on / from 0 on, heldout drawn
    first (the generator's own distribution) and training skipping its questions."""
    modules = load_modules(raw)
    train, heldout = [], []
    for task, (*_, n_train) in TASKS.items():
        gen = generator(modules, task)
        held = draw(gen, task, HELDOUT_START, HELDOUT_PER_TASK)
        heldout.append(held)
        train.append(draw(gen, task, 0, n_train, skip={e["doc"] for e in held}))
    return {"train": [e for t in train for e in t], "heldout": _interleave(heldout)}


def _interleave(per_task):
    """One task after another in turn, so the first N questions (data.max_eval_examples) mix every task."""
    return [e for row in zip(*per_task, strict=True) for e in row]
