"""The decode loop's fast paths give today's tokens: the static KV cache (preallocated, the path that
is compiled into CUDA graphs on a GPU) against the dynamic one, "every row ended?" read every few
steps against every step, and the preallocated mask grown past its length (the server's decoder)."""

import pytest
import torch

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.collate import pad_batch
from ptmoe.generation import CachedDecoder, greedy_decode, left_align

TEXTS = ["hello there", "a longer question, right? yes it is", "x", "what is 2+2?", "tiny"]


@pytest.fixture(scope="module")
def model(one_thread):
    base, tok = load_shape("tiny", dtype=torch.float32, seed=0)
    m = AdaptedModel(base, "pt", {"num_tokens": 4}, tok, seed=1).eval()
    with torch.no_grad():
        for p in m.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.3)
    b = pad_batch([{"input_ids": tok(t)["input_ids"]} for t in TEXTS], tok.pad_token_id, "left")
    return m, b["input_ids"], b["attention_mask"]


def test_static_cache_gives_the_dynamic_tokens_left_padded(model):
    m, ids, mask = model
    dynamic = m.generate(ids, mask, max_new_tokens=12, cache="dynamic")
    static = m.generate(ids, mask, max_new_tokens=12, cache="static")
    assert dynamic.shape == (len(TEXTS), 12)
    assert torch.equal(static, dynamic)
    # the held static cache is reset and reused by the next call (a shorter batch, same bucket)
    assert torch.equal(m.generate(ids[:, 3:], mask[:, 3:], max_new_tokens=5, cache="static")[:3], dynamic[:3, :5])
    assert torch.equal(m.generate(ids[1:], mask[1:], max_new_tokens=7, cache="static"), dynamic[1:, :7])


def test_static_cache_stops_at_eos_like_the_dynamic_one(model):
    m, ids, mask = model
    free = m.generate(ids, mask, max_new_tokens=10, cache="dynamic")
    eos = [int(free[0, 2]), int(free[1, 1])]  # rows end at different steps
    dynamic = m.generate(ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=0, cache="dynamic")
    static = m.generate(ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=0, cache="static")
    assert torch.equal(static, dynamic)


def test_checking_every_8_steps_gives_the_tokens_of_checking_every_step(model):
    """On CUDA the loop asks "every row ended?" every 8 steps; the extra columns are trimmed."""
    m, ids, mask = model
    x, xmask, pos, _ = m.build_inputs(*left_align(ids, mask))
    free = greedy_decode(m.lm, x, xmask, pos, 12)
    for eos in ({int(t) for t in free[:, 2]}, {int(free[0, 0])}, set(free.flatten().tolist())):
        every = greedy_decode(m.lm, x, xmask, pos, 12, sorted(eos), pad_token_id=7, check_every=1)
        sparse = greedy_decode(m.lm, x, xmask, pos, 12, sorted(eos), pad_token_id=7, check_every=8)
        assert torch.equal(sparse, every), eos
        assert every.shape[1] < 12 or not torch.isin(every[:, -1], torch.tensor(sorted(eos))).all()


def test_mask_grows_past_its_preallocation(model):
    """The server's decoder gives no max_new_tokens: the mask doubles when the steps outrun it."""
    m, ids, mask = model
    x, xmask, pos, _ = m.build_inputs(*left_align(ids, mask))
    want = greedy_decode(m.lm, x, xmask, pos, 40, cache="dynamic")
    decoder = CachedDecoder(m.lm, x, xmask, pos)
    got = []
    for _ in range(40):
        got.append(decoder.logits.argmax(-1))
        decoder.step(got[-1])
    assert torch.equal(torch.stack(got, 1), want)


def test_unknown_cache_is_a_one_line_error(model):
    m, ids, mask = model
    with pytest.raises(ValueError, match="cache: unknown 'paged'; known: dynamic, static"):
        m.generate(ids, mask, max_new_tokens=2, cache="paged")
