"""Examples -> token ids. The prompt is one user turn rendered with the tokenizer's chat
template when it has one (plain text otherwise); the target is the answer (QA) or the
worked solution ending in "The answer is N." (math), followed by the EOS token.

Over-long QA passages are cut to a window of tokens around the answer (its recorded
`answer_start`, else the first occurrence of a gold answer; the passage start when the
answer is only in the question) so the answer stays inside;
the same window is used for evaluation prompts. Examples that still don't fit give None
and `encode_dataset` counts them. `encode` (exported as `ptmoe.encode`) is the public entry: the
same prompts as training and evaluation, as padded tensors.
"""

import re

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


def _answer_span(example):
    ctx = example.get("context", "")
    start = example.get("answer_start")
    for a in example["answers"]:
        if start is not None and ctx[start : start + len(a)] == a:
            return start, start + len(a)
        i = ctx.find(a)
        if i >= 0:
            return i, i + len(a)
    if start is not None and 0 <= start < len(ctx):  # free-form answer (CoQA): its rationale
        return start, start + 1
    if any(a in example["question"] for a in example["answers"]):  # ROPES: "A or B?"
        return 0, 1
    return None


def _windows(example, tokenizer, budget):
    """The passage cut to at most `budget` tokens around the answer, or None."""
    ctx = example["context"]
    span = _answer_span(example)
    if span is None or budget <= 0:
        return None
    enc = tokenizer(ctx, add_special_tokens=False, return_offsets_mapping=True)
    offs = enc["offset_mapping"]
    inside = [i for i, (s, e) in enumerate(offs) if e > span[0] and s < span[1]]
    if not inside or inside[-1] - inside[0] + 1 > budget:
        return None
    # center the window on the answer, clipped to the passage
    mid = (inside[0] + inside[-1]) // 2
    lo = max(0, min(mid - budget // 2, len(offs) - budget))
    lo = min(max(lo, inside[-1] - budget + 1), inside[0])  # the answer stays inside
    hi = min(len(offs), lo + budget)
    a, b = offs[lo][0], offs[hi - 1][1]
    if a > 0 and not ctx[a - 1].isspace():  # don't start or end mid-word
        a = next((i for i in range(a, span[0]) if ctx[i].isspace()), a)
    if b < len(ctx) and not ctx[b].isspace():
        b = next((i for i in range(b, span[1], -1) if ctx[i - 1].isspace()), b)
    return ctx[a:b].strip()


def _prompt_ids(example, tokenizer, room):
    """Prompt ids of at most `room` tokens, truncating a QA passage if needed."""
    ids = _ids(tokenizer, build_prompt_text(example, tokenizer), True)
    if len(ids) <= room:
        return ids
    if example.get("task") == "math" or not example.get("context"):
        return None
    n_ctx = len(_ids(tokenizer, example["context"], False))
    budget = n_ctx - (len(ids) - room)
    for _ in range(4):  # token counts shift a little at the cut edges: shrink and retry
        ctx = _windows(example, tokenizer, budget)
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


def encode_train(example, tokenizer, max_length):
    """{"input_ids", "labels"} with labels -100 on the prompt, or None if it can't fit."""
    target = _ids(tokenizer, target_text(example, tokenizer), False)
    prompt = _prompt_ids(example, tokenizer, max_length - len(target))
    if prompt is None or not target:
        return None
    return {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target}


def encode_eval(example, tokenizer, max_length, max_new_tokens):
    """Prompt ids leaving room for max_new_tokens generated tokens, or None."""
    return _prompt_ids(example, tokenizer, max_length - max_new_tokens)


def _encode_one(ex, tokenizer, max_length, max_new_tokens, train):
    """{"input_ids"(, "labels")} of one example as training or evaluation sees it, or None if it can't fit."""
    if train:
        return encode_train(ex, tokenizer, max_length)
    ids = encode_eval(ex, tokenizer, max_length, max_new_tokens)
    return None if ids is None else {"input_ids": ids}


def encode_dataset(examples, tokenizer, max_length, train=True, max_new_tokens=32):
    """(encoded, n_dropped). Each encoded item has "input_ids", "index" (position in
    examples) and, for training, "labels"."""
    out, dropped = [], 0
    for i, ex in enumerate(examples):
        enc = _encode_one(ex, tokenizer, max_length, max_new_tokens, train)
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


def encode(examples, tokenizer, train: bool = False, max_length: int = 512, max_new_tokens: int = 32):
    """The public way to build model inputs exactly as `ptmoe train` and `ptmoe eval` do (chat-template
    prompt, passage cut around the answer when too long): examples (a dict or a list of dicts with
    "question", "context" for QA, "task": "math" for word problems, and "answers" (or "answer") for
    training) -> padded tensors. train=True: input_ids, attention_mask and labels (the answer tokens only),
    right-padded; else the prompts alone, left-padded for `generate`, leaving room for max_new_tokens."""
    from ..collate import pad_batch

    rows = [
        encode_row(ex, tokenizer, train, max_length, max_new_tokens, where=f"example {i}")
        for i, ex in enumerate([examples] if isinstance(examples, dict) else list(examples))
    ]
    return pad_batch(rows, special_ids(tokenizer)[0], side="right" if train else "left")


def encode_row(example, tokenizer, train=True, max_length=512, max_new_tokens=32, where="example 0") -> dict:
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
    ex.setdefault("answers", [])  # without them a too-long passage cannot be cut around the answer
    enc = _encode_one(ex, tokenizer, max_length, max_new_tokens, train)
    if enc is None:
        raise ValueError(f"{where}: does not fit max_length={max_length}")
    return enc
