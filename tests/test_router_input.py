"""Router inputs: `router_input: hidden:L` reads the frozen model's hidden states after layer L,
pooled by `router_pool`, on every path that routes; tiny random Llama models."""

import json

import pytest
import torch
from safetensors.torch import save_file

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.collate import pad_batch
from ptmoe.data.format import encode
from ptmoe.methods import make_config
from ptmoe.methods.router_input import RouterInput
from ptmoe.persistence import AdapterError
from ptmoe.training.grow_source import STORE_NAME, read_store

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["hello there", "a longer question, right? yes it is", "x", "what is 2+2?"]
HIDDEN = {
    "ptmoe-mean": ("ptmoe", {"num_tokens": 5, "experts": 3, "rank": 3, "init_noise": 0.5, "router_input": "hidden:1"}),
    "ptmoe-last": (
        "ptmoe",
        {"num_tokens": 5, "experts": 3, "rank": 3, "router_input": "hidden:2", "router_pool": "last"},
    ),
    "smop": ("smop", {"num_tokens": 6, "experts": 2, "router_input": "hidden:2"}),
    "ptmoe-tail": (
        "ptmoe",
        {"num_tokens": 5, "experts": 2, "rank": 3, "router_input": "hidden:1", "router_pool": "tail:3"},
    ),
}


def tiny():
    return load_shape("tiny", dtype=torch.float32, seed=0)


def routed(name, seed=1):
    base, tok = tiny()
    method, options = HIDDEN[name]
    model = AdaptedModel(base, method, options, tok, seed=seed).eval()
    with torch.no_grad():  # a router that splits the inputs, and experts that differ
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.5)
        w = model.adapter.router.linear.weight
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(seed)) * 10)
    return model, tok


def test_hidden_input_equals_transformers_hidden_states():
    """The router's input is exactly transformers' own hidden state after layer L, pooled over real tokens."""
    base, tok = tiny()
    b = pad_batch([{"input_ids": tok(t)["input_ids"]} for t in TEXTS], tok.pad_token_id, "left")
    mask = b["attention_mask"]
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        ref = base.model(input_ids=b["input_ids"], attention_mask=mask, position_ids=pos, output_hidden_states=True)
    layer1 = ref.hidden_states[1]
    want_mean = (layer1 * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    want_last = layer1[:, -1]  # left padding: the last position is every row's last real token
    emb = base.get_input_embeddings()(b["input_ids"])
    torch.testing.assert_close(RouterInput(1, "mean")(base, emb, mask), want_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(RouterInput(1, "last")(base, emb, mask), want_last, rtol=1e-5, atol=1e-5)
    tail = [layer1[i, -2:].mean(0) if mask[i].sum() >= 2 else layer1[i, -1] for i in range(len(TEXTS))]
    torch.testing.assert_close(RouterInput(1, "tail:2")(base, emb, mask), torch.stack(tail), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        RouterInput(0, "mean")(base, emb, mask), (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    )


@pytest.mark.parametrize("name", list(HIDDEN))
def test_hidden_router_batched_generation_equals_one_by_one(name):
    model, tok = routed(name)
    rows = [{"input_ids": tok(t)["input_ids"]} for t in TEXTS]
    left = pad_batch(rows, tok.pad_token_id, "left")
    right = pad_batch(rows, tok.pad_token_id, "right")
    out = model.generate(left["input_ids"], left["attention_mask"], max_new_tokens=5, eos_token_id=None)
    batched_probs = model.routing.probs.clone()
    assert torch.equal(out, model.generate(right["input_ids"], right["attention_mask"], max_new_tokens=5))
    assert len(set(batched_probs.argmax(-1).tolist())) > 1  # the router really splits these inputs
    for i, r in enumerate(rows):
        alone = model.generate(torch.tensor([r["input_ids"]]), max_new_tokens=5, eos_token_id=None)
        assert torch.equal(out[i], alone[0]), (i, out[i], alone[0])
        torch.testing.assert_close(model.routing.probs[0], batched_probs[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["ptmoe-mean", "ptmoe-last", "ptmoe-tail"])
def test_a_training_row_routes_as_at_inference(name):
    """The router reads the prompt alone: a training row (answer appended, labels on it, right-padded among
    longer rows) and the same example encoded for inference (left-padded) get the same router input."""
    model, tok = routed(name)
    examples = [
        {
            "context": "The Eiffel Tower is a wrought-iron tower in Paris.",
            "question": "Where is it?",
            "answers": ["Paris"],
        },
        {"context": "Ten apples fell.", "question": "How many apples fell from the old tree?", "answers": ["Ten"]},
    ]
    train = encode(examples, tok, train=True)
    with torch.no_grad():
        model(train["input_ids"], train["attention_mask"], labels=train["labels"])
    trained = model.routing.probs.clone()
    for i, ex in enumerate(examples):
        q = encode([{k: v for k, v in ex.items() if k != "answers"}], tok)
        model.generate(q["input_ids"], q["attention_mask"], max_new_tokens=1)
        torch.testing.assert_close(model.routing.probs[0], trained[i], rtol=1e-4, atol=1e-5)
    # another answer changes nothing the router reads
    other = encode([dict(examples[0], answers=["in France, in the city of Paris"])], tok, train=True)
    with torch.no_grad():
        model(other["input_ids"], other["attention_mask"], labels=other["labels"])
    torch.testing.assert_close(model.routing.probs[0], trained[0], rtol=1e-4, atol=1e-5)


def test_hidden_router_trains_the_router_and_never_the_base():
    model, tok = routed("ptmoe-mean")
    model.train()
    b = encode([{"context": "A b c.", "question": "What?", "answers": ["b"]}] * 2, tok, train=True)
    model(b["input_ids"], b["attention_mask"], labels=b["labels"]).loss.backward()
    assert model.adapter.router.linear.weight.grad is not None
    assert all(p.grad is None for p in model.lm.parameters())


def test_save_and_load_keep_the_router_input(tmp_path):
    model, tok = routed("ptmoe-last")
    model.save_pretrained(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())["config"]
    assert (saved["router_input"], saved["router_pool"]) == ("hidden:2", "last")
    loaded = AdaptedModel.from_pretrained(tmp_path / "a", tiny()[0], tok).eval()
    ids = torch.tensor([tok(TEXTS[1])["input_ids"]])
    assert torch.equal(model.generate(ids, max_new_tokens=4), loaded.generate(ids, max_new_tokens=4))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"router_input": "hidden:x"}, "option 'router_input' must be 'embeddings' or 'hidden:L'"),
        ({"router_input": "layers"}, "option 'router_input' must be 'embeddings' or 'hidden:L'"),
        ({"router_pool": "max"}, "option 'router_pool' must be one of"),
        ({"router_pool": "tail:0"}, "option 'router_pool' must be one of"),
    ],
)
def test_bad_router_input_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message) as e:
        make_config("ptmoe", options)
    assert "\n" not in str(e.value)


def test_a_layer_the_model_lacks_is_refused_before_training():
    base, tok = tiny()  # 2 decoder layers
    with pytest.raises(ValueError, match="hidden:3: the base model has 2 decoder layers"):
        AdaptedModel(base, "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2, "router_input": "hidden:3"}, tok)


def test_a_replay_store_of_another_input_kind_is_refused(tmp_path):
    tensors = {
        "inputs": torch.zeros(3, 64),
        "experts": torch.zeros(3, dtype=torch.long),
        "tasks": torch.zeros(3, dtype=torch.long),
    }
    save_file(tensors, str(tmp_path / STORE_NAME), metadata={"tasks": json.dumps(["squad/train"])})  # the paper's input
    assert read_store(tmp_path, "embeddings/mean")["names"] == ["squad/train"]
    with pytest.raises(AdapterError) as e:
        read_store(tmp_path, "hidden:2/mean")
    msg = str(e.value)
    assert STORE_NAME in msg and "'embeddings/mean'" in msg and "'hidden:2/mean'" in msg and "\n" not in msg


def test_the_router_pass_runs_once_at_prefill_and_never_while_decoding():
    model, tok = routed("ptmoe-last")
    calls = []
    layer = model.lm.model.layers[0]
    handle = layer.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[1]))
    ids = torch.tensor([tok(TEXTS[1])["input_ids"]])
    model.generate(ids, max_new_tokens=6, eos_token_id=None)
    handle.remove()
    # layer 1 runs: the router pass and the prefill over the prompt, then one token per decode step
    n = ids.shape[1]
    assert calls == [n, n + model.adapter.num_tokens] + [1] * 5


@pytest.mark.integration
def test_the_packaged_demo_config_resolves_its_routed_options():
    """The demo's supervised router (one expert per source, experts left at the default) resolves before any
    model loads: a config error there used to surface only after the base model's evaluation."""
    from ptmoe.config.loading import load_config
    from ptmoe.config.presets import apply_preset, resolve_method_options
    from ptmoe.data import prepare
    from ptmoe.recipes.demo import DEMO_CONFIG

    cfg = load_config(DEMO_CONFIG, [])
    assert prepare(sorted({s.split("/")[0] for s in cfg["data"]["train"]}), log=lambda *a: None).missing == {}
    opts = resolve_method_options(apply_preset(cfg))
    assert opts["router_input"] == "hidden:2" and opts["source_supervision"] > 0
    assert [s.split("/")[0] for s in opts["sources"]] == ["disflqa", "boolq"]
