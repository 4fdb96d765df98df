"""Presets with their sources: SVD init from the task's instruction in both presets, and an
init text with fewer distinct tokens than the rank R still gives E = A_i B full rank R."""

import json

import pytest
import torch

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.config.loading import load_config
from ptmoe.config.presets import PRESETS, TASK_TEXT, apply_preset, task_init_text
from ptmoe.data.format import MATH_INSTRUCTION, QA_INSTRUCTION
from ptmoe.methods.base import init_embeddings


def tiny():
    return load_shape("tiny", seed=0)


@pytest.mark.parametrize("method", ["ptmoe", "dpt"])
@pytest.mark.parametrize("text", ["ab ab ab", "Answer briefly."])
def test_short_init_text_leaves_E_full_rank(method, text):
    """The text has far fewer distinct tokens (bytes here) than R = 36: repeating it, as before, left
    E with rank <= the distinct count and the other singular values at ~1e-4 of the top one."""
    base, tok = tiny()
    opts = {"num_tokens": 40, "rank": 36, "init_text": text, **({"experts": 2} if method == "ptmoe" else {})}
    pm = AdaptedModel(base, method, opts, tok).prompt_module
    A = pm.A[0] if method == "ptmoe" else pm.A
    S = torch.linalg.svdvals((A @ pm.B).detach())[:36]
    assert len(set(tok(text, add_special_tokens=False)["input_ids"])) < 36
    assert S.min() / S.max() > 0.05, S
    # the text itself still leads the init rows (a repeat is replaced only where the fill is too short)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    E = init_embeddings(base.get_input_embeddings(), 40, tok, text, torch.Generator().manual_seed(0), min_distinct=36)
    first = [i for i, t in enumerate(ids) if t not in ids[:i]]
    want = base.get_input_embeddings()(torch.tensor([ids[i] for i in first])).detach()
    torch.testing.assert_close(E[first], want)
    if len(set(ids)) + 40 - len(ids) >= 36:  # enough room after the text: the text is kept whole
        torch.testing.assert_close(E[: len(ids)], base.get_input_embeddings()(torch.tensor(ids)).detach())


def test_repeated_tokens_beyond_T_are_replaced_until_R_distinct():
    base, tok = tiny()
    text = "a" * 100  # one distinct token, longer than T
    E = init_embeddings(base.get_input_embeddings(), 40, tok, text, torch.Generator().manual_seed(0), min_distinct=36)
    S = torch.linalg.svdvals(E)
    assert E.shape == (40, 64) and S[35] / S[0] > 0.05


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_every_preset_inits_from_the_task_instruction(tmp_path):
    qa = write(
        tmp_path / "qa.jsonl", [{"context": "The sky is blue.", "question": "What is blue?", "answers": ["sky"]}]
    )
    math = write(tmp_path / "math.jsonl", [{"question": "2+2?", "answer": "2+2=4\n#### 4"}])
    for preset in ("paper", "balanced", "default"):
        assert PRESETS["ptmoe"][preset]["method_options"]["init_text"] == TASK_TEXT
        cfg = apply_preset(load_config(None, ["method=ptmoe", f"preset={preset}", f"data.train=['{qa}']"]))
        assert task_init_text(cfg)["init_text"] == QA_INSTRUCTION
        cfg = apply_preset(load_config(None, ["method=ptmoe", f"preset={preset}", f"data.train=['{qa}', '{math}']"]))
        assert task_init_text(cfg)["init_text"] == QA_INSTRUCTION + "\n" + MATH_INSTRUCTION
    # the paper preset keeps the text's noise: multiplicative, sigma 0.01
    opts = PRESETS["ptmoe"]["paper"]["method_options"]
    assert (opts["noise"], opts["noise_std"], opts["top_k"], opts["weighting"]) == (
        "multiplicative",
        0.01,
        1,
        "probationary",
    )
    # default is the recipe that won the post-fix QA table (docs/parity.md): the paper's, at its rate
    assert apply_preset(load_config(None, ["method=ptmoe", "preset=default"])) == apply_preset(
        load_config(None, ["method=ptmoe", "preset=paper"])
    )
    # balanced, the default before the routing fix, keeps its experts apart and its 3x rate
    cfg = apply_preset(load_config(None, ["method=ptmoe", "preset=balanced", "train.lr=0.01"]))
    assert cfg["method_options"]["router_input_norm"] == "standardize" and cfg["train"]["lr"] == 0.03
    # an explicit init text wins over the preset's
    cfg = apply_preset(load_config(None, ["method=ptmoe", "preset=paper", "method_options={init_text: hi}"]))
    assert task_init_text(cfg)["init_text"] == "hi"


def test_the_task_placeholder_is_never_embedded_as_text():
    base, tok = tiny()
    with pytest.raises(ValueError, match="init_text: '@task'"):
        AdaptedModel(base, "ptmoe", {"num_tokens": 4, "rank": 2, "init_text": TASK_TEXT}, tok)
