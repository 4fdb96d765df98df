"""Local formats, bad input, and prompt formatting with a tiny offline tokenizer."""

import csv
import gzip
import json
import sys

import pytest

from ptmoe.data import DataError, load_examples
from ptmoe.data.format import build_prompt_text, encode_dataset, encode_eval, encode_train, target_text

SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "Paris",
            "paragraphs": [
                {
                    "context": "Paris is the capital of France.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "What is the capital of France?",
                            "answers": [{"text": "Paris", "answer_start": 0}, {"text": "Paris", "answer_start": 0}],
                        },
                        {
                            "id": "q2",
                            "question": "Paris is the capital of what?",
                            "answers": [{"text": "France", "answer_start": 24}],
                        },
                    ],
                }
            ],
        }
    ],
}


def write_jsonl(path, rows, gz=False):
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(lines)
    else:
        path.write_text(lines)
    return path


# ------------------------------------------------------------------ local formats


def test_squad_json(tmp_path):
    p = tmp_path / "mysquad.json"
    p.write_text(json.dumps(SQUAD))
    exs = load_examples(p)
    assert [e["question"] for e in exs] == ["What is the capital of France?", "Paris is the capital of what?"]
    assert exs[0]["answers"] == ["Paris"]  # duplicates merged
    assert exs[0]["context"] == "Paris is the capital of France."
    assert exs[0]["task"] == "qa" and exs[0]["doc"] == "Paris" and exs[0]["set"] == "mysquad" and exs[0]["id"] == "q1"


@pytest.mark.parametrize("gz", [False, True])
def test_mrqa_jsonl(tmp_path, gz):
    p = tmp_path / ("dev.jsonl.gz" if gz else "dev.jsonl")
    rows = [
        {"header": {"dataset": "SQuAD", "split": "dev"}},
        {
            "context": "Ada Lovelace wrote the first program.",
            "qas": [
                {"qid": "a", "question": "Who wrote the first program?", "answers": ["Ada Lovelace", "Lovelace"]},
                {
                    "qid": "b",
                    "question": "What did she write?",
                    "detected_answers": [{"text": "the first program", "char_spans": [[18, 34]]}],
                },
            ],
        },
    ]
    exs = load_examples(write_jsonl(p, rows, gz))
    assert [(e["id"], e["answers"]) for e in exs] == [("a", ["Ada Lovelace", "Lovelace"]), ("b", ["the first program"])]
    assert exs[0]["context"] == "Ada Lovelace wrote the first program." and exs[0]["task"] == "qa"


def test_gsm8k_jsonl(tmp_path):
    rows = [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
        {"question": "Big?", "answer": "#### 1,250"},
    ]
    exs = load_examples(write_jsonl(tmp_path / "gsm.jsonl", rows))
    assert exs[0]["task"] == "math" and exs[0]["answers"] == ["7"] and exs[0]["solution"].endswith("#### 7")
    assert exs[1]["answers"] == ["1250"] and exs[0]["context"] == ""


def test_generic_jsonl_mapping(tmp_path):
    rows = [
        {"q": "Who?", "ctx": "Bob ran.", "ans": ["Bob"], "key": "r1"},
        {"q": "What?", "ctx": "Bob ran.", "ans": "ran"},
    ]
    exs = load_examples(write_jsonl(tmp_path / "g.jsonl", rows), columns="question=q,context=ctx,answers=ans,id=key")
    assert [(e["id"], e["question"], e["context"], e["answers"]) for e in exs][0] == ("r1", "Who?", "Bob ran.", ["Bob"])
    assert exs[1]["answers"] == ["ran"] and exs[1]["task"] == "qa"


def test_csv_mapping(tmp_path):
    p = tmp_path / "t.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["passage", "query", "gold"])
        w.writerow(["Rome is in Italy.", "Where is Rome?", "Italy"])
        w.writerow(["Oslo is in Norway.", "Where is Oslo?", '["Norway", "in Norway"]'])
    exs = load_examples(p, columns={"context": "passage", "question": "query", "answers": "gold"})
    assert [e["answers"] for e in exs] == [["Italy"], ["Norway", "in Norway"]]
    assert exs[0]["context"] == "Rome is in Italy."


def test_hf_without_datasets_is_a_clear_error(monkeypatch):
    # the test command installs lm-eval, which brings datasets: hide it (None in sys.modules: import fails)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(RuntimeError, match="pip install datasets"):
        load_examples("hf:squad", split="validation")


def test_unknown_spec():
    with pytest.raises(FileNotFoundError):
        load_examples("no/such_split_anywhere")


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "bad_row, field",
    [
        ('{"question": "Q", "answer": "#### 3"', "invalid JSON"),  # malformed JSON
        ({"answer": "#### 3"}, "field 'question' missing"),  # missing field
        ({"question": ["not", "a", "string"], "answer": "#### 3"}, "field 'question' must be a string"),  # wrong type
        ({"question": "Q", "answers": {"x": 1}}, "field 'answers' must be a string or a list"),  # wrong type
        ({"question": "Q", "answer": "3 apples"}, "field 'answer' has no '#### N'"),  # GSM8K row without final answer
        ({"question": "Q"}, "field 'answers' missing"),
        (["a", "list"], "row must be a JSON object"),
    ],
)
def test_bad_rows_name_file_line_field(tmp_path, bad_row, field):
    good = {"question": "Q", "answer": "#### 3"}
    p = write_jsonl(tmp_path / "data.jsonl", [good, good, bad_row, good])
    with pytest.raises(DataError) as e:
        load_examples(p)
    msg = str(e.value)
    assert "\n" not in msg and "data.jsonl:3: " in msg and field in msg


def test_bad_row_with_column_mapping_names_the_column(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"q": "Q", "ans": "A", "ctx": "A"}, {"ans": "A", "ctx": "A"}])
    with pytest.raises(DataError, match=r"m\.jsonl:2: field 'q' missing"):
        load_examples(p, columns="question=q,answers=ans,context=ctx")


def test_bad_mrqa_row(tmp_path):
    rows = [
        {"header": {}},
        {"context": "c", "qas": [{"qid": "a", "question": "q", "answers": ["c"]}]},
        {"context": "c", "qas": [{"qid": "b", "answers": ["c"]}]},
    ]
    with pytest.raises(DataError, match=r"dev\.jsonl:3: field 'qas\[0\]\.question' missing"):
        load_examples(write_jsonl(tmp_path / "dev.jsonl", rows))
    exs = load_examples(tmp_path / "dev.jsonl", skip_bad=True, log=lambda m: None)
    assert len(exs) == 1 and exs.n_skipped == 1


def test_bad_csv_row(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("q,a\nWhere?,here\n,there\n")
    with pytest.raises(DataError, match=r"t\.csv:3: field 'q' missing"):
        load_examples(p, columns="question=q,answers=a")


def test_bad_squad_json(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"data": [\n{"title": "x",\n "paragraphs": [}\n]}')
    with pytest.raises(DataError, match=r"s\.json:3: invalid JSON"):
        load_examples(p)
    bad = json.loads(json.dumps(SQUAD))
    del bad["data"][0]["paragraphs"][0]["qas"][1]["question"]
    p.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"s\.json:data\[0\]\.paragraphs\[0\]\.qas\[1\]: field 'question' missing"):
        load_examples(p)
    exs = load_examples(p, skip_bad=True, log=lambda m: None)
    assert len(exs) == 1 and exs.n_skipped == 1


def test_skip_bad_counts_and_reports(tmp_path):
    good = {"question": "Q", "answer": "#### 3"}
    p = write_jsonl(
        tmp_path / "data.jsonl", [good, "{broken", {"answer": "#### 1"}, good, {"question": [], "answer": "#### 2"}]
    )
    logged = []
    exs = load_examples(p, skip_bad=True, log=logged.append)
    assert len(exs) == 2 and exs.n_skipped == 3
    assert logged == [f"{p}: skipped 3 bad rows"]


# ------------------------------------------------------------------- formatting


def make_tokenizer(chat=True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = "Paris is the capital of France. Answer the question with a short span from the passage. Question: what is the answer?"
    tok.train_from_iterator([text] * 10, trainer)
    t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    if chat:
        t.chat_template = (
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        )
    return t


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


QA = {
    "task": "qa",
    "context": "Paris is the capital of France.",
    "question": "What is the capital of France?",
    "answers": ["Paris", "paris"],
}
MATH = {
    "task": "math",
    "context": "",
    "question": "Tom has 3 apples and buys 4. How many?",
    "answers": ["7"],
    "solution": "3+4=<<3+4=7>>7 apples\n#### 7",
}


def test_prompt_uses_chat_template(tok):
    text = build_prompt_text(QA, tok)
    assert text.startswith("<|user|>Answer the question with a short span from the passage.")
    assert "Passage: Paris is the capital of France." in text and "Question: What is the capital of France?" in text
    assert text.endswith("<|assistant|>")
    plain = build_prompt_text(QA, make_tokenizer(chat=False))
    assert "<|user|>" not in plain and plain.endswith("Answer:\n")
    assert "The answer is" in build_prompt_text(MATH, tok) and "Passage" not in build_prompt_text(MATH, tok)


def test_target_text(tok):
    assert target_text(QA, tok) == "Paris</s>"
    assert target_text(MATH, tok) == "3+4=7 apples\nThe answer is 7.</s>"
    assert target_text({**MATH, "solution": None}) == "The answer is 7."


def test_encode_train_labels_only_on_answer(tok):
    enc = encode_train(QA, tok, max_length=256)
    ids, labels = enc["input_ids"], enc["labels"]
    assert len(ids) == len(labels)
    n = sum(l != -100 for l in labels)
    assert labels[: len(ids) - n] == [-100] * (len(ids) - n)  # prompt masked ...
    assert tok.decode(ids[len(ids) - n :]) == "Paris</s>"  # ... and the labelled part is the answer + EOS
    assert labels[len(ids) - n :] == ids[len(ids) - n :]
    assert tok.decode(ids[: len(ids) - n]) == build_prompt_text(QA, tok)
    prompt = encode_eval(QA, tok, max_length=256, max_new_tokens=16)
    assert prompt == ids[: len(ids) - n]  # the eval prompt is exactly the training prompt


LONG = {
    "task": "qa",
    "context": " ".join(f"filler{i}" for i in range(300))
    + " The treaty was signed in Utrecht in 1713. "
    + " ".join(f"tail{i}" for i in range(300)),
    "question": "Where was the treaty signed?",
    "answers": ["Utrecht"],
}


@pytest.mark.parametrize("train", [True, False])
def test_truncation_keeps_answer(tok, train):
    full = len(tok(build_prompt_text(LONG, tok))["input_ids"])
    max_length = 160
    assert full > 4 * max_length
    if train:
        ids = encode_train(LONG, tok, max_length)["input_ids"]
    else:
        ids = encode_eval(LONG, tok, max_length, max_new_tokens=20)
        assert len(ids) + 20 <= max_length
    assert len(ids) <= max_length
    text = tok.decode(ids)
    assert "Utrecht" in text and "Question: Where was the treaty signed?" in text
    assert "filler0 " not in text and "tail299" not in text  # the passage was cut on both sides


def test_answer_near_edge_and_offsets(tok):
    ex = {**LONG, "context": "Utrecht " + LONG["context"], "answer_start": 0}
    text = tok.decode(encode_train(ex, tok, 120)["input_ids"])
    assert "Passage: Utrecht filler0" in text


def test_too_long_examples_dropped_and_counted(tok):
    no_answer = {**LONG, "answers": ["Amsterdam"], "answer_type": "span"}  # a recorded span not in the passage
    long_math = {**MATH, "question": "apples " * 400}  # math is never truncated
    enc, dropped = encode_dataset([QA, no_answer, LONG, long_math, MATH], tok, max_length=160)
    assert dropped == 2 and [e["index"] for e in enc] == [0, 2, 4]
    assert all(len(e["input_ids"]) <= 160 and len(e["labels"]) == len(e["input_ids"]) for e in enc)
    enc, dropped = encode_dataset([QA, long_math], tok, max_length=160, train=False, max_new_tokens=32)
    assert dropped == 1 and "labels" not in enc[0] and len(enc[0]["input_ids"]) <= 128
    _, dropped = encode_dataset([QA], tok, max_length=10)  # not even the short one fits
    assert dropped == 1


def test_answer_only_in_question_keeps_passage_start(tok):
    ex = {
        **LONG,
        "question": "Was it signed in Utrecht or Paris?",
        "context": LONG["context"].replace("Utrecht", "a city"),
    }
    text = tok.decode(encode_train(ex, tok, 160)["input_ids"])
    assert "Passage: filler0 filler1" in text and "tail299" not in text


def test_special_ids_stop_on_eos_and_end_of_turn_never_on_unk():
    from ptmoe.base_models import load_shape
    from ptmoe.data.format import special_ids

    _, tok = load_shape("tiny")  # no end-of-turn token in its vocabulary
    pad, ends = special_ids(tok)
    assert ends == [tok.eos_token_id] and pad == tok.pad_token_id
    assert tok.unk_token_id is None or tok.unk_token_id not in ends
    tok.add_special_tokens({"additional_special_tokens": ["<end_of_turn>"]})
    assert special_ids(tok)[1] == sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")})


def test_answer_type_and_start_are_read_and_checked(tmp_path):
    p = tmp_path / "rows.jsonl"
    row = {"question": "Is it?", "context": "It is no longer so.", "answers": ["no"], "answer_type": "yes_no"}
    p.write_text(json.dumps(row) + "\n" + json.dumps({**row, "answer_type": "span", "answer_start": 6}) + "\n")
    exs = load_examples(p)
    assert exs[0]["answer_type"] == "yes_no" and "answer_start" not in exs[0]
    assert exs[1]["answer_type"] == "span" and exs[1]["answer_start"] == 6
    p.write_text(json.dumps({**row, "answer_type": "sentence"}) + "\n")
    with pytest.raises(DataError, match=r"rows.jsonl:1: field 'answer_type' must be one of span, yes_no, free"):
        load_examples(p)
