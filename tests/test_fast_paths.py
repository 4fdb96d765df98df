"""The training fast path (backbone hidden states, LM head only where labels exist, fused chunked
cross-entropy) gives the same loss and gradients as the plain path (full logits, the usual loss);
and `ptmoe bench` runs end to end. Correctness only, not timing."""

import copy
import json

import pytest
import torch
from torch import nn

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.bench.common import saved_for_backward
from ptmoe.loss import chunked_cross_entropy

METHODS = ["pt", "ptmoe", "smop", "lora", "dpt"]


def _batch(B=3, S=12, vocab=320, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, S), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # right padding
    mask[2, :2] = 0  # left padding
    labels = ids.clone()
    labels[:, : S // 2] = -100
    labels[mask == 0] = -100
    return ids, mask, labels


def _model(method, dtype):
    base, _ = load_shape("tiny", dtype=dtype)
    opts = {"r": 4} if method == "lora" else {"num_tokens": 4, **({"experts": 2} if method != "pt" else {})}
    if method == "dpt":
        opts = {"num_tokens": 4, "rank": 3}
    if method in ("smop", "ptmoe"):
        opts["noise"] = "none"  # deterministic routing: the two passes must see the same weights
    m = AdaptedModel(base, method, opts, seed=1)
    if method == "lora":  # LoRA's B starts at zero: make the adapter do something
        with torch.no_grad():
            for n, p in m.named_parameters():
                if p.requires_grad:
                    p.normal_(0, 0.1)
    return m


def _loss_and_grads(m, ids, mask, labels, plain):
    m.zero_grad(set_to_none=True)
    out = m(ids, mask, labels, return_logits=plain)
    out.loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in m.named_parameters() if p.requires_grad}
    return out.loss.detach().float(), grads


@pytest.mark.parametrize("method", METHODS)
def test_fast_equals_plain_fp32(method):
    m = _model(method, torch.float32).train()
    ids, mask, labels = _batch()
    loss_p, g_p = _loss_and_grads(m, ids, mask, labels, plain=True)
    loss_f, g_f = _loss_and_grads(m, ids, mask, labels, plain=False)
    assert g_p and set(g_p) == set(g_f)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-5, atol=1e-6)
    for name in g_p:
        assert g_p[name].abs().max() > 0, name
        torch.testing.assert_close(g_f[name], g_p[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("method", METHODS)
def test_fast_path_on_bf16_base_is_as_close_to_fp32_as_the_plain_path(method):
    """bf16 rounding differs between two correct paths (and with the thread count), so the fast path is
    held to the plain path's own distance from the fp32 answer on the same weights."""
    m = _model(method, torch.bfloat16).train()
    if method != "lora":  # prompt parameters stay fp32 on a bf16 base
        assert all(p.dtype == torch.float32 for p in m.trainable_parameters())
    fp32 = copy.deepcopy(m).float()  # the same weights, exactly
    ids, mask, labels = _batch()
    loss_p, g_p = _loss_and_grads(m, ids, mask, labels, plain=True)
    loss_f, g_f = _loss_and_grads(m, ids, mask, labels, plain=False)
    loss_r, g_r = _loss_and_grads(fp32, ids, mask, labels, plain=True)
    torch.testing.assert_close(loss_f, loss_r, rtol=2e-2, atol=2e-2)
    for name in g_r:
        ref = g_r[name].norm().clamp_min(1e-12)
        err_fast, err_plain = (g_f[name] - g_r[name]).norm() / ref, (g_p[name] - g_r[name]).norm() / ref
        assert err_fast < 1.5 * err_plain + 2e-2, f"{name}: fast {err_fast:.3g} vs plain {err_plain:.3g} from fp32"


def test_fast_path_no_labels_in_batch_rows():
    """A row without any label token contributes nothing; loss is the mean over label tokens."""
    m = _model("pt", torch.float32)
    ids, mask, labels = _batch()
    labels[0] = -100
    loss_p, _ = _loss_and_grads(m, ids, mask, labels, plain=True)
    out = m(ids, mask, labels)
    torch.testing.assert_close(out.loss.detach(), loss_p, rtol=1e-5, atol=1e-6)
    assert out.num_label_tokens == int((labels[:, 1:] != -100).sum())


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_ce_small_chunks_equal_unchunked(softcap, bias):
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=bias)
    h = torch.randn(37, 16, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    t[[3, 20]] = -100
    grads = []
    for chunk in (5, 1, 1000):
        h.grad, head.weight.grad = None, None
        loss = chunked_cross_entropy(h, head, t, chunk=chunk, softcap=softcap)
        (3 * loss).backward()
        grads.append((loss.detach(), h.grad.clone(), head.weight.grad.clone()))
    # reference: full logits, the usual loss
    h.grad, head.weight.grad = None, None
    z = head(h).float()
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    ref = nn.functional.cross_entropy(z, t, reduction="sum")
    (3 * ref).backward()
    for loss, gh, gw in grads:
        torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gh, h.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gw, head.weight.grad, rtol=1e-4, atol=1e-6)


def test_chunked_ce_no_grad_and_non_linear_head():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(8, 30))
    h = torch.randn(9, 8, requires_grad=True)
    t = torch.randint(0, 30, (9,))
    loss = chunked_cross_entropy(h, head, t, chunk=2)  # checkpointed fallback
    loss.backward()
    ref_h = h.grad.clone()
    h.grad = None
    nn.functional.cross_entropy(head(h), t, reduction="sum").backward()
    torch.testing.assert_close(ref_h, h.grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        lin = head[0]
        torch.testing.assert_close(
            chunked_cross_entropy(h, lin, t, chunk=4), nn.functional.cross_entropy(lin(h), t, reduction="sum")
        )


def test_bench_smoke(tmp_path):
    from ptmoe.cli import main

    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "--model",
            "shape:tiny",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--parts",
            "synthetic",
            "--methods",
            "forward,peft-pt,peft-lora,pt,dpt,smop,ptmoe,lora,hydralora",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    result = json.loads((out / "bench.json").read_text())
    assert {"command", "device", "versions", "config", "synthetic"} <= set(result)
    rows = {r["method"]: r for r in result["synthetic"]}
    assert set(rows) == {"forward", "peft-pt", "peft-lora", "pt", "dpt", "smop", "ptmoe", "lora", "hydralora"}
    assert rows["lora"]["trainable"] == rows["peft-lora"]["trainable"]  # rank 8 on q, v: the same adapter
    for r in rows.values():
        assert {"ms", "tokens_per_s", "peak_bytes", "x_forward", "x_peft_pt", "mem_x_peft_pt"} <= set(r)
        assert r["ms"] > 0 and r["peak_bytes"] > 0
    assert rows["forward"]["x_forward"] == 1.0
    md = (out / "bench.md").read_text()
    assert "ptmoe bench" in md and "| ptmoe |" in md


def test_bench_real_and_generate_parts(tmp_path):
    """The real-data and generation parts end to end (they once imported modules that had moved)."""
    from ptmoe.cli import main

    out = tmp_path / "bench"
    args = "--model shape:tiny --device cpu --batch-size 2 --seq-len 512 --steps 1 --warmup 0"
    args += " --parts real,generate --real-examples 4 --gen-examples 2 --max-new-tokens 2"
    assert main(["bench", *args.split(), "--out", str(out)]) == 0
    result = json.loads((out / "bench.json").read_text())
    assert {"real", "generate"} <= set(result)
    md = (out / "bench.md").read_text()
    assert "PEFT prompt tuning generate" in md and "DataCollatorForSeq2Seq" in md


@pytest.mark.parametrize("method", ["pt", "ptmoe", "lora"])
def test_lean_mlp_keeps_less_with_the_same_loss_and_gradients_bit_for_bit(method, monkeypatch):
    """The SwiGLU MLPs keep gate and up, not silu(gate), while ptmoe trains (lean_backbone.py): the loss
    and every gradient equal plain autograd's exactly, and what is kept shrinks by the silu outputs."""
    import contextlib

    import ptmoe.loss

    m = _model(method, torch.float32).train()
    mlps = [mod for mod in m.lm.modules() if hasattr(mod, "_ptmoe_plain_forward")]
    assert len(mlps) == m.lm.config.num_hidden_layers
    ids, mask, labels = _batch()

    def run():
        m.zero_grad(set_to_none=True)
        out, kept = saved_for_backward(lambda: m(ids, mask, labels))
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}
        return out.loss.detach(), grads, kept

    loss_lean, g_lean, kept_lean = run()
    monkeypatch.setattr(ptmoe.loss, "lean", contextlib.nullcontext)
    loss_plain, g_plain, kept_plain = run()
    assert torch.equal(loss_lean, loss_plain)
    assert set(g_lean) == set(g_plain) and all(torch.equal(g_lean[n], g_plain[n]) for n in g_plain)
    B, S = ids.shape
    width = B * (S + (0 if method == "lora" else 4))  # the prompt's tokens too
    silu_outputs = len(mlps) * width * m.lm.config.intermediate_size * 4
    assert kept_plain - kept_lean == silu_outputs, (kept_plain, kept_lean, silu_outputs)


def test_mlps_run_their_own_code_outside_ptmoe_training_and_odd_ones_are_left_alone():
    from ptmoe.lean_backbone import install, pays_off

    m = _model("pt", torch.float32)
    x = torch.randn(2, 5, m.lm.config.hidden_size, requires_grad=True)
    mlp = m.lm.model.layers[0].mlp
    _, kept = saved_for_backward(lambda: mlp(x))  # outside `lean()`: plain autograd keeps silu(gate) too
    assert kept >= 3 * 2 * 5 * m.lm.config.intermediate_size * 4

    class Scaled(nn.Module):  # gate/up/down and a SiLU, but a forward that does more
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj, self.down_proj = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 4)
            self.act_fn = nn.SiLU()

        def forward(self, x):
            return 2 * self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    assert install(nn.Sequential(Scaled())) == 0
    # where the recompute costs more than it saves (a CPU in bf16: measured 4% slower) the path stays off
    assert pays_off(torch.device("cpu"), torch.float32) and not pays_off(torch.device("cpu"), torch.bfloat16)
    assert pays_off(torch.device("cuda"), torch.bfloat16)
