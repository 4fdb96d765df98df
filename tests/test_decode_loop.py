"""The server's hf engine decodes through generation.py's loop: greedy rows get `generate`'s tokens, a
seeded sample is the one the engine's former per-row loop drew (kept below as the reference), rows stop
on their own limits, EOS or the callback, and each step reads the device once (every row's token)."""

import sys

import pytest
import torch

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.collate import pad_batch
from ptmoe.generation import CachedDecoder, left_align
from ptmoe.serving.decode import Sampling, decode, make_generator

TEXTS = ["hello there", "a longer question, right? yes it is", "x", "what is 2+2?", "tiny"]


@pytest.fixture(scope="module")
def model(one_thread):
    base, tok = load_shape("tiny", dtype=torch.float32, seed=0)
    m = AdaptedModel(base, "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2}, tok, seed=1).eval()
    with torch.no_grad():
        for p in m.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.3)
    b = pad_batch([{"input_ids": tok(t)["input_ids"]} for t in TEXTS], tok.pad_token_id, "left")
    return m, b["input_ids"], b["attention_mask"]


def reference_sample(logits, params, generator) -> int:
    """The engine's former sampling, one row at a time, each token read back with int()."""
    if params.temperature <= 0:
        return int(logits.argmax(-1))
    probs = torch.softmax(logits.float() / params.temperature, -1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= params.top_p
        sorted_p[drop] = 0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def reference_decode(model, input_ids, attention_mask, params, on_token, eos_ids):
    """The engine's former loop: a plain per-row loop over CachedDecoder's steps."""
    input_ids, attention_mask = left_align(input_ids, attention_mask)
    B, device = input_ids.shape[0], input_ids.device
    x, mask, pos, _ = model.build_inputs(input_ids, attention_mask)
    decoder = CachedDecoder(model.lm, x, mask, pos)
    gens = [None if p.temperature <= 0 else make_generator(p.seed, device) for p in params]
    done = [p.max_tokens <= 0 for p in params]
    step = 0
    while not all(done):
        toks = []
        for i in range(B):
            if done[i]:
                toks.append(0)
                continue
            t = reference_sample(decoder.logits[i], params[i], gens[i])
            toks.append(t)
            done[i] = on_token(i, t) or t in eos_ids or step + 1 >= params[i].max_tokens
        step += 1
        if all(done):
            break
        decoder.step(torch.tensor(toks, device=device))


def run(fn, model, params, eos=(), stop_at=None):
    """Each row's tokens; `stop_at` {row: n}: the callback stops that row after n tokens."""
    m, ids, mask = model
    got = [[] for _ in params]

    def on_token(i, t):
        got[i].append(t)
        return stop_at is not None and len(got[i]) >= stop_at.get(i, 10**9)

    fn(m, ids, mask, params, on_token, list(eos))
    return got


def test_greedy_rows_get_generates_tokens(model):
    m, ids, mask = model
    want = m.generate(ids, mask, max_new_tokens=9)
    got = run(decode, model, [Sampling(max_tokens=9, temperature=0) for _ in TEXTS])
    assert got == want.tolist()
    eos = [int(want[0, 2]), int(want[3, 1])]  # rows end at different steps; an EOS is passed on, then the row ends
    want = m.generate(ids, mask, max_new_tokens=9, eos_token_id=eos, pad_token_id=0)
    got = run(decode, model, [Sampling(max_tokens=9, temperature=0) for _ in TEXTS], eos=eos)
    for row, tokens in zip(want.tolist(), got):
        ended = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        assert tokens == row[:ended]


@pytest.mark.parametrize("seed", [7, 123])
def test_a_seeded_sample_is_the_former_loops(model, seed):
    params = [
        Sampling(max_tokens=12, temperature=0.9, top_p=0.9, seed=seed),
        Sampling(max_tokens=12, temperature=0),  # a greedy row beside sampled ones
        Sampling(max_tokens=5, temperature=1.3, seed=seed + 1),  # its own limit, no top-p
        Sampling(max_tokens=12, temperature=0.7, top_p=0.5, seed=seed + 2),
        Sampling(max_tokens=0, temperature=1.0, seed=seed),  # nothing to generate
    ]
    stop_at = {3: 4}  # the callback ends row 3 early (a stop string, a cancelled request)
    want = run(reference_decode, model, params, stop_at=stop_at)
    got = run(decode, model, params, stop_at=stop_at)
    assert got == want
    assert [len(t) for t in got] == [12, 12, 5, 4, 0]
    eos = [want[0][3]]
    assert run(decode, model, params, eos=eos) == run(reference_decode, model, params, eos=eos)
    sampled = run(decode, model, [Sampling(max_tokens=12, temperature=0.9, seed=s) for s in (1, 2)] * 2 + params[:1])
    assert sampled[0] == sampled[2] and sampled[0] != sampled[1]  # a row's seed fixes its tokens, whatever its batch


def test_each_step_reads_the_device_once(model, monkeypatch):
    """Device reads made by the decode loop itself (the model's own are not counted): one a step."""
    reads = []
    loop_files = ("serving/decode.py", "ptmoe/generation.py")

    def counting(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args):
            if sys._getframe(1).f_code.co_filename.endswith(loop_files):
                reads.append(name)
            return real(self, *args)

        return read

    for name in ("__int__", "__bool__", "__index__", "item", "tolist", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    got = run(decode, model, [Sampling(max_tokens=6, temperature=t, seed=1) for t in (0, 0.8, 0, 1.0, 0.5)])
    assert [len(t) for t in got] == [6] * 5
    assert len(reads) == 6, reads
