"""The routing rule: an input-dependent prompt reads only what the model is given at
inference. A training row is prompt + answer; its routing weights and soft prompt must equal those of
generate's prefill of the prompt alone. And generate itself against a plain cache-free reference loop."""

import pytest
import torch

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.collate import pad_batch
from ptmoe.inputs import context_mask

pytestmark = pytest.mark.usefixtures("one_thread")

ROUTED = {
    "ptmoe": {"num_tokens": 4, "experts": 3, "rank": 3, "init_noise": 0.5, "router_input_norm": "standardize"},
    "smop": {"num_tokens": 6, "experts": 3},
    "attempt": {"num_tokens": 4, "num_random_sources": 3},
}
QUESTIONS = ["what is the capital of france?", "x", "who wrote the book about the whale and the sea?"]
ANSWERS = [" paris, the city of light and many long words", " y", " melville"]


def routed_model(method, seed=0):
    base, tok = load_shape("tiny", dtype=torch.float32, seed=seed)
    model = AdaptedModel(base, method, ROUTED[method], tok, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # a router far from its init, so different inputs route differently
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return model, tok


def training_batch(tok):
    rows = []
    for q, a in zip(QUESTIONS, ANSWERS):
        qi, ai = tok(q)["input_ids"], tok(a, add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": qi + ai, "labels": [-100] * len(qi) + ai})
    return pad_batch(rows, tok.pad_token_id, "right")


def prompt_batch(tok, texts=QUESTIONS):
    return pad_batch([{"input_ids": tok(q)["input_ids"]} for q in texts], tok.pad_token_id, "left")


class Capture:
    """Records the prompt module's output (the soft prompt) and routing on every call."""

    def __init__(self, module):
        self.prompts, self.routing = [], []
        module.register_forward_hook(self)
        self.module = module

    def __call__(self, module, args, output):
        self.prompts.append(output.prompt.detach().clone())
        r = output.routing
        self.routing.append(None if r is None else {"probs": r.probs.clone(), "weights": r.weights.clone()})


def test_context_mask_stops_at_the_first_label():
    mask = torch.tensor([[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]])
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, -100, -100, 7, -100]])
    assert context_mask(mask, labels).tolist() == [[1, 1, 0, 0, 0], [0, 1, 1, 0, 0]]
    assert context_mask(mask, None).tolist() == mask.tolist()


@pytest.mark.parametrize("method", list(ROUTED))
def test_training_forward_routes_on_the_prompt_alone(method):
    model, tok = routed_model(method)
    model.eval()  # no exploration noise: the same input must give the same routing
    cap = Capture(model.prompt_module)
    b = training_batch(tok)
    model(b["input_ids"], b["attention_mask"], labels=b["labels"])
    p = prompt_batch(tok)
    model.generate(p["input_ids"], p["attention_mask"], max_new_tokens=1)
    (train_prompt, gen_prompt), (train_route, gen_route) = cap.prompts, cap.routing
    torch.testing.assert_close(train_prompt, gen_prompt, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(train_route["weights"], gen_route["weights"], rtol=1e-5, atol=1e-6)
    # and the answer really would have changed the routing (the test can fail)
    full = model.prompt_module.soft_prompt(model.lm.get_input_embeddings()(b["input_ids"]), b["attention_mask"])
    assert not torch.allclose(full, train_prompt, atol=1e-4)


@pytest.mark.parametrize("method", list(ROUTED))
def test_batched_routing_equals_one_by_one(method):
    model, tok = routed_model(method)
    model.eval()
    cap = Capture(model.prompt_module)
    b = training_batch(tok)
    model(b["input_ids"], b["attention_mask"], labels=b["labels"])
    for i in range(len(QUESTIONS)):
        one = {k: v[i : i + 1] for k, v in b.items()}
        n = int(one["attention_mask"].sum())
        model(one["input_ids"][:, :n], one["attention_mask"][:, :n], labels=one["labels"][:, :n])
        torch.testing.assert_close(cap.prompts[-1][0], cap.prompts[0][i], rtol=1e-5, atol=1e-6)


def test_running_statistics_see_the_prompt_alone():
    trained, tok = routed_model("ptmoe")
    reference, _ = routed_model("ptmoe")
    trained.train(), reference.train()
    b, p = training_batch(tok), prompt_batch(tok)
    trained(b["input_ids"], b["attention_mask"], labels=b["labels"])
    reference.build_inputs(p["input_ids"], p["attention_mask"])  # the prompt alone, in training mode
    r1, r2 = trained.prompt_module.router, reference.prompt_module.router
    torch.testing.assert_close(r1.input_mean, r2.input_mean)
    torch.testing.assert_close(r1.input_var, r2.input_var)


@pytest.mark.parametrize("method", list(ROUTED) + ["pt", "lora"])
def test_generate_equals_a_plain_cache_free_loop(method):
    """Reference: for each question alone, [routed prompt; token embeddings] through the full forward at
    every step, no cache, no padding, default positions; greedy. generate runs the batch left-padded."""
    if method in ROUTED:
        model, tok = routed_model(method)
    else:
        base, tok = load_shape("tiny", dtype=torch.float32, seed=0)
        model = AdaptedModel(base, method, {"num_tokens": 4} if method == "pt" else {"r": 2}, tok)
        with torch.no_grad():
            for p in model.trainable_parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.3)
    model.eval()
    steps = 6
    p = prompt_batch(tok)
    got = model.generate(p["input_ids"], p["attention_mask"], max_new_tokens=steps)
    lm, emb = model.lm, model.lm.get_input_embeddings()
    with torch.no_grad():
        for i, q in enumerate(QUESTIONS):
            ids = torch.tensor([tok(q)["input_ids"]])
            x = emb(ids)
            if model.prompt_module is not None:
                x = torch.cat([model.prompt_module.soft_prompt(x, torch.ones_like(ids)).to(x.dtype), x], 1)
            want = []
            for _ in range(steps):
                t = lm(inputs_embeds=x, use_cache=False).logits[0, -1].argmax()
                want.append(int(t))
                x = torch.cat([x, emb(t.view(1, 1))], 1)
            assert got[i].tolist() == want, f"row {i}"
