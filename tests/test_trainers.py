"""Training adapters with transformers' Trainer and TRL's SFTTrainer, on the tiny random Llama and
small local jsonl data: the Trainer gives the adapter `ptmoe train` gives (pt, and a routed ptmoe adapter
with noise and load balancing); its checkpoints are the adapter alone and resume bit-identically; the saved
adapter answers through `ptmoe generate` and the hf server as `ptmoe train`'s; SFTTrainer trains and saves
a loadable adapter; the collator's bad input is one line."""

import json
import random
from pathlib import Path

import openai  # the hf server's client (the test extra)
import pytest
import torch
from transformers import Trainer, TrainingArguments
from transformers.utils import ModelOutput

from ptmoe import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.cli import main as cli_main
from ptmoe.config.loading import load_config
from ptmoe.data.format import build_prompt_text
from ptmoe.interop.trainer_setup import ptmoe_train_setup
from ptmoe.interop.trainers import AdapterError, collator_for, training_rows
from ptmoe.serving.adapters import load_served
from ptmoe.serving.app import create_app
from ptmoe.serving.engine_hf import HFEngine
from ptmoe.serving.server import Background
from ptmoe.training.data import read_sources
from ptmoe.training.loop import train
from test_pipeline import adapter_tensors, assert_same_adapter, quiet
from test_serve import save_wide_tiny_base

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = ["sun", "river", "stone", "cloud", "elephant", "sky", "music", "lighthouse", "paper", "ox"]
OPTIONS = {
    "pt": ["method_options={num_tokens: 4}", "train.lr=0.3"],
    # routed, with exploration noise large enough to change the route and load balancing in the loss
    "ptmoe": [
        "preset=paper",
        "method_options={num_tokens: 4, experts: 2, rank: 2, noise_std: 1.0, load_balance: 0.5}",
        "train.lr=0.3",
        "train.lr_groups={router: 0.05}",
    ],
}
TRAINER_FILES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"}  # the Trainer's own


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    rows = []
    for _ in range(16):
        a, b = rng.sample(WORDS, 2)
        rows.append({"context": f"The {a} is {b}.", "question": f"What is the {a}?", "answers": [b]})
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:14]))
    (d / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[14:]))
    save_wide_tiny_base(d / "base")  # answers that vary with the question and the adapter
    return d


def overrides(data, method, *extra):
    return [
        f"model={data / 'base'}",
        "dtype=fp32",
        f"method={method}",
        f"data.train=['{data / 'train.jsonl'}']",
        f"data.eval=['{data / 'eval.jsonl'}']",
        "data.valid_examples=0",
        "train.steps=4",
        "train.batch_size=2",
        "train.save_every=2",
        *OPTIONS[method],
        *extra,
    ]


def trainer_run(data, method, out, resume=None, same_start=True, extra=(), **arguments):
    """The Trainer on ptmoe train's set-up; -> (trainer, the adapter's tensors before training)."""
    setup = ptmoe_train_setup(None, overrides(data, method, *extra), log=quiet)
    if not same_start:
        setup.callback.cpu_state = None
    before = {k: v.clone() for k, v in setup.model.adapter_state_dict().items()}
    trainer = setup.trainer(out, **arguments)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    return trainer, before


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """`ptmoe train`'s final adapter per method (4 steps)."""
    root = tmp_path_factory.mktemp("ptmoe-train")
    out = {}
    for method in OPTIONS:
        cfg = load_config(None, overrides(data, method, f"output_dir={root / method}"))
        out[method] = Path(train(cfg, log=quiet)["output_dir"]) / "final"
    return out


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """The Trainer's final adapter per method on ptmoe train's set-up, and its tensors before training."""
    root = tmp_path_factory.mktemp("trainer")
    return {m: (root / m, trainer_run(data, m, root / m)[1]) for m in OPTIONS}


@pytest.mark.parametrize("method", list(OPTIONS))
def test_trainer_gives_the_adapter_ptmoe_train_gives(method, data, reference, trained, tmp_path):
    folder, before = trained[method]
    assert_same_adapter(folder, reference[method], atol=1e-6)
    after = adapter_tensors(folder)
    assert all(float((after[k] - before[k]).abs().max()) > 1e-3 for k in after)  # every tensor trained
    if method == "ptmoe":  # the router noise matters: from another random state the adapters part
        trainer_run(data, method, tmp_path / "other", same_start=False)
        with pytest.raises(AssertionError):
            assert_same_adapter(tmp_path / "other", reference[method], atol=1e-6)


@pytest.mark.parametrize("method", list(OPTIONS))
def test_trainer_and_ptmoe_train_step_on_the_token_mean_of_an_accumulated_step(method, data, tmp_path):
    """grad_accum 2 over micro-batches of unequal label counts: both routes weigh every label token of the
    step alike (and the auxiliary terms by each micro-batch's share of them), so they train the same adapter."""
    extra = ["train.grad_accum=2", "train.steps=2"]
    rows = ptmoe_train_setup(None, overrides(data, method, *extra), log=quiet).rows.in_training_order()
    counts = [sum(sum(x != -100 for x in r["labels"][1:]) for r in rows[i : i + 2]) for i in range(0, len(rows), 2)]
    assert counts[0] != counts[1] or counts[2] != counts[3], counts  # the step's token mean is not a mean of means
    trainer_run(data, method, tmp_path / "hf", extra=extra)
    cfg = load_config(None, overrides(data, method, *extra, f"output_dir={tmp_path / 'ours'}"))
    ours = Path(train(cfg, log=quiet)["output_dir"]) / "final"
    assert_same_adapter(tmp_path / "hf", ours, atol=1e-6)


def test_checkpoint_is_the_adapter_alone_and_resumes_bit_identically(data, reference, tmp_path):
    whole, _ = trainer_run(data, "ptmoe", tmp_path / "whole")
    ckpt = tmp_path / "whole" / "checkpoint-2"
    files = {p.name for p in ckpt.iterdir()}
    assert files == TRAINER_FILES | {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    ours = sum(p.stat().st_size for p in ckpt.iterdir() if p.name not in TRAINER_FILES)
    theirs = sum(p.stat().st_size for p in reference["ptmoe"].iterdir())
    assert abs(ours - theirs) < 4096, (ours, theirs)  # no frozen base: the same adapter folder within a few KB
    assert (
        "lr 0.3" in (ckpt / "README.md").read_text()
        and json.loads((ckpt / "adapter_config.json").read_text())["step"] == 2
    )

    cut = tmp_path / "cut"  # a run stopped after its step-2 checkpoint, then resumed from it
    trainer_run(data, "ptmoe", cut, max_steps=2)
    resumed, _ = trainer_run(data, "ptmoe", cut / "resumed", resume=str(cut / "checkpoint-2"))
    assert resumed.state.global_step == 4
    assert_same_adapter(cut / "resumed", tmp_path / "whole", atol=0)
    assert_same_adapter(cut / "resumed" / "checkpoint-4", tmp_path / "whole" / "checkpoint-4", atol=0)

    again = whole.__class__(model=whole.model, args=whole.args, train_dataset=[])
    with pytest.raises(AdapterError, match=r"whole already holds checkpoint-2, checkpoint-4: resume from the last"):
        again.train()  # a new run where one was is refused before it trains
    with pytest.raises(AdapterError, match="already holds an adapter"):  # a finished adapter is never overwritten
        whole.__class__(model=whole.model, args=whole.args).save_model(str(reference["ptmoe"]))


def test_saved_adapter_answers_through_generate_server_and_lm_eval_as_ptmoe_trains(
    data, reference, trained, tmp_path, capsys
):
    questions = [
        {"question": "What is the sun?", "context": "The sun is paper."},
        {"question": "What is the ox?", "context": "The ox is music."},
    ]
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in questions))

    def generate(adapter):
        args = [
            "generate",
            "--model",
            str(data / "base"),
            "--dtype",
            "fp32",
            "--max-new-tokens",
            "6",
            "--file",
            str(qfile),
        ]
        assert cli_main([*args, *(["--adapter", str(adapter)] if adapter else [])]) == 0
        return [json.loads(line)["answer"] for line in capsys.readouterr().out.splitlines()]

    adapters = {f"{m}-{who}": str(f) for m in OPTIONS for who, f in (("hf", trained[m][0]), ("ref", reference[m]))}
    answers = {name: generate(path) for name, path in adapters.items()}
    for m in OPTIONS:
        assert answers[f"{m}-hf"] == answers[f"{m}-ref"]
    assert len(set(answers["pt-ref"])) == 2 and answers["pt-ref"] != generate(None)  # the answers say something

    served = load_served(str(data / "base"), adapters)
    with Background(create_app(HFEngine(served), served, max_batch=8, batch_wait=0.05)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        for name in adapters:
            got = [
                client.completions.create(
                    model=name, prompt=build_prompt_text(q, served.tokenizer), max_tokens=6, temperature=0
                )
                .choices[0]
                .text.strip()
                for q in questions
            ]
            assert got == answers[name], name

    from lm_eval.api.instance import Instance

    from ptmoe.interop.lm_eval_model import PtmoeLM

    requests = [Instance("loglikelihood", {}, (build_prompt_text(q, served.tokenizer), " paper"), 0) for q in questions]
    for m in OPTIONS:  # `ptmoe lm-eval`'s model scores both adapters alike
        scores = [
            [lp for lp, _ in PtmoeLM(str(data / "base"), adapters[f"{m}-{who}"], "fp32").loglikelihood(requests)]
            for who in ("hf", "ref")
        ]
        assert scores[0] == pytest.approx(scores[1], abs=1e-4)


def test_plain_trainer_trains_evaluates_and_checkpoints_layers(data):
    """The issue's first failure: transformers' own Trainer, the model's own forward (a ModelOutput), a
    collator from ptmoe's formatting on raw examples, gradient checkpointing passed to the frozen base,
    bf16 mixed precision."""
    base, tok = load_shape("tiny")
    model = AdaptedModel(base, "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2, "load_balance": 0.1}, tok)
    before = model.adapter_state_dict()["B"].clone()
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    args = TrainingArguments(
        output_dir=str(data / "plain"),
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=0.1,
        gradient_checkpointing=True,
        bf16=True,  # autocast over the frozen base
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        remove_unused_columns=False,
        report_to="none",
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=rows, eval_dataset=rows[:4], data_collator=collator_for(model, tok)
    )
    trainer.train()
    assert model.lm.is_gradient_checkpointing
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters())  # the prompt stays fp32
    assert not torch.equal(model.adapter_state_dict()["B"], before)
    assert trainer.evaluate()["eval_loss"] > 0


def plain_trainer(data, out, max_steps, eval_rows=None, **arguments):
    """A PEFT user's habit: transformers' own Trainer handed an AdaptedModel on the tiny model (tied embeddings,
    like the embedded SmolLM2), checkpoints on; -> (trainer, the adapter's tensors before training)."""
    base, tok = load_shape("tiny")
    assert base.lm_head.weight is base.model.embed_tokens.weight
    model = AdaptedModel(base, "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2, "noise": "none"}, tok)
    before = {k: v.clone() for k, v in model.adapter_state_dict().items()}
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=2,
        learning_rate=0.1,
        save_steps=2,
        seed=0,
        use_cpu=True,
        remove_unused_columns=False,
        report_to="none",
        **arguments,
    )
    collate = collator_for(model, tok)
    return Trainer(model=model, args=args, train_dataset=rows, eval_dataset=eval_rows, data_collator=collate), before


def test_plain_trainer_checkpoints_and_saves_the_adapter_alone_and_resumes(data, tmp_path):
    trainer, before = plain_trainer(data, tmp_path / "whole", 4)
    trainer.train()
    trainer.save_model()
    trained = trainer.model.adapter_state_dict()
    assert all(not torch.equal(trained[k], before[k]) for k in trained)
    ckpt = tmp_path / "whole" / "checkpoint-2"
    weights = ckpt / "model.safetensors"  # the Trainer's file name; what it holds is the adapter and its config
    assert weights.stat().st_size < 64 * 1024  # no frozen base (the tiny base alone is about 2 MB)
    base, tok = load_shape("tiny")
    for folder in (tmp_path / "whole", tmp_path / "whole" / "checkpoint-4"):  # save_model's and the last checkpoint
        loaded = AdaptedModel.from_pretrained(folder, base, tok)
        assert loaded.method == "ptmoe" and loaded.config.experts == 2
        for k, v in trained.items():
            torch.testing.assert_close(loaded.adapter_state_dict()[k], v, rtol=0, atol=0)
    early = AdaptedModel.from_pretrained(ckpt, base, tok).adapter_state_dict()
    assert not torch.equal(early["B"], trained["B"])

    resumed, _ = plain_trainer(data, tmp_path / "whole", 4)  # a fresh model: the checkpoint's adapter is read back
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.state.global_step == 4
    for k, v in resumed.model.adapter_state_dict().items():
        torch.testing.assert_close(v, trained[k], rtol=0, atol=1e-6)

    evals = [json.loads(line) for line in (data / "eval.jsonl").read_text().splitlines()]
    best, _ = plain_trainer(  # the best checkpoint by eval_loss, read back at the end as a PEFT user asks for it
        data, tmp_path / "best", 4, evals, eval_strategy="steps", eval_steps=2, load_best_model_at_end=True
    )
    best.train()
    assert best.state.best_model_checkpoint.endswith("checkpoint-2")  # not the last: the end reads it back
    chosen = AdaptedModel.from_pretrained(best.state.best_model_checkpoint, base, tok).adapter_state_dict()
    for k, v in best.model.adapter_state_dict().items():
        torch.testing.assert_close(v, chosen[k], rtol=0, atol=0)

    other = AdaptedModel(load_shape("tiny", seed=1)[0], "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2}, tok)
    with pytest.raises(AdapterError, match="adapter was trained on base model"):
        other.load_state_dict(trainer.model.state_dict())


def test_sft_trainer_trains_and_saves_a_loadable_adapter(data, tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    from ptmoe.interop.trl_sft import AdapterSFTTrainer

    base, tok = load_shape("tiny")
    model = AdaptedModel(base, "pt", {"num_tokens": 4}, tok)
    before = model.adapter_state_dict()["prompt"].clone()
    rows = training_rows(tok, None, overrides(data, "pt"), log=quiet)
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows.train])
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=0.3,
        dataset_kwargs={"skip_prepare_dataset": True},
        bf16=False,  # TRL defaults to bf16; the tiny model trains in fp32 here
        remove_unused_columns=False,
        report_to="none",
    )
    trainer = AdapterSFTTrainer(
        model, args, train_dataset=dataset, data_collator=collator_for(model, tok), processing_class=tok
    )
    trainer.train()
    trainer.save_model()
    assert {p.name for p in (tmp_path / "sft").iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "checkpoint-2",
    }
    loaded = AdaptedModel.from_pretrained(tmp_path / "sft", load_shape("tiny")[0], tok)
    torch.testing.assert_close(loaded.adapter_state_dict()["prompt"], model.adapter_state_dict()["prompt"])
    assert not torch.equal(loaded.adapter_state_dict()["prompt"], before)


def test_collator_builds_ptmoe_rows_and_names_bad_input(data):
    base, tok = load_shape("tiny")
    rows = training_rows(tok, None, overrides(data, "pt"), log=quiet)
    examples = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    collate = collator_for(AdaptedModel(base, "pt", {"num_tokens": 4}, tok), tok)
    (_, read), *_ = read_sources(rows.config, log=quiet)[0]  # the examples ptmoe train's rows index
    raw = collate([read[r["index"]] for r in rows.train[:3]])  # examples, encoded here
    encoded = collate(rows.train[:3])  # what ptmoe train trains on
    assert raw.keys() == encoded.keys() == {"input_ids", "attention_mask", "labels"}
    assert all(torch.equal(raw[k], encoded[k]) for k in raw)
    with pytest.raises(ValueError, match=r"^row 1 of the batch \('What is the .*'\): training needs 'answers'"):
        collate([examples[0], {"question": "What is the sky?", "context": "The sky is ox."}])
    with pytest.raises(ValueError, match=r"^row 0 of the batch: 'input_ids' without 'labels'"):
        collate([{"input_ids": [1, 2, 3]}])
    with pytest.raises(ValueError, match=r"^row_sources=True: the 'pt' adapter does not read row sources"):
        collator_for(AdaptedModel(base, "pt", {"num_tokens": 4}, tok), tok, row_sources=True)
    oracle = AdaptedModel(
        base, "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2, "route_by": "source", "sources": ["a", "b"]}, tok
    )
    with pytest.raises(ValueError, match=r"^row 0 of the batch: no 'set'"):
        collator_for(oracle, tok)([examples[0]])
    assert collator_for(oracle, tok)(rows.train[:2])["row_sources"] == [r["set"] for r in rows.train[:2]]


def test_forward_takes_what_the_trainer_passes(data):
    """A ModelOutput whose loss holds the router's terms in training; with `num_items_in_batch` the
    micro-batches' losses add up to the token mean of the whole step (against plain cross-entropy on full
    logits); extra columns are ignored."""
    base, tok = load_shape("tiny")
    options = {"num_tokens": 4, "experts": 2, "rank": 2, "noise": "none", "load_balance": 0.5}
    model = AdaptedModel(base, "ptmoe", options, tok).train()
    batch = collator_for(model, tok)(training_rows(tok, None, overrides(data, "pt"), log=quiet).train[:4])
    halves = [{k: v[i : i + 2] for k, v in batch.items()} for i in (0, 2)]
    out = model(**halves[0], index=[0, 1])  # a column the model does not read
    assert isinstance(out, ModelOutput) and list(out.keys()) == ["loss"] and out[0] is out.loss
    torch.testing.assert_close(out.loss, out.label_loss + model.aux_loss())
    total = sum(int((h["labels"][:, 1:] != -100).sum()) for h in halves)
    summed, reference = 0.0, 0.0
    for h in halves:
        summed += model(**h, num_items_in_batch=torch.tensor(total)).loss
        plain = model(**h, return_logits=True)  # full logits: the 4 prompt positions, then the row's
        ce = torch.nn.functional.cross_entropy(
            plain.logits[:, 4:-1].flatten(0, 1), h["labels"][:, 1:].flatten(), reduction="sum"
        )
        reference += (ce + model.aux_loss() * plain.num_label_tokens) / total
    torch.testing.assert_close(summed, reference, rtol=1e-5, atol=1e-6)
