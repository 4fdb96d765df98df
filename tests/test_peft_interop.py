"""PEFT both ways, checked against PEFT itself on the tiny random model: a ptmoe `pt` / `lora` adapter
exported with `ptmoe export` loads with `PeftModel.from_pretrained` and generates the same greedy tokens
for a single unpadded prompt; adapters made by PEFT (prompt tuning, LoRA) load into ptmoe and generate
the same tokens as PEFT does; methods PEFT cannot express, existing output folders, other base models
and misshapen tensors are refused with one line."""

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, PromptTuningConfig, get_peft_model

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.cli import main
from ptmoe.interop.peft_format import export_peft
from ptmoe.persistence import AdapterError

pytestmark = pytest.mark.usefixtures("one_thread")
NEW = 8


@pytest.fixture()
def tiny():
    """The tiny random model with larger weights: at the default init scale its greedy tokens barely depend
    on the input, so "same tokens" would hold for any adapter; here they change with every prompt."""
    base, tok = load_shape("tiny")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2, generator=g)
    return base, tok


def prompt_ids(tok):
    return torch.tensor([tok("The quick brown fox")["input_ids"]])


def peft_greedy(peft_model, ids):
    out = peft_model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=NEW,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    return out[0, -NEW:].tolist()  # PEFT prompt tuning returns input + new tokens (no virtual tokens)


def ptmoe_greedy(model, ids):
    return model.generate(ids, torch.ones_like(ids), max_new_tokens=NEW)[0].tolist()


def trained_like(model):
    """Move the adapter away from its initialisation (LoRA's B starts at 0: a no-op adapter proves nothing)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@pytest.mark.parametrize("method,options", [("pt", {"num_tokens": 5}), ("lora", {"r": 2, "alpha": 4.0})])
def test_ptmoe_export_loads_in_peft_with_same_tokens(tiny, tmp_path, method, options):
    base, tok = tiny
    model = trained_like(AdaptedModel(copy.deepcopy(base), method, options, tok))
    model.save_pretrained(tmp_path / "adapter")
    assert main(["export", "--format", "peft", str(tmp_path / "adapter"), str(tmp_path / "peft")]) == 0
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == {"pt": "PROMPT_TUNING", "lora": "LORA"}[method]
    if method == "pt":
        assert cfg["num_virtual_tokens"] == 5 and cfg["token_dim"] == 64
    assert (tmp_path / "peft" / "README.md").is_file()
    ids = prompt_ids(tok)
    ours = ptmoe_greedy(model, ids)
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "peft")).eval()
    assert peft_greedy(theirs, ids) == ours
    plain = ptmoe_greedy(AdaptedModel(copy.deepcopy(base), "ft", {}, tok), ids)
    assert ours != plain  # the adapter changes the answer: the equality above is not vacuous
    # and back: the exported PEFT folder loads into ptmoe
    again = AdaptedModel.from_pretrained(tmp_path / "peft", copy.deepcopy(base), tok)
    assert again.method == method and ptmoe_greedy(again, ids) == ours


def test_peft_prompt_tuning_made_by_peft_loads_into_ptmoe(tiny, tmp_path):
    base, tok = tiny
    cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6)
    peft_model = get_peft_model(copy.deepcopy(base), cfg)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.normal_(
            0, 1.0, generator=torch.Generator().manual_seed(2)
        )
    peft_model.save_pretrained(str(tmp_path / "peft_pt"))
    ids = prompt_ids(tok)
    expected = peft_greedy(peft_model.eval(), ids)
    model = AdaptedModel.from_pretrained(tmp_path / "peft_pt", copy.deepcopy(base), tok)
    assert model.method == "pt" and model.prompt_module.num_tokens == 6
    assert ptmoe_greedy(model, ids) == expected
    # batched with left padding, as `ptmoe eval` runs it, the unpadded row still gets the same tokens
    short = torch.tensor([tok("Hi")["input_ids"]])
    batch = torch.zeros(2, ids.shape[1], dtype=torch.long)
    mask = torch.zeros_like(batch)
    batch[0], mask[0] = ids[0], 1
    batch[1, -short.shape[1] :], mask[1, -short.shape[1] :] = short[0], 1
    assert model.generate(batch, mask, max_new_tokens=NEW)[0].tolist() == expected


def test_peft_lora_made_by_peft_loads_into_ptmoe(tiny, tmp_path):
    base, tok = tiny
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(copy.deepcopy(base), cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    peft_model.save_pretrained(str(tmp_path / "peft_lora"))
    ids = prompt_ids(tok)
    expected = peft_greedy(peft_model.eval(), ids)
    model = AdaptedModel.from_pretrained(tmp_path / "peft_lora", copy.deepcopy(base), tok)
    assert (
        model.method == "lora"
        and model.config.r == 4
        and sorted(model.config.target_modules) == ["o_proj", "q_proj", "v_proj"]
    )
    assert ptmoe_greedy(model, ids) == expected
    # saved again by ptmoe, it is a ptmoe adapter that still answers the same
    model.save_pretrained(tmp_path / "ours")
    assert ptmoe_greedy(AdaptedModel.from_pretrained(tmp_path / "ours", copy.deepcopy(base), tok), ids) == expected


def test_refusals_are_one_line(tiny, tmp_path, capsys):
    base, tok = tiny
    AdaptedModel(copy.deepcopy(base), "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 2}, tok).save_pretrained(
        tmp_path / "moe"
    )
    assert main(["export", "--format", "peft", str(tmp_path / "moe"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'ptmoe' cannot be exported to PEFT" in err and "router" in err
    assert not (tmp_path / "x").exists()

    AdaptedModel(copy.deepcopy(base), "pt", {"num_tokens": 3}, tok).save_pretrained(tmp_path / "pt")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("user's work")
    assert main(["export", str(tmp_path / "pt"), str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "user's work"
    assert main(["export", str(tmp_path / "pt"), str(tmp_path / "taken"), "--overwrite"]) == 0
    assert (tmp_path / "taken" / "adapter_model.safetensors").is_file()

    # another base model: the recorded name, then the shapes
    cfg = json.loads((tmp_path / "taken" / "adapter_config.json").read_text())
    (tmp_path / "taken" / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "gpt2"}))
    with pytest.raises(AdapterError, match="made for base model 'gpt2'"):
        AdaptedModel.from_pretrained(tmp_path / "taken", copy.deepcopy(base), tok)
    (tmp_path / "taken" / "adapter_config.json").write_text(json.dumps({**cfg, "num_virtual_tokens": 7}))
    with pytest.raises(AdapterError, match=r"shape \(3, 64\).*7 virtual tokens"):
        AdaptedModel.from_pretrained(tmp_path / "taken", copy.deepcopy(base), tok)
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["q_proj"], use_rslora=True))
    lora.save_pretrained(str(tmp_path / "rslora"))
    with pytest.raises(AdapterError, match="use_rslora=True is not supported"):
        AdaptedModel.from_pretrained(tmp_path / "rslora", copy.deepcopy(base), tok)


def test_model_card_written_with_adapter(tiny, tmp_path):
    base, tok = tiny
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "data: {train: [squad/train], max_length: 256}\ntrain: {steps: 7, batch_size: 2, lr: 0.01}\nseed: 3\n"
    )
    AdaptedModel(copy.deepcopy(base), "pt", {"num_tokens": 3}, tok).save_pretrained(run / "best", extra={"step": 7})
    card = (run / "best" / "README.md").read_text()
    for part in (
        "base_model: shape:tiny",
        "Method: `pt`",
        "Trainable parameters: 192",
        "data ['squad/train']",
        "steps 7",
        "batch_size 2",
        "Saved at step: 7",
    ):
        assert part in card, part
    (run / "eval").mkdir()
    (run / "eval" / "results.json").write_text(json.dumps({"sets": {"squad/heldout": {"n": 4, "f1": 12.5, "em": 0.0}}}))
    export_peft(run / "best", tmp_path / "peft")
    exported = (tmp_path / "peft" / "README.md").read_text()
    assert "library_name: peft" in exported and "| squad/heldout | 4 | 12.50 | 0.00 |  |" in exported


def test_peft_prompt_mixes_with_a_ptmoe_adapter_in_one_batch(tiny, tmp_path):
    base, tok = tiny
    peft_model = get_peft_model(copy.deepcopy(base), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    peft_model.save_pretrained(str(tmp_path / "peft_pt"))
    ids = prompt_ids(tok)
    expected = peft_greedy(peft_model.eval(), ids)
    ours = trained_like(AdaptedModel(copy.deepcopy(base), "pt", {"num_tokens": 5}, tok))
    ours.save_pretrained(tmp_path / "ours")
    model = AdaptedModel.from_pretrained(tmp_path / "ours", copy.deepcopy(base), tok, adapter_name="ours")
    model.load_adapter(tmp_path / "peft_pt", "peft")
    both = model.generate(ids.repeat(2, 1), max_new_tokens=NEW, adapter_names=["ours", "peft"])
    assert both[1].tolist() == expected and both[0].tolist() == ptmoe_greedy(ours, ids)
