"""The lm-eval `ptmoe` model on the tiny random model, against independent references: a plain
one-request-at-a-time loop that builds the prompt from the context's embeddings and sums log-probs of
the continuation, and `AdaptedModel.generate` on each unpadded prompt. And the routing rule: the
prompt of a log-likelihood request is routed on its context alone, whatever the continuation."""

import pytest

pytest.importorskip("lm_eval", reason="the lm-eval extra: pip install -e '.[lm-eval]'")
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.interop.lm_eval_model import PtmoeLM

pytestmark = pytest.mark.usefixtures("one_thread")
OPTIONS = {"num_tokens": 4, "experts": 3, "rank": 3, "init_noise": 0.5}
CONTEXTS = ["what is the capital of france?", "who wrote the book about the whale?"]
CONTINUATIONS = [" paris", " the city of light and of many long words", " x"]


@pytest.fixture(scope="module")
def routed():
    base, tok = load_shape("tiny")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger weights than the default init: outputs that depend on the prompt
        for p in base.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2, generator=g)
    model = AdaptedModel(base, "ptmoe", OPTIONS, tok)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a router far from its init, so different inputs route differently
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval(), tok


def ids(tok, text):
    return tok(text)["input_ids"]


@torch.no_grad()
def reference_loglikelihood(model, ctx, cont):
    """One request alone: prompt from the context tokens only, then [prompt, context, continuation]."""
    emb = model.lm.get_input_embeddings()
    c = torch.tensor([ctx])
    prompt = model.prompt_module.soft_prompt(emb(c), torch.ones_like(c))
    whole = torch.tensor([ctx + cont])
    logits = model.lm(inputs_embeds=torch.cat([prompt, emb(whole)], 1)).logits[0].float()
    logp = logits.log_softmax(-1)
    start = prompt.shape[1] + len(ctx) - 1  # position predicting the first continuation token
    rows = logp[start : start + len(cont)]
    target = torch.tensor(cont)
    return float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all())


def test_registered_as_ptmoe():
    assert get_model("ptmoe") is PtmoeLM


def test_loglikelihood_routing_reads_only_the_context(routed):
    model, tok = routed
    lm = PtmoeLM(model=model, tokenizer=tok, batch_size=8)
    requests = [(ctx, cont) for ctx in CONTEXTS for cont in CONTINUATIONS]
    seen = []
    hook = model.prompt_module.register_forward_hook(
        lambda m, args, out: seen.append((out.prompt.detach().clone(), out.routing.probs.detach().clone()))
    )
    try:
        lm.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)])
    finally:
        hook.remove()
    ((prompts, probs),) = seen  # one batch of all six requests, mixed lengths, right-padded
    emb = model.lm.get_input_embeddings()
    alone = []
    for ctx in CONTEXTS:
        c = torch.tensor([ids(tok, ctx)])
        call = model.prompt_module.prompt_call(emb(c), torch.ones_like(c))
        alone.append((call.prompt.detach(), call.routing.probs))
    assert not torch.allclose(alone[0][1], alone[1][1], atol=1e-3)  # the two contexts route differently
    matches = [[i for i, (p, _) in enumerate(alone) if torch.allclose(row, p[0], atol=1e-5)] for row in prompts]
    assert sorted(m for row in matches for m in row) == [0, 0, 0, 1, 1, 1]  # each row: its context's prompt
    for row_probs, m in zip(probs, matches):
        assert torch.allclose(row_probs, alone[m[0]][1][0], atol=1e-5)
    # control: had the router read the continuation, the prompt would differ (so this test can fail)
    leak = torch.tensor([ids(tok, CONTEXTS[0] + CONTINUATIONS[1])])
    assert not torch.allclose(model.prompt_module.soft_prompt(emb(leak), torch.ones_like(leak)), alone[0][0], atol=1e-3)


def test_loglikelihood_and_rolling_match_a_plain_loop(routed):
    model, tok = routed
    lm = PtmoeLM(model=model, tokenizer=tok, batch_size=4)
    requests = [(ctx, cont) for ctx in CONTEXTS for cont in CONTINUATIONS]
    got = lm.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)])
    for (ctx, cont), (lp, greedy) in zip(requests, got):
        ref_lp, ref_greedy = reference_loglikelihood(model, ids(tok, ctx), ids(tok, cont))
        assert lp == pytest.approx(ref_lp, abs=1e-3) and greedy == ref_greedy
    text = "a short document to score"
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    # one window: the prefix token (BOS) is the context, every token of the text the continuation
    assert rolling[0] == pytest.approx(reference_loglikelihood(model, [tok.bos_token_id], ids(tok, text))[0], abs=1e-3)


def test_generate_until_equals_ptmoe_generate_one_by_one(routed):
    model, tok = routed
    lm = PtmoeLM(model=model, tokenizer=tok, batch_size=3)
    prompts = ["hello there, how", "a", "the whale and the sea and the"]
    full = []
    for p in prompts:  # the reference: each prompt alone, unpadded
        x = torch.tensor([ids(tok, p)])
        new = model.generate(
            x, torch.ones_like(x), max_new_tokens=12, eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id
        )
        full.append(tok.decode(new[0], skip_special_tokens=True))
    stop = full[0][4:6]  # a stop sequence that does occur mid-answer
    got = lm.generate_until(
        [Instance("generate_until", {}, (p, {"until": [stop], "max_gen_toks": 12}), i) for i, p in enumerate(prompts)]
    )
    assert got == [text.split(stop)[0] for text in full]
    assert len(got[0]) == 4  # cut at the stop sequence


def test_sampling_is_refused(routed):
    model, tok = routed
    lm = PtmoeLM(model=model, tokenizer=tok)
    with pytest.raises(ValueError, match="greedily"):
        lm.generate_until([Instance("generate_until", {}, ("hi", {"do_sample": True, "temperature": 0.7}), 0)])
