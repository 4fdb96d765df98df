"""Examples -> token ids. The prompt is one user turn rendered with the tokenizer's chat
template when it has one (plain text otherwise); the target is the answer (QA) or the
worked solution ending in "The answer is N." (math), followed by the EOS token.

An over-long QA passage is cut to a window of tokens chosen by a rule (WINDOWS):
    question  the window that shares the most words with the question (what a user's question gets)
    head      the start of the passage
    answer    centred on the gold answer (its `answer_start`, else its first occurrence): a bracket
              for evaluation, and the training default for span answers, so the span to copy is in it
Evaluation, `generate`, the server and lm-eval use `question` unless told otherwise (`eval.window`),
so an evaluation prompt, and the router that reads it, never depends on the answer. Only a span answer
is ever looked for in the passage: yes/no and free-form answers get the `question` window whatever the
rule. Examples that still don't fit give None and `encode_dataset` counts them. `encode` (exported as
`ptmoe.encode`) is the public entry: the same prompts as training and evaluation, as padded tensors.
"""

import re

from .splits import YES_NO

WINDOWS = ("question", "head", "answer")
STOPWORDS = frozenset(
    "a an the of to in on at for by with from and or is are was were be been what which who whom whose when "
    "where why how did do does that this these those it its as not no".split()
)
QA_INSTRUCTION = "Answer the question with a short span from the passage."
MATH_INSTRUCTION = "Solve the problem. End with 'The answer is N.' where N is the final number."


def user_text(example, context=None):
    if example.get("task") == "math":
        return f"{MATH_INSTRUCTION}\n\nProblem: {example['question']}"
    context = example.get("context", "") if context is None else context
    return f"{QA_INSTRUCTION}\n\nPassage: {context}\n\nQuestion: {example['question']}"


def build_prompt_text(example, tokenizer, context=None):
    """The prompt as text, ending where the model's answer starts."""
    return render_user_turn(user_text(example, context), tokenizer)


def render_user_turn(user, tokenizer):
    """One user turn as the model is prompted with it: its chat template, else plain text."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{user}\n\nAnswer:\n"


def math_solution(solution, answer):
    """GSM8K-style solution -> plain text: drop <<calculator>> notes, '#### N' -> 'The answer is N.'"""
    text = re.sub(r"<<[^>]*>>", "", solution).strip()
    text = re.sub(r"\n*####\s*(.+)$", "", text).rstrip()
    return f"{text}\nThe answer is {answer}." if text else f"The answer is {answer}."


def target_text(example, tokenizer=None):
    """The training target, ending with tokenizer.eos_token when a tokenizer is given."""
    if example.get("task") == "math":
        sol = example.get("solution")
        text = math_solution(sol, example["answers"][0]) if sol else f"The answer is {example['answers'][0]}."
    else:
        text = example["answers"][0]
    eos = getattr(tokenizer, "eos_token", None) if tokenizer is not None else None
    return text + (eos or "")


def _ids(tokenizer, text, prompt):
    # chat templates already contain their special tokens (BOS included) as text
    special = prompt and not getattr(tokenizer, "chat_template", None)
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def answer_type(example) -> str:
    """span, yes_no or free: the record's own `answer_type`, else yes_no for yes / no / maybe labels and
    span for the rest (a user's own file: its answers are looked for in the passage)."""
    if example.get("answer_type"):
        return example["answer_type"]
    answers = example.get("answers") or []
    return "yes_no" if answers and all(a.strip().lower() in YES_NO for a in answers) else "span"


def _answer_span(example):
    """(start, end) characters of a span answer in the passage, or None (not a span, or not found)."""
    if answer_type(example) != "span":
        return None
    ctx = example.get("context", "")
    start = example.get("answer_start")
    for a in example["answers"]:
        if start is not None and ctx[start : start + len(a)] == a:
            return start, start + len(a)
        i = ctx.find(a)
        if i >= 0:
            return i, i + len(a)
    if any(a in example["question"] for a in example["answers"]):  # ROPES: "A or B?"
        return 0, 1
    return None


def _words(text):
    return {w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS}


def _question_start(example, ctx, offs, budget) -> int:
    """First token of the `budget`-token window holding the most passage tokens whose words are in the
    question, the matches centred among the windows that tie: the question alone decides it."""
    wanted = _words(example["question"])
    matched = [0] * (len(ctx) + 1)  # prefix count of characters inside passage words the question has
    for m in re.finditer(r"\w+", ctx):
        if m.group(0).lower() in wanted:
            matched[m.start() + 1 : m.end() + 1] = [1] * (m.end() - m.start())
    for i in range(1, len(matched)):
        matched[i] += matched[i - 1]
    hits = [int(matched[e] > matched[s]) for s, e in offs]  # a token is part of such a word
    run = sum(hits[:budget])
    scores = [run]
    for lo in range(1, len(offs) - budget + 1):
        run += hits[lo + budget - 1] - hits[lo - 1]
        scores.append(run)
    best = max(scores)
    ties = [lo for lo, v in enumerate(scores) if v == best]
    return ties[len(ties) // 2]


def _window_start(example, ctx, offs, budget, rule):
    """(first token, the answer span to keep inside or None) under `rule`; None if no window fits."""
    span = _answer_span(example) if rule == "answer" else None
    if span is None and rule == "answer" and example.get("answer_type") == "span":
        return None  # a recorded span that is not in the passage: nothing to centre on, nothing to copy
    if span is None:
        if rule == "head":
            return 0, None
        return _question_start(example, ctx, offs, budget), None
    inside = [i for i, (s, e) in enumerate(offs) if e > span[0] and s < span[1]]
    if not inside or inside[-1] - inside[0] + 1 > budget:
        return None
    mid = (inside[0] + inside[-1]) // 2  # centred on the answer, clipped to the passage
    lo = max(0, min(mid - budget // 2, len(offs) - budget))
    return min(max(lo, inside[-1] - budget + 1), inside[0]), span


def window_text(example, tokenizer, budget, rule="question"):
    """The passage cut to at most `budget` tokens by `rule` (WINDOWS), or None."""
    if rule not in WINDOWS:
        raise ValueError(f"unknown window rule {rule!r} (expected one of {', '.join(WINDOWS)})")
    ctx = example["context"]
    if budget <= 0:
        return None
    offs = tokenizer(ctx, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offs) <= budget:
        return ctx
    got = _window_start(example, ctx, offs, budget, rule)
    if got is None:
        return None
    lo, span = got
    hi = min(len(offs), lo + budget)
    a, b = offs[lo][0], offs[hi - 1][1]
    keep_a, keep_b = (span[0], span[1]) if span else (b, a)
    if a > 0 and not ctx[a - 1].isspace():  # don't start or end mid-word
        a = next((i for i in range(a, max(keep_a, a)) if ctx[i].isspace()), a)
    if b < len(ctx) and not ctx[b].isspace():
        b = next((i for i in range(b, min(keep_b, b), -1) if ctx[i - 1].isspace()), b)
    return ctx[a:b].strip()


def _prompt_ids(example, tokenizer, room, window):
    """Prompt ids of at most `room` tokens, cutting a QA passage to a window by rule `window` if needed."""
    ids = _ids(tokenizer, build_prompt_text(example, tokenizer), True)
    if len(ids) <= room:
        return ids
    if example.get("task") == "math" or not example.get("context"):
        return None
    n_ctx = len(_ids(tokenizer, example["context"], False))
    budget = n_ctx - (len(ids) - room)
    for _ in range(4):  # token counts shift a little at the cut edges: shrink and retry
        ctx = window_text(example, tokenizer, budget, window)
        if ctx is None:
            return None
        ids = _ids(tokenizer, build_prompt_text(example, tokenizer, context=ctx), True)
        if len(ids) <= room:
            return ids
        budget -= len(ids) - room + 2
    return None


def prompt_floor(example, tokenizer) -> int:
    """Tokens a training example needs however short its passage is cut: the prompt with an empty
    passage (instruction, question, chat template) and the target. Over max_length, no window helps."""
    prompt = _ids(tokenizer, build_prompt_text(example, tokenizer, context=""), True)
    return len(prompt) + len(_ids(tokenizer, target_text(example, tokenizer), False))


def encode_train(example, tokenizer, max_length, window="answer"):
    """{"input_ids", "labels"} with labels -100 on the prompt, or None if it can't fit."""
    target = _ids(tokenizer, target_text(example, tokenizer), False)
    prompt = _prompt_ids(example, tokenizer, max_length - len(target), window)
    if prompt is None or not target:
        return None
    return {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target}


def encode_eval(example, tokenizer, max_length, max_new_tokens, window="question"):
    """Prompt ids leaving room for max_new_tokens generated tokens, or None."""
    return _prompt_ids(example, tokenizer, max_length - max_new_tokens, window)


def _encode_one(ex, tokenizer, max_length, max_new_tokens, train, window=None):
    """{"input_ids"(, "labels")} of one example as training or evaluation sees it, or None if it can't fit.
    window: the rule for an over-long passage (default: `answer` for training, `question` otherwise)."""
    if train:
        return encode_train(ex, tokenizer, max_length, window or "answer")
    ids = encode_eval(ex, tokenizer, max_length, max_new_tokens, window or "question")
    return None if ids is None else {"input_ids": ids}


def encode_dataset(examples, tokenizer, max_length, train=True, max_new_tokens=32, window=None):
    """(encoded, n_dropped). Each encoded item has "input_ids", "index" (position in
    examples) and, for training, "labels"."""
    out, dropped = [], 0
    for i, ex in enumerate(examples):
        enc = _encode_one(ex, tokenizer, max_length, max_new_tokens, train, window)
        if enc is None:
            dropped += 1
            continue
        enc["index"] = i
        out.append(enc)
    return out, dropped


END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>")  # ChatML, Gemma, Llama 3


def special_ids(tokenizer):
    """(pad id, ids that end an answer): EOS plus the chat template's end-of-turn token, where the
    vocabulary has one (an unknown token maps to the unk id, which must not stop generation)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ends = {tokenizer.eos_token_id}
    for token in END_OF_TURN_TOKENS:
        i = tokenizer.convert_tokens_to_ids(token)
        if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id:
            ends.add(i)
    return pad, sorted(t for t in ends if isinstance(t, int) and t >= 0)


def encode(examples, tokenizer, train: bool = False, max_length: int = 512, max_new_tokens: int = 32, window=None):
    """The public way to build model inputs exactly as `ptmoe train` and `ptmoe eval` do (chat-template
    prompt; a passage too long cut to a window, by default the one that best matches the question, or
    for training a span answer's surroundings): examples (a dict or a list of dicts with
    "question", "context" for QA, "task": "math" for word problems, and "answers" (or "answer") for
    training) -> padded tensors. train=True: input_ids, attention_mask and labels (the answer tokens only),
    right-padded; else the prompts alone, left-padded for `generate`, leaving room for max_new_tokens."""
    from ..collate import pad_batch  # torch only when tensors are asked for: format.py is read without it

    rows = [
        encode_row(ex, tokenizer, train, max_length, max_new_tokens, where=f"example {i}", window=window)
        for i, ex in enumerate([examples] if isinstance(examples, dict) else list(examples))
    ]
    return pad_batch(rows, special_ids(tokenizer)[0], side="right" if train else "left")


def encode_row(
    example, tokenizer, train=True, max_length=512, max_new_tokens=32, where="example 0", window=None
) -> dict:
    """One example -> {"input_ids"(, "labels")}, as `encode` (and the Trainer collator,
    interop/trainers.py) builds it; a one-line ValueError naming `where` when the example has no question,
    no answer to train on, or does not fit."""
    ex = dict(example)
    if not ex.get("question"):
        raise ValueError(f"{where}: no 'question' (keys: {sorted(ex)})")
    if "answers" not in ex and "answer" in ex:
        ex["answers"] = [ex["answer"]]
    if train and not ex.get("answers"):
        raise ValueError(f"{where}: training needs 'answers' (or 'answer')")
    ex.setdefault("answers", [])  # a question without answers: its window is chosen by the question
    enc = _encode_one(ex, tokenizer, max_length, max_new_tokens, train, window)
    if enc is None:
        raise ValueError(f"{where}: does not fit max_length={max_length}")
    return enc
