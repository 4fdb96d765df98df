"""The backbone speed options `ptmoe bench` compares leave the training loss and its gradients as they
are, where the option has a CPU path (torch.compile, the attention implementation); Liger Kernel has
none (Triton on CUDA), so on a CPU it is refused in one line before any model loads."""

import torch

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.bench.options import compile_backbone
from ptmoe.cli import main as cli_main
from ptmoe.collate import pad_batch

TEXTS = ["hello there, a question", "a longer question, right? yes it is", "what is 2+2?"]


def loss_and_grads(model, tok):
    rows = [{"input_ids": tok(t)["input_ids"]} for t in TEXTS]
    for r in rows:
        r["labels"] = [-100] * (len(r["input_ids"]) // 2) + r["input_ids"][len(r["input_ids"]) // 2 :]
    b = pad_batch(rows, tok.pad_token_id, "right")
    model.zero_grad(set_to_none=True)
    loss = model(b["input_ids"], b["attention_mask"], b["labels"]).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.trainable_parameters()]


def ptmoe_model():
    base, tok = load_shape("tiny", dtype=torch.float32, seed=0)
    return AdaptedModel(base, "ptmoe", {"num_tokens": 4, "experts": 2}, tok, seed=1).train(), tok


def assert_same(got, want):
    """fp32, summed in another order: the loss to 1e-5; each gradient to 1e-3 of the largest gradient
    entry (a router bias's gradient is a small difference of large terms, so relative error misleads)."""
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    scale = max(float(w.abs().max()) for w in want[1])
    for g, w in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-3 * scale)


def test_compiled_backbone_gives_the_eager_loss_and_gradients(one_thread):
    model, tok = ptmoe_model()
    eager = loss_and_grads(model, tok)
    compile_backbone(model.lm)
    try:
        assert_same(loss_and_grads(model, tok), eager)
        assert_same(loss_and_grads(model, tok), eager)  # the compiled graph again, not only its first run
    finally:
        torch._dynamo.reset()


def test_eager_attention_gives_the_sdpa_loss_and_gradients(one_thread):
    model, tok = ptmoe_model()
    assert model.lm.config._attn_implementation == "sdpa"
    sdpa = loss_and_grads(model, tok)
    model.lm.set_attn_implementation("eager")
    assert_same(loss_and_grads(model, tok), sdpa)


def test_liger_on_a_cpu_is_one_line_before_any_model_loads(capsys):
    code = cli_main(["bench", "--device", "cpu", "--model", "no/such-model", "--liger"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--liger: Liger Kernel runs Triton kernels on CUDA only; this run is on cpu" in err, err
    assert "Traceback" not in err and "no/such-model" not in err, err


def test_profile_reads_device_busy_time_and_the_gaps_between_kernels():
    """The profile part's reading of a CUDA trace: overlapping kernels count once, gaps between them."""
    from ptmoe.bench.profile import _busy_and_gaps

    assert _busy_and_gaps([(20.0, 30.0), (0.0, 10.0), (5.0, 12.0), (12.0, 13.0)]) == (23.0, 30.0, [7.0])
    assert _busy_and_gaps([]) == (0.0, 0.0, [])
