"""ATTEMPT and HydraLoRA on tiny random Llama models."""

import json

import pytest
import torch
from safetensors.torch import save_file

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import count_trainable, load_shape
from ptmoe.methods import get_method, make_config
from ptmoe.methods.hydralora import HydraLoRALinear


@pytest.fixture
def tiny():
    return load_shape("tiny")


def batch(tok, texts=("hello there", "a longer question, right?", "x")):
    tok.padding_side = "left"
    enc = tok(list(texts), return_tensors="pt", padding=True)
    labels = torch.full_like(enc["input_ids"], -100)  # the answer: the last token (left padding: always real)
    labels[:, -1] = enc["input_ids"][:, -1]
    return enc["input_ids"], enc["attention_mask"], labels


def save_pt(tmp_path, name, method="pt", seed=0):
    base, tok = load_shape("tiny")
    return AdaptedModel(base, method, {"num_tokens": 8}, tok, seed=seed).save_pretrained(tmp_path / name)


@pytest.mark.parametrize(
    "method, options",
    [
        ("attempt", {"num_random_sources": 1}),
        ("attempt", {"attn_dim": 3, "attn_bias": True, "num_random_sources": 2}),
        ("hydralora", {}),
        ("hydralora", {"r": 2, "heads": 3, "target_modules": ["q_proj", "k_proj", "down_proj"]}),
    ],
)
def test_param_counts_match_formulas(tiny, method, options):
    base, tok = tiny
    formula = get_method(method).num_params(make_config(method, options), base.config)
    assert count_trainable(method, options, base.config) == formula
    assert AdaptedModel(base, method, options, tok).num_trainable() == formula


def test_attempt_weights_sum_to_one_and_gradients_reach_only_target_and_attention(tiny):
    base, tok = tiny
    model = AdaptedModel(base, "attempt", {"num_tokens": 8, "num_random_sources": 3, "attn_dim": 2}, tok)
    ids, mask, labels = batch(tok)
    out = model(ids, mask, labels)
    out.loss.backward()
    probs = out.routing.probs
    assert probs.shape == (3, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        f"adapters.default.{n}" for n in ("target", "down.weight", "up.weight", "norm.weight", "norm.bias")
    }
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    sources = model.prompt_module.sources
    assert sources.shape == (3, 8, 64) and not sources.requires_grad
    assert "sources" in model.prompt_module.state_dict()


def test_attempt_loads_pt_sources_and_is_self_contained(tiny, tmp_path):
    base, tok = tiny
    paths = [str(save_pt(tmp_path, f"src{i}", seed=i)) for i in range(2)]
    model = AdaptedModel(base, "attempt", {"num_tokens": 8, "source_prompts": paths}, tok)
    from safetensors.torch import load_file

    for i, p in enumerate(paths):
        torch.testing.assert_close(
            model.prompt_module.sources[i], load_file(f"{p}/adapter_model.safetensors")["prompt"]
        )
    out = model.save_pretrained(tmp_path / "attempt")
    for p in paths:  # the adapter carries its source prompts: the source folders are not needed any more
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            (tmp_path / p / f).unlink()
    loaded = AdaptedModel.from_pretrained(out, load_shape("tiny")[0], tok)
    assert loaded.config.source_prompts == paths
    torch.testing.assert_close(loaded.prompt_module.sources, model.prompt_module.sources)


def test_attempt_rejects_wrong_sources(tiny, tmp_path):
    base, tok = tiny
    dpt = save_pt(tmp_path, "dpt", method="dpt")
    with pytest.raises(ValueError, match=r"dpt/adapter_config.json: method is 'dpt', expected 'pt'"):
        AdaptedModel(base, "attempt", {"num_tokens": 8, "source_prompts": [str(dpt)]}, tok)
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "adapter_config.json").write_text(json.dumps({"method": "pt", "base_model": {"hidden_size": 32}}))
    save_file({"prompt": torch.zeros(8, 32)}, str(wide / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match=r"wide/adapter_model.safetensors: hidden size 32, this model has 64"):
        AdaptedModel(base, "attempt", {"num_tokens": 8, "source_prompts": [str(wide)]}, tok)
    with pytest.raises(ValueError, match="not found"):
        AdaptedModel(base, "attempt", {"num_tokens": 8, "source_prompts": [str(tmp_path / "nope")]}, tok)


def test_hydralora_router_mixes_heads():
    torch.manual_seed(0)
    layer = HydraLoRALinear(torch.nn.Linear(16, 12), r=2, heads=3, alpha=4.0)
    with torch.no_grad():
        layer.lora_B.normal_()  # distinct heads
        layer.router.weight.normal_()
    x = torch.randn(2, 5, 16)
    g = torch.softmax(x @ layer.router.weight.T, -1)  # per-token head weights
    heads = torch.stack([x @ layer.lora_A.T @ layer.lora_B[k].T for k in range(3)], -2)  # [2, 5, K, out]
    expected = layer.base_layer(x) + 2.0 * (g.unsqueeze(-1) * heads).sum(-2)
    torch.testing.assert_close(layer(x), expected)
    with torch.no_grad():
        layer.router.weight.zero_()  # uniform router: the mean of the heads
    torch.testing.assert_close(layer(x), layer.base_layer(x) + 2.0 * heads.mean(-2))


def test_single_head_hydralora_equals_peft_lora(tiny):
    base, tok = tiny
    ids, mask, _ = batch(tok)
    lora = AdaptedModel(base, "lora", {"r": 2, "alpha": 4.0})
    hydra = AdaptedModel(load_shape("tiny")[0], "hydralora", {"r": 2, "heads": 1, "alpha": 4.0})
    torch.manual_seed(1)
    wrapped = {n: m for n, m in hydra.lm.named_modules() if isinstance(m, HydraLoRALinear)}
    assert len(wrapped) == 4  # q_proj, v_proj in 2 layers
    with torch.no_grad():
        for name, m in wrapped.items():
            peft_layer = lora.lm.get_submodule(name)
            peft_layer.lora_B["default"].weight.normal_()
            m.lora_A.copy_(peft_layer.lora_A["default"].weight)
            m.lora_B[0].copy_(peft_layer.lora_B["default"].weight)
            m.router.weight.normal_()  # ignored: softmax over one head is 1
    a = lora(ids, mask, return_logits=True).logits
    b = hydra(ids, mask, return_logits=True).logits
    assert not torch.allclose(a, AdaptedModel(load_shape("tiny")[0], "lora")(ids, mask).logits)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "method, options", [("attempt", {"num_tokens": 8, "num_random_sources": 2}), ("hydralora", {})]
)
def test_save_and_load_give_identical_outputs(tiny, tmp_path, method, options):
    base, tok = tiny
    model = AdaptedModel(base, method, options, tok, seed=3)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.1)  # as if trained (HydraLoRA's B starts at zero)
    ids, mask, _ = batch(tok)
    out = model.save_pretrained(tmp_path / method)
    loaded = AdaptedModel.from_pretrained(out, load_shape("tiny")[0], tok)
    assert loaded.num_trainable() == model.num_trainable()
    torch.testing.assert_close(loaded(ids, mask).logits, model(ids, mask).logits)


def test_attempt_batched_left_padded_generate_equals_one_by_one(tiny):
    base, tok = tiny
    model = AdaptedModel(base, "attempt", {"num_tokens": 8, "num_random_sources": 2}, tok)
    texts = ("hello there", "a longer question, right?", "x")
    ids, mask, _ = batch(tok, texts)
    together = model.generate(ids, mask, max_new_tokens=6)
    for i, t in enumerate(texts):
        alone = model.generate(tok([t], return_tensors="pt")["input_ids"], max_new_tokens=6)
        assert torch.equal(alone[0], together[i]), t
