"""Core library on tiny random Llama models: parameter counts, routing, noise, gradients,
SVD initialisation, padding and batched generation, adapters (save / load / mismatch / corrupt files),
gradient checkpointing, bf16 bases, mixed adapters in one batch."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import SHAPES, count_trainable, load_base_config, load_shape
from ptmoe.cli import main as cli_main
from ptmoe.collate import pad_batch
from ptmoe.methods import get_method, make_config
from ptmoe.methods.base import svd_factors
from ptmoe.persistence import AdapterError

pytestmark = pytest.mark.usefixtures("one_thread")


TEXTS = ["hello there", "a longer question, right? yes it is", "x", "what is 2+2?", "tiny"]

# small options per method (tiny model: H = 64)
OPTS = {
    "pt": {"num_tokens": 5},
    "dpt": {"num_tokens": 5, "rank": 3},
    "smop": {"num_tokens": 6, "experts": 2},
    "ptmoe": {"num_tokens": 5, "experts": 3, "rank": 3, "init_noise": 0.5},
    "attempt": {"num_tokens": 5, "num_random_sources": 2},
    "lora": {"r": 2},
    "hydralora": {"r": 1, "heads": 2},
    "ft": {},
}
PROMPT_METHODS = ["pt", "dpt", "smop", "ptmoe", "attempt"]
ALL_METHODS = list(OPTS)


def tiny(seed=0, dtype=torch.float32):
    return load_shape("tiny", dtype=dtype, seed=seed)


def encode(tok, texts=TEXTS):
    return [{"input_ids": tok(t)["input_ids"]} for t in texts]


def batch(tok, texts=TEXTS, side="left"):
    """ids, mask, labels. Labels: every real token but the first, as in real data where the question
    part is -100 (the first real token has no real predecessor: under left padding that is a pad)."""
    rows = [dict(r, labels=[-100] + r["input_ids"][1:]) for r in encode(tok, texts)]
    b = pad_batch(rows, tok.pad_token_id, side)
    return b["input_ids"], b["attention_mask"], b["labels"]


def perturb(model, scale=0.05, seed=0):
    """Move the trainable parameters away from their init (LoRA B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * scale)
    return model


def last_logits(model, ids, mask, adapter_names=None):
    """Prefill logits of the last position (left padding: the last real token)."""
    x, m, pos, _ = model.build_inputs(ids, mask, adapter_names=adapter_names)
    return model.lm(inputs_embeds=x, attention_mask=m, position_ids=pos).logits[:, -1]


# ---- parameter counts --------------------------------------------------------------------------
# hand-computed on Llama-3.2-1B (H 2048, 16 layers, 32 q heads / 8 kv heads of 64, MLP 8192, vocab 128256)
PAPER_COUNTS = {
    ("ptmoe", (("num_tokens", 40), ("experts", 2), ("rank", 36))): 80706,  # 2*40*36 + 36*2048 + 2*2048 + 2
    ("pt", (("num_tokens", 40),)): 81920,
    ("smop", (("num_tokens", 40), ("experts", 2))): 86016,  # 40*2048 + 2*2048, bias-free router
    ("dpt", (("num_tokens", 40), ("rank", 36))): 75168,  # 40*36 + 36*2048
    ("attempt", (("num_tokens", 40),)): 90112,  # 81920 + 2*2048*1 + 2*2048
    ("lora", (("r", 1),)): 106496,  # 16 * ((2048+2048) + (2048+512))
    ("hydralora", (("r", 1), ("heads", 2))): 278528,
    ("ft", ()): 1235814400,
}


@pytest.mark.parametrize("key", list(PAPER_COUNTS), ids=[k[0] for k in PAPER_COUNTS])
def test_param_counts_llama_1b(key):
    method, opts = key[0], dict(key[1])
    config = load_base_config("shape:llama-3.2-1b")
    n = count_trainable(method, opts, config)
    assert n == PAPER_COUNTS[key]
    spec = get_method(method)
    if spec.num_params is not None:
        assert spec.num_params(make_config(method, opts), config) == n


def ft_formula(c):
    H, L, I, V = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size
    hd = H // c.num_attention_heads
    q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
    return V * H + L * (H * q + 2 * H * kv + q * H + 3 * H * I + 2 * H) + H  # tied head


@pytest.mark.parametrize("method", ALL_METHODS)
def test_param_counts_tiny_real_modules(method):
    """count_trainable (stand-in / meta modules) == formula == the real module on the tiny model."""
    base, tok = tiny()
    opts = OPTS[method]
    spec = get_method(method)
    formula = spec.num_params(make_config(method, opts), base.config) if spec.num_params else ft_formula(base.config)
    assert count_trainable(method, opts, base.config) == formula
    model = AdaptedModel(base, method, opts, tok)
    assert model.num_trainable() == formula


def test_cli_params_prints_the_issue_numbers(capsys):
    cases = [
        (["--method", "ptmoe", "--prompt-length", "40", "--experts", "2", "--rank", "36"], 80706),
        (["--method", "pt", "--prompt-length", "40"], 81920),
        (["--method", "smop", "--prompt-length", "40", "--experts", "2"], 86016),
    ]
    for args, want in cases:
        assert cli_main(["params", "--model", "shape:llama-3.2-1b", *args]) == 0
        assert capsys.readouterr().out.strip() == str(want)


# ---- routing ---------------------------------------------------------------------------------------
def routed_model(method="ptmoe", **opts):
    base, tok = tiny()
    o = (
        {"num_tokens": 4, "experts": 3, "rank": 4, "noise": "none"}
        if method == "ptmoe"
        else {"num_tokens": 6, "experts": 3, "noise": "none"}
    )
    o.update(opts)
    model = AdaptedModel(base, method, o, tok).eval()
    pm = model.prompt_module
    with torch.no_grad():  # distinct experts and a router that spreads the examples
        if method == "ptmoe":
            pm.A.normal_(generator=torch.Generator().manual_seed(1))
        pm.router.linear.weight.mul_(40)
    return model, tok


def reference_probs(model, ids, mask):
    """softmax(W x + b), x the mean of the input token embeddings over real tokens, computed by hand."""
    emb = model.lm.get_input_embeddings()(ids).float()
    m = mask.float()[..., None]
    x = (emb * m).sum(1) / m.sum(1)
    lin = model.prompt_module.router.linear
    return torch.softmax(x @ lin.weight.T + (lin.bias if lin.bias is not None else 0), -1)


def experts_of(model):
    pm = model.prompt_module
    if model.method == "ptmoe":
        return torch.stack([pm.A[i] @ pm.B for i in range(pm.A.shape[0])])  # [N, T, H]
    return pm.prompts  # smop: [N, T/N, H]


@pytest.mark.parametrize("method", ["ptmoe", "smop"])
def test_top1_routing_one_expert_scaled_by_its_probability(method):
    model, tok = routed_model(method)
    ids, mask, _ = batch(tok)
    with torch.no_grad():
        x, _, _, _ = model.build_inputs(ids, mask)
        T = model.prompt_module.num_tokens
        prompt = x[:, :T]
        info = model.routing
        probs, sel = info.probs, info.selected
        torch.testing.assert_close(probs, reference_probs(model, ids, mask))
        assert torch.equal(sel.sum(-1), torch.ones(len(TEXTS)))  # exactly one expert per example
        chosen = probs.argmax(-1)
        assert torch.equal(sel.argmax(-1), chosen)
        assert len(set(chosen.tolist())) >= 2  # the test is not vacuous: different examples, different experts
        E = experts_of(model)
        for b in range(len(TEXTS)):
            i = int(chosen[b])
            torch.testing.assert_close(prompt[b], probs[b, i] * E[i], rtol=1e-5, atol=1e-6)


def test_non_selective_mixes_all_experts_with_probabilities():
    model, tok = routed_model("ptmoe", top_k=3)
    ids, mask, _ = batch(tok)
    with torch.no_grad():
        call = model.prompt_module.prompt_call(model.lm.get_input_embeddings()(ids), mask)
        prompt, info = call.prompt, call.routing
        assert torch.equal(info.selected, torch.ones_like(info.selected))
        expected = torch.einsum("bn,nth->bth", info.probs, experts_of(model))
        torch.testing.assert_close(prompt, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("top_k", [1, 3])
def test_non_probationary_uniform_weight_on_the_selection(top_k):
    model, tok = routed_model("ptmoe", top_k=top_k, weighting="uniform")
    ids, mask, _ = batch(tok)
    with torch.no_grad():
        call = model.prompt_module.prompt_call(model.lm.get_input_embeddings()(ids), mask)
        prompt, probs = call.prompt, call.routing.probs
        E = experts_of(model)
        for b in range(len(TEXTS)):
            if top_k == 1:  # the chosen expert with weight exactly 1, not its probability
                expected = E[int(probs[b].argmax())]
            else:  # all experts, equal weights
                expected = E.mean(0)
            torch.testing.assert_close(prompt[b], expected, rtol=1e-5, atol=1e-6)


def test_normalized_weighting_top2_sums_to_one():
    model, tok = routed_model("ptmoe", top_k=2, weighting="normalized")
    ids, mask, _ = batch(tok)
    with torch.no_grad():
        info = model.prompt_module.prompt_call(model.lm.get_input_embeddings()(ids), mask).routing
        assert torch.equal(info.selected.sum(-1), torch.full((len(TEXTS),), 2.0))
        torch.testing.assert_close(info.weights.sum(-1), torch.ones(len(TEXTS)))


@pytest.mark.parametrize("method", ["ptmoe", "smop"])
def test_noise_only_in_training(method):
    model, tok = routed_model(method, noise="multiplicative", noise_std=0.5, top_k=3 if method == "ptmoe" else 1)
    ids, mask, _ = batch(tok)
    emb = model.lm.get_input_embeddings()(ids)
    pm = model.prompt_module

    def call(emb, mask):
        out = pm.prompt_call(emb, mask)
        return out.prompt, out.routing.probs

    with torch.no_grad():
        model.eval()
        (a, pa), (b, _) = call(emb, mask), call(emb, mask)
        assert torch.equal(a, b)  # eval: deterministic
        torch.testing.assert_close(pa, reference_probs(model, ids, mask))  # and noise-free
        model.train()
        (c, pc), (d, pd) = call(emb, mask), call(emb, mask)
        assert not torch.allclose(pc, pd) and not torch.allclose(pc, pa)  # training: noisy
        assert not torch.allclose(c, d)
        pm.router.noise = "none"  # noise off: training is deterministic again
        assert torch.equal(call(emb, mask)[0], call(emb, mask)[0])


def test_standardized_router_input_separates_inputs_with_a_shared_component():
    """Pooled embeddings of real inputs share one large component: a raw router gives them all the
    same expert, a router on standardised inputs spreads them (the default preset's fix)."""
    from ptmoe.methods.router import Router

    g = torch.Generator().manual_seed(0)
    x = 3.0 + 0.05 * torch.randn(256, 64, generator=g)  # common component >> per-input deviation
    raw, std = Router(64, 2, noise="none"), Router(64, 2, noise="none", input_norm="standardize")
    std.linear.load_state_dict(raw.linear.state_dict())
    std.linear.bias.data.fill_(0.0)
    raw.linear.bias.data.fill_(0.0)
    for i in range(0, 256, 8):  # training forwards gather the statistics
        std.train()(x[i : i + 8])
    torch.testing.assert_close(std.input_mean, x.mean(0))
    torch.testing.assert_close(std.input_var, x.var(0, unbiased=False))
    assert int(std.input_count) == 256
    raw.eval(), std.eval()
    share_raw = raw(x)[1].selected.mean(0)
    share_std = std(x)[1].selected.mean(0)
    assert share_raw.max() == 1.0  # all on one expert
    assert 0.25 < share_std.min() <= share_std.max() < 0.75
    before = std.input_mean.clone()
    std(x + 1.0)  # evaluation never moves the statistics
    assert torch.equal(std.input_mean, before)
    with pytest.raises(ValueError, match="input_norm"):
        Router(64, 2, input_norm="batch")


def test_standardized_router_statistics_are_saved_with_the_adapter(tmp_path):
    base, tok = tiny()
    opts = {**OPTS["ptmoe"], "router_input_norm": "standardize"}
    model = perturb(AdaptedModel(base, "ptmoe", opts, tok, seed=3), seed=1)
    ids, mask, _ = batch(tok)
    model.train()
    with torch.no_grad():
        model(ids, mask, return_logits=True)  # updates the running statistics
        model.eval()
        ref = model(ids, mask, return_logits=True).logits
    assert int(model.prompt_module.router.input_count) == len(TEXTS)
    assert "router.input_mean" in model.adapter_state_dict()
    loaded = AdaptedModel.from_pretrained(model.save_pretrained(tmp_path / "a"), tiny()[0], tok).eval()
    torch.testing.assert_close(loaded.prompt_module.router.input_var, model.prompt_module.router.input_var)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, return_logits=True).logits, ref, rtol=0, atol=1e-6)
    assert loaded.num_trainable() == model.num_trainable()  # statistics are not trained parameters


def test_gradients_reach_router_experts_and_shared_B_only():
    model, tok = routed_model("ptmoe")
    model.train()
    ids, mask, labels = batch(tok)
    model(ids, mask, labels).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"adapters.default.{n}" for n in ("A", "B", "router.linear.weight", "router.linear.bias")}
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    for p in model.lm.parameters():
        assert not p.requires_grad
    # top-1: expert i's A_i gets a gradient iff some example with label tokens was routed to it
    has_labels = (labels != -100).any(1)
    used = set(model.routing.selected.argmax(-1)[has_labels].tolist())
    assert not has_labels.all() or len(used) >= 2
    for i in range(3):
        assert (model.prompt_module.A.grad[i].abs().sum() > 0) == (i in used), i


# ---- SVD initialisation --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ptmoe", "dpt"])
def test_svd_init_at_full_rank_reproduces_init_embeddings(method):
    base, tok = tiny()
    text = "abcdef"
    T = len(tok(text, add_special_tokens=False)["input_ids"])
    opts = {"num_tokens": T, "rank": T, "init_text": text}
    if method == "ptmoe":
        opts["experts"] = 2
    model = AdaptedModel(base, method, opts, tok)
    E = base.get_input_embeddings()(torch.tensor(tok(text, add_special_tokens=False)["input_ids"])).detach()
    pm = model.prompt_module
    As = pm.A if method == "ptmoe" else pm.A[None]
    for A in As:
        torch.testing.assert_close(A @ pm.B, E, rtol=1e-4, atol=1e-5)
    # and the factors alone: a lower rank is the best rank-R approximation (Eckart-Young)
    A, B = svd_factors(E, 2)
    S = torch.linalg.svdvals(E)
    torch.testing.assert_close(torch.linalg.matrix_norm(E - A @ B), S[2:].norm(), rtol=1e-4, atol=1e-5)


# ---- padding and generation --------------------------------------------------------------------------
@pytest.mark.parametrize("method", PROMPT_METHODS)
def test_batched_left_padded_generation_equals_one_by_one(method):
    base, tok = tiny()
    model = perturb(AdaptedModel(base, method, OPTS[method], tok, seed=1)).eval()
    rows = encode(tok)
    left = pad_batch(rows, tok.pad_token_id, "left")
    right = pad_batch(rows, tok.pad_token_id, "right")
    n = 6
    out_left = model.generate(left["input_ids"], left["attention_mask"], max_new_tokens=n, eos_token_id=None)
    out_right = model.generate(right["input_ids"], right["attention_mask"], max_new_tokens=n, eos_token_id=None)
    assert out_left.shape == (len(rows), n)
    assert torch.equal(out_left, out_right)  # right padding is left-aligned inside generate
    with torch.no_grad():
        batched_logits = last_logits(model, left["input_ids"], left["attention_mask"])
    for i, r in enumerate(rows):
        ids = torch.tensor([r["input_ids"]])
        alone = model.generate(ids, max_new_tokens=n, eos_token_id=None)
        assert torch.equal(out_left[i], alone[0]), (i, out_left[i], alone[0])
        with torch.no_grad():
            torch.testing.assert_close(
                batched_logits[i], last_logits(model, ids, torch.ones_like(ids))[0], rtol=1e-4, atol=1e-5
            )


def test_generate_pads_after_eos():
    base, tok = tiny()
    model = AdaptedModel(base, "pt", OPTS["pt"], tok).eval()
    ids, mask, _ = batch(tok)
    free = model.generate(ids, mask, max_new_tokens=5, eos_token_id=None)
    eos = int(free[0, 0])  # make row 0's first token the EOS
    out = model.generate(ids, mask, max_new_tokens=5, eos_token_id=eos, pad_token_id=0)
    assert out[0, 0] == eos and (out[0, 1:] == 0).all()
    for i in range(1, len(TEXTS)):  # other rows run on until their own EOS
        hit = (free[i] == eos).nonzero()
        k = int(hit[0]) + 1 if len(hit) else free.shape[1]
        assert torch.equal(out[i, :k], free[i, :k])


@pytest.mark.parametrize("method", PROMPT_METHODS + ["lora", "hydralora"])
def test_left_and_right_padding_give_the_same_loss_and_logits(method):
    base, tok = tiny()
    model = perturb(AdaptedModel(base, method, OPTS[method], tok, seed=1)).eval()  # eval: no router noise
    il, ml, ll = batch(tok, side="left")
    ir, mr, lr = batch(tok, side="right")
    with torch.no_grad():
        fast_l, fast_r = model(il, ml, ll).loss, model(ir, mr, lr).loss
        plain_l = model(il, ml, ll, return_logits=True)
        plain_r = model(ir, mr, lr, return_logits=True)
    torch.testing.assert_close(fast_l, fast_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain_l.loss, plain_r.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_l, plain_l.loss, rtol=1e-5, atol=1e-6)  # fast path == plain path
    # logits of each real token agree under both paddings
    T = plain_l.logits.shape[1] - il.shape[1]
    for b in range(len(TEXTS)):
        a = plain_l.logits[b, T:][ml[b].bool()]
        c = plain_r.logits[b, T:][mr[b].bool()]
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def test_training_loss_and_gradients_equal_under_both_paddings():
    base, tok = tiny()
    model = AdaptedModel(base, "ptmoe", {**OPTS["ptmoe"], "noise": "none"}, tok).train()
    grads = []
    for side in ("left", "right"):
        ids, mask, labels = batch(tok, side=side)
        model.zero_grad()
        loss = model(ids, mask, labels).loss
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.trainable_parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---- adapters ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ALL_METHODS)
def test_save_then_load_gives_identical_outputs(method, tmp_path):
    base, tok = tiny()
    model = perturb(AdaptedModel(base, method, OPTS[method], tok, seed=3), seed=1).eval()
    ids, mask, _ = batch(tok)
    with torch.no_grad():
        ref = model(ids, mask, return_logits=True).logits
    ref_gen = model.generate(ids, mask, max_new_tokens=4, eos_token_id=None)
    path = model.save_pretrained(tmp_path / "adapter")
    meta = json.loads((path / "adapter_config.json").read_text())
    assert meta["method"] == method and meta["num_trainable"] == model.num_trainable()
    assert meta["base_model"]["hidden_size"] == 64 and meta["base_model"]["vocab_size"] == 320
    assert (path / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]

    fresh, _ = tiny()  # the same base model, untouched
    loaded = AdaptedModel.from_pretrained(path, fresh, tok).eval()
    with torch.no_grad():
        out = loaded(ids, mask, return_logits=True).logits
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert torch.equal(loaded.generate(ids, mask, max_new_tokens=4, eos_token_id=None), ref_gen)
    assert loaded.num_trainable() == model.num_trainable()
    if model.spec.changes == "prompt":
        for k, v in model.adapter_state_dict().items():
            assert torch.equal(loaded.adapter_state_dict()[k], v), k


def other_hidden_base():
    cfg = LlamaConfig(**{**SHAPES["tiny"], "hidden_size": 32}, max_position_embeddings=512, pad_token_id=0)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("method", ["ptmoe", "lora"])
def test_loading_onto_another_base_model_fails_clearly(method, tmp_path):
    base, tok = tiny()
    path = AdaptedModel(base, method, OPTS[method], tok).save_pretrained(tmp_path / "a")
    saved_fp = json.loads((path / "adapter_config.json").read_text())["base_model"]["embedding_fingerprint"]
    other, _ = tiny(seed=1)  # same shape, different weights
    with pytest.raises(AdapterError, match="fingerprint") as e:
        AdaptedModel.from_pretrained(path, other, tok)
    assert "adapter_config.json" in str(e.value) and saved_fp in str(e.value)
    with pytest.raises(AdapterError, match="hidden 64.*hidden 32") as e:
        AdaptedModel.from_pretrained(path, other_hidden_base(), tok)
    if method == "ptmoe":  # load_adapter checks the base too
        host = AdaptedModel(tiny(seed=1)[0], "pt", OPTS["pt"], tok)
        with pytest.raises(AdapterError, match="fingerprint"):
            host.load_adapter(path, "x")


def test_corrupt_or_missing_adapter_files_name_the_file(tmp_path):
    base, tok = tiny()
    good = AdaptedModel(base, "pt", OPTS["pt"], tok).save_pretrained(tmp_path / "good")
    fresh = lambda: tiny()[0]

    bad_json = tmp_path / "bad_json"
    AdaptedModel(tiny()[0], "pt", OPTS["pt"], tok).save_pretrained(bad_json)
    (bad_json / "adapter_config.json").write_text('{"method": "pt", "config": ')
    with pytest.raises(AdapterError, match=r"adapter_config\.json.*not valid JSON"):
        AdaptedModel.from_pretrained(bad_json, fresh(), tok)

    no_field = tmp_path / "no_field"
    AdaptedModel(tiny()[0], "pt", OPTS["pt"], tok).save_pretrained(no_field)
    meta = json.loads((no_field / "adapter_config.json").read_text())
    del meta["base_model"]
    (no_field / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match=r"adapter_config\.json.*base_model"):
        AdaptedModel.from_pretrained(no_field, fresh(), tok)

    no_weights = tmp_path / "no_weights"
    AdaptedModel(tiny()[0], "pt", OPTS["pt"], tok).save_pretrained(no_weights)
    (no_weights / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match=r"adapter_model\.safetensors.*not found"):
        AdaptedModel.from_pretrained(no_weights, fresh(), tok)

    garbage = tmp_path / "garbage"
    AdaptedModel(tiny()[0], "pt", OPTS["pt"], tok).save_pretrained(garbage)
    (garbage / "adapter_model.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(AdapterError, match=r"adapter_model\.safetensors"):
        AdaptedModel.from_pretrained(garbage, fresh(), tok)

    with pytest.raises(AdapterError, match=r"adapter_config\.json.*not found"):
        AdaptedModel.from_pretrained(tmp_path / "nowhere", fresh(), tok)

    # tensors of the wrong shape (config says 5 tokens, weights of another T)
    wrong = tmp_path / "wrong"
    AdaptedModel(tiny()[0], "pt", {"num_tokens": 7}, tok).save_pretrained(wrong)
    (wrong / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
    with pytest.raises(AdapterError, match=r"adapter_model\.safetensors.*wrong shape"):
        AdaptedModel.from_pretrained(wrong, fresh(), tok)


# ---- training details ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ptmoe", "lora"])
def test_gradient_checkpointing_gives_the_same_gradients(method):
    base, tok = tiny()
    opts = {**OPTS[method], "noise": "none"} if method == "ptmoe" else OPTS[method]
    model = perturb(AdaptedModel(base, method, opts, tok)).train()
    ids, mask, labels = batch(tok, side="right")

    def grads():
        model.zero_grad()
        loss = model(ids, mask, labels).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.trainable_parameters()]

    loss0, g0 = grads()
    model.gradient_checkpointing_enable()
    flag = "is_activation_checkpointing"  # transformers 5.2x; the older name warns there
    assert getattr(model.lm, flag if hasattr(model.lm, flag) else "is_gradient_checkpointing")
    loss1, g1 = grads()
    torch.testing.assert_close(loss0, loss1, rtol=1e-6, atol=1e-6)
    assert len(g0) == len(g1) > 0
    for a, b in zip(g0, g1):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["ptmoe", "pt"])
def test_bf16_base_with_fp32_prompt_parameters(method):
    base, tok = tiny(dtype=torch.bfloat16)
    model = AdaptedModel(base, method, OPTS[method], tok).train()
    assert model.lm.get_input_embeddings().weight.dtype == torch.bfloat16
    params = model.trainable_parameters()
    assert params and all(p.dtype == torch.float32 for p in params)
    ids, mask, labels = batch(tok)
    loss = model(ids, mask, labels).loss
    assert torch.isfinite(loss) and 4.0 < loss.item() < 8.0  # about ln(320) on a random model
    loss.backward()
    opt = torch.optim.AdamW(params, lr=0.1)
    opt.step()
    assert all(
        p.dtype == torch.float32 and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in params
    )
    assert torch.isfinite(model(ids, mask, labels, return_logits=True).loss)
    out = model.generate(ids, mask, max_new_tokens=3, eos_token_id=None)
    assert out.shape == (len(TEXTS), 3)


def test_mixed_adapters_in_one_batch_equal_each_adapter_alone(tmp_path):
    tok = tiny()[1]
    pa = perturb(AdaptedModel(tiny()[0], "pt", {"num_tokens": 4}, tok, seed=1), seed=1).save_pretrained(tmp_path / "a")
    pb = perturb(
        AdaptedModel(tiny()[0], "ptmoe", {**OPTS["ptmoe"], "num_tokens": 7}, tok, seed=2), seed=2
    ).save_pretrained(tmp_path / "b")
    mixed = AdaptedModel.from_pretrained(pa, tiny()[0], tok, adapter_name="a")
    mixed.load_adapter(pb, "b")
    mixed.eval()
    names = ["a", "b", "b", "a", "b"]
    ids, mask, _ = batch(tok)
    out = mixed.generate(ids, mask, max_new_tokens=5, eos_token_id=None, adapter_names=names)
    with torch.no_grad():
        mixed_logits = last_logits(mixed, ids, mask, adapter_names=names)
    alone = {
        "a": AdaptedModel.from_pretrained(pa, tiny()[0], tok).eval(),
        "b": AdaptedModel.from_pretrained(pb, tiny()[0], tok).eval(),
    }
    rows = encode(tok)
    for i, name in enumerate(names):
        x = torch.tensor([rows[i]["input_ids"]])
        assert torch.equal(out[i], alone[name].generate(x, max_new_tokens=5, eos_token_id=None)[0]), (i, name)
        with torch.no_grad():
            torch.testing.assert_close(
                mixed_logits[i], last_logits(alone[name], x, torch.ones_like(x))[0], rtol=1e-4, atol=1e-5
            )
    # a whole batch of one adapter through adapter_names == that adapter as the active one
    assert torch.equal(
        mixed.generate(ids, mask, max_new_tokens=5, eos_token_id=None, adapter_names=["a"] * 5),
        alone["a"].generate(ids, mask, max_new_tokens=5, eos_token_id=None),
    )
    with pytest.raises(ValueError, match="not loaded"):
        mixed.generate(ids, mask, max_new_tokens=2, adapter_names=["a", "zzz", "a", "a", "a"])
    lora = AdaptedModel(tiny()[0], "lora", OPTS["lora"], tok).save_pretrained(tmp_path / "lora")
    with pytest.raises(AdapterError, match="only prompt methods"):
        mixed.load_adapter(lora, "c")
