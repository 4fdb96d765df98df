"""The real embedded model (smollm2-135m-instruct): loads from the de-quantised cache, a PT-MoE forward
with loss and a greedy generate run on chat-formatted questions."""

import time

import pytest
import torch

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import DEFAULT_MODEL, cache_dir, load_base_model
from ptmoe.collate import pad_batch
from ptmoe.data.format import build_prompt_text, encode_dataset

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


EXAMPLES = [
    {
        "task": "qa",
        "context": "The Eiffel Tower is in Paris, the capital of France.",
        "question": "Which city is the Eiffel Tower in?",
        "answers": ["Paris"],
    },
    {
        "task": "qa",
        "context": "Water boils at 100 degrees Celsius at sea level.",
        "question": "At what temperature does water boil at sea level?",
        "answers": ["100 degrees Celsius"],
    },
]


def test_embedded_model_loads_from_cache_forward_and_generate():
    load_base_model(DEFAULT_MODEL)  # de-quantises once into the cache if this machine has no cache yet
    cached = cache_dir() / "models" / DEFAULT_MODEL
    assert (cached / "config.json").is_file() and (cached / "model.safetensors").is_file()
    t0 = time.perf_counter()
    base, tok = load_base_model(DEFAULT_MODEL)  # from the cache
    load_s = time.perf_counter() - t0
    assert load_s < 20, f"loading the cached model took {load_s:.1f} s"
    assert base.config.hidden_size == 576 and tok.chat_template

    model = AdaptedModel(base, "ptmoe", {"init_text": "Answer the question with a short span from the passage."}, tok)
    assert model.num_trainable() == 2 * 40 * 36 + 36 * 576 + 2 * 576 + 2  # the paper's defaults T=40, N=2, R=36

    # forward with loss on chat-formatted QA examples (loss on the answer tokens only)
    enc, dropped = encode_dataset(EXAMPLES, tok, 256, train=True)
    assert dropped == 0 and len(enc) == 2
    b = pad_batch(enc, tok.pad_token_id)
    assert "<|im_start|>" in tok.decode(b["input_ids"][0])
    model.train()
    out = model(b["input_ids"], b["attention_mask"], b["labels"])
    assert torch.isfinite(out.loss) and 0 < out.loss.item() < 15
    assert out.num_label_tokens == int((b["labels"][:, 1:] != -100).sum())
    out.loss.backward()
    pm = model.prompt_module
    assert pm.A.grad is not None and pm.B.grad.abs().sum() > 0 and pm.router.linear.weight.grad is not None
    assert all(p.grad is None for p in model.lm.parameters())

    # generate on two chat-formatted questions, left padded, KV cache
    prompts = [tok(build_prompt_text(ex, tok), add_special_tokens=False)["input_ids"] for ex in EXAMPLES]
    g = pad_batch([{"input_ids": p} for p in prompts], tok.pad_token_id, side="left")
    eos = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    new = model.generate(
        g["input_ids"], g["attention_mask"], max_new_tokens=12, eos_token_id=eos, pad_token_id=tok.pad_token_id
    )
    texts = [tok.decode(x, skip_special_tokens=True).strip() for x in new.tolist()]
    assert len(texts) == 2 and all(texts), texts
