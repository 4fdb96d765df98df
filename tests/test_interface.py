"""The method interface and the one-place helpers of the method interface: the frozen base behind the `none` method,
the routing record, taking a weight adapter off the base model, refusing a newer adapter format,
the dtype choice, `ptmoe --version` and the packaged demo config."""

import json

import pytest
import torch

from ptmoe import AdaptedModel, AdapterError
from ptmoe.base_models import load_shape
from ptmoe.cli import main as cli_main
from ptmoe.device import cpu_has_fast_bf16, resolve_dtype
from ptmoe.methods import REGISTRY, Routing

pytestmark = pytest.mark.usefixtures("one_thread")


def test_none_method_is_the_frozen_base_model():
    base, tok = load_shape("tiny")
    ids = torch.tensor([tok("hello there")["input_ids"]])
    with torch.no_grad():
        ref = base(input_ids=ids).logits
    model = AdaptedModel(base, "none", {}, tok).eval()
    assert model.num_trainable() == 0 and model.routing is None and model.aux_loss() is None
    with torch.no_grad():
        torch.testing.assert_close(model(ids, torch.ones_like(ids), return_logits=True).logits, ref)


@pytest.mark.parametrize("method", ["ptmoe", "smop", "attempt"])
def test_routed_methods_report_a_typed_record(method):
    base, tok = load_shape("tiny")
    opts = (
        {"num_tokens": 4, "experts": 2, "rank": 2}
        if method == "ptmoe"
        else {"num_tokens": 4, "experts": 2}
        if method == "smop"
        else {"num_tokens": 4, "num_random_sources": 2}
    )
    model = AdaptedModel(base, method, opts, tok).eval()
    ids = torch.tensor([tok("a b c")["input_ids"]] * 3)
    out = model(ids, torch.ones_like(ids), return_logits=True)
    r = out.routing  # the call's record comes with its output
    assert r is model.routing  # and the wrapper keeps the latest for a look; the adapter keeps nothing
    assert not {"routing", "aux_loss", "row_sources"} & set(vars(model.adapter))
    assert isinstance(r, Routing) and r.probs.shape == r.selected.shape == r.weights.shape
    torch.testing.assert_close(r.probs.sum(-1), torch.ones(3))
    assert not hasattr(r, "mask")  # the selection is `selected`, never confused with an attention mask


@pytest.mark.parametrize("method", ["lora", "hydralora", "ft"])
def test_removing_a_weight_adapter_gives_back_the_base_model(method):
    base, tok = load_shape("tiny")
    names = {n for n, _ in base.named_parameters()}
    model = AdaptedModel(base, method, {}, tok)
    assert model.num_trainable() > 0
    model.adapter.remove()
    assert {n for n, _ in base.named_parameters()} == names and not any(p.requires_grad for p in base.parameters())


def test_every_registered_method_declares_what_it_changes():
    assert {s.changes for s in REGISTRY.values()} == {"prompt", "weights", "nothing"}
    assert {n for n, s in REGISTRY.items() if s.mixable} == {"pt", "dpt", "smop", "ptmoe", "attempt"}


def test_a_newer_adapter_format_is_refused_in_one_line(tmp_path):
    base, tok = load_shape("tiny")
    path = AdaptedModel(base, "pt", {"num_tokens": 2}, tok).save_pretrained(tmp_path / "a")
    meta = json.loads((path / "adapter_config.json").read_text())
    assert meta["format_version"] == 1
    (path / "adapter_config.json").write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(AdapterError, match=r"adapter_config\.json: format_version 2 is newer") as e:
        AdaptedModel.from_pretrained(path, load_shape("tiny")[0], tok)
    assert "\n" not in str(e.value)


def test_dtype_auto_follows_the_hardware(monkeypatch):
    assert cpu_has_fast_bf16("flags\t: fpu sse avx512f avx512_bf16\n")
    assert cpu_has_fast_bf16("flags\t: fpu amx_bf16 amx_tile\n")
    assert not cpu_has_fast_bf16("flags\t: fpu sse avx2 avx512f\n")
    assert resolve_dtype("auto", torch.device("cuda"), log=lambda m: None) == torch.bfloat16
    assert resolve_dtype("fp32", torch.device("cuda")) == torch.float32
    for fast, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr("ptmoe.device.cpu_has_fast_bf16", lambda cpuinfo=None, fast=fast: fast)
        said = []
        assert resolve_dtype("auto", torch.device("cpu"), log=said.append) == want
        assert len(said) <= 1  # said once per process and choice
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_version_and_the_packaged_demo_config(capsys):
    from ptmoe import __version__
    from ptmoe.config.loading import load_config
    from ptmoe.recipes.demo import DEMO_CONFIG

    with pytest.raises(SystemExit) as e:
        cli_main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ptmoe {__version__}"
    assert DEMO_CONFIG.is_file() and DEMO_CONFIG.parent.name == "config" and DEMO_CONFIG.parent.parent.name == "ptmoe"
    assert load_config(DEMO_CONFIG, [])["method"] == "ptmoe"
