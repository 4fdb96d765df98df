"""A method defined only in this file: registered by name, it runs through train, save, load,
evaluate, generate and compare without a line of src/ changing. Two of them: a routed soft prompt
(the prompt family) and RMSNorm tuning (the weight family)."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ptmoe import AdaptedModel
from ptmoe.base_models import count_trainable, load_shape
from ptmoe.cli import main as cli_main
from ptmoe.config.loading import load_config
from ptmoe.evaluation.evaluate import evaluate
from ptmoe.methods import REGISTRY, MethodConfig, MethodSpec, PromptModule, Routing, WeightAdapter
from ptmoe.methods.base import init_embeddings, masked_mean, register
from ptmoe.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class TwoWayConfig(MethodConfig):
    num_tokens: int = 2


class TwoWayPrompt(PromptModule):
    """Two expert prompts (P and P reversed), mixed per input by a softmax gate on the pooled input."""

    def __init__(self, cfg, embeddings, tokenizer=None, generator=None):
        super().__init__()
        self.num_tokens = cfg.num_tokens
        self.prompt_tokens = nn.Parameter(init_embeddings(embeddings, cfg.num_tokens, tokenizer, None, generator))
        self.gate = nn.Linear(embeddings.weight.shape[1], 2)

    def forward(self, input_embeds, attention_mask):
        probs = torch.softmax(self.gate(masked_mean(input_embeds, attention_mask)), -1)
        self.routing = Routing(probs.detach(), torch.ones_like(probs), probs.detach())
        experts = torch.stack([self.prompt_tokens, self.prompt_tokens.flip(0)])
        return torch.einsum("bn,nth->bth", probs, experts)


@dataclass
class NormConfig(MethodConfig):
    pass


class NormTuning(WeightAdapter):
    """Trains the RMSNorm weights of the base model in place (nothing else)."""

    def __init__(self, cfg, lm):
        super().__init__(lm)
        for name, p in lm.named_parameters():
            if name.endswith("norm.weight"):
                p.requires_grad_(True)


H, LAYERS = 64, 2  # the tiny shape
SPECS = [
    MethodSpec(
        "two_way",
        TwoWayConfig,
        TwoWayPrompt,
        num_params=lambda c, m: c.num_tokens * m.hidden_size + 2 * m.hidden_size + 2,
    ),
    MethodSpec(
        "norm_tuning", NormConfig, NormTuning, num_params=lambda c, m: (2 * m.num_hidden_layers + 1) * m.hidden_size
    ),
]
LR = {"two_way": 0.3, "norm_tuning": 1e-3}


@pytest.fixture
def registered():
    for spec in SPECS:
        register(spec)
    yield
    for spec in SPECS:
        REGISTRY.pop(spec.name)


@pytest.fixture
def data(tmp_path):
    rows = [
        {"context": f"The {a} is {b}.", "question": f"What is the {a}?", "answers": [b]}
        for a, b in [("sun", "red"), ("sky", "blue"), ("ox", "big"), ("sea", "wet")] * 3
    ]
    for name, part in (("train.jsonl", rows), ("eval.jsonl", rows[:2])):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return tmp_path


def overrides(data, out, method):
    return [
        "model=shape:tiny",
        "dtype=fp32",
        f"method={method}",
        f"output_dir={out}",
        f"data.train=['{data / 'train.jsonl'}']",
        f"data.eval=['{data / 'eval.jsonl'}']",
        "data.valid_examples=2",
        "data.max_eval_examples=2",
        "train.steps=2",
        "train.batch_size=2",
        "train.save_every=2",
        f"train.lr={LR[method]}",
        "eval.batch_size=2",
        "eval.max_new_tokens={qa: 3}",
    ]


@pytest.mark.parametrize("method", [s.name for s in SPECS])
def test_a_method_defined_in_a_test_runs_through_every_recipe(registered, method, data, tmp_path, capsys):
    spec = REGISTRY[method]
    tiny_config = load_shape("tiny", tokenizer=False)[0].config
    n = spec.num_params(spec.config_cls(), tiny_config)
    assert count_trainable(method, {}, tiny_config) == n
    assert cli_main(["params", "--model", "shape:tiny", "--method", method]) == 0
    assert capsys.readouterr().out.strip() == str(n)

    cfg = load_config(None, overrides(data, tmp_path / "run", method))
    summary = train(cfg, log=lambda *a: None)
    best = Path(summary["output_dir"]) / "best"
    assert summary["steps"] == 2 and summary["num_trainable"] == n
    assert json.loads((best / "adapter_config.json").read_text())["method"] == method

    base, tok = load_shape("tiny")
    loaded = AdaptedModel.from_pretrained(best, base, tok).eval()
    assert loaded.num_trainable() == n and loaded.spec.changes == spec.changes
    ids = torch.tensor([tok("What is the sun?")["input_ids"]])
    fresh = AdaptedModel(load_shape("tiny")[0], method, {}, tok).eval()
    with torch.no_grad():  # training moved the adapter: the loaded one differs from a fresh one
        assert not torch.allclose(
            loaded(ids, torch.ones_like(ids), return_logits=True).logits,
            fresh(ids, torch.ones_like(ids), return_logits=True).logits,
        )

    results = evaluate(cfg, str(best), str(tmp_path / "eval"), log=lambda *a: None, progress=False)
    assert results["method"] == method and results["num_trainable"] == n
    assert {"f1", "em"} <= results["average"].keys()
    assert ("router" in results) == (spec.changes == "prompt")  # the routing record reached the monitor

    gen = [
        "generate",
        "--model",
        "shape:tiny",
        "--dtype",
        "fp32",
        "--adapter",
        str(best),
        "--question",
        "What is the sun?",
        "--context",
        "The sun is red.",
        "--max-new-tokens",
        "3",
    ]
    assert cli_main(gen) == 0
    answer = capsys.readouterr().out.strip()
    expected = loaded.generate(
        *_prompt_ids(tok, "What is the sun?", "The sun is red."),
        max_new_tokens=3,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    assert answer == tok.decode(expected[0], skip_special_tokens=True).strip().split("\n")[0].strip()


def _prompt_ids(tok, question, context):
    from ptmoe.data.format import build_prompt_text

    ids = torch.tensor(
        [
            tok(
                build_prompt_text({"question": question, "context": context, "task": "qa"}, tok),
                add_special_tokens=not tok.chat_template,
            )["input_ids"]
        ]
    )
    return ids, torch.ones_like(ids)


def test_compare_runs_methods_defined_in_a_test(registered, data, tmp_path, capsys):
    root = tmp_path / "cmp"
    cfg = {
        "model": "shape:tiny",
        "dtype": "fp32",
        "output_dir": str(root),
        "data": {
            "train": [str(data / "train.jsonl")],
            "eval": [str(data / "eval.jsonl")],
            "valid_examples": 2,
            "max_eval_examples": 2,
        },
        "train": {"steps": 2, "batch_size": 2, "save_every": 2},
        "eval": {"batch_size": 2, "max_new_tokens": {"qa": 3}},
        "baseline": "two_way",
        "methods": [{"name": s.name, "method": s.name, "train": {"lr": LR[s.name]}} for s in SPECS],
    }
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(cfg))
    assert cli_main(["compare", str(tmp_path / "compare.yaml")]) == 0
    table = json.loads((root / "compare.json").read_text())
    assert list(table["rows"]) == ["two_way", "norm_tuning"]
    assert table["rows"]["norm_tuning"]["params"] == (2 * LAYERS + 1) * H
    assert len(table["rows"]["norm_tuning"]["diff_vs_baseline"]) == 3  # the paired bootstrap ran
