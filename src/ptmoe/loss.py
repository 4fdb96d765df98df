"""The training loss: token cross-entropy of the LM head computed only where labels exist, in chunks,
so no full-vocabulary fp32 copy of the logits ever lives (the fused path also needs one matmul, not two)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .lean_backbone import lean, pays_off


def _ce_chunk_rows(vocab: int, chunk: int | None, device: torch.device) -> int:
    """Rows per chunk: at most `chunk`; by default about 64 MiB of fp32 logits per chunk on a GPU, and
    24 MiB on a CPU, where a chunk that stays in the last-level cache makes the softmax passes over it
    cheaper (and the step's peak memory lower)."""
    budget = 24 << 20 if device.type == "cpu" else 64 << 20
    auto = max(64, budget // 4 // max(vocab, 1))
    return max(1, min(chunk, auto) if chunk else auto)


class _FusedLinearCE(torch.autograd.Function):
    """sum_i CE(softcap(h_i W^T + b), t_i), chunk by chunk. The gradients (dL/dh, and dL/dW, dL/db only
    where they require grad) are computed in the same pass, so backward only rescales them: the logits
    are computed once, never stored, never recomputed. Rows with target -100 count 0."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows, softcap):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        total = hidden.new_zeros((), dtype=torch.float32)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        # one logits buffer for every chunk, and the softmax made in place in it: a fresh [rows, vocab]
        # tensor per step of the softmax was most of this function's time (page faults) and of its memory
        direct = bias is None and weight.dtype == torch.float32 and hidden.dtype == torch.float32
        buffer = (
            hidden.new_empty((min(rows, hidden.shape[0]), weight.shape[0]), dtype=torch.float32) if direct else None
        )
        for i in range(0, hidden.shape[0], rows):
            h, t = hidden[i : i + rows], targets[i : i + rows]
            if direct:
                z = torch.mm(h, weight.t(), out=buffer[: h.shape[0]])
            else:
                z = nn.functional.linear(h, weight, bias).float()
            if softcap:
                z = torch.tanh(z / softcap).mul_(softcap)
            capped = z.clone() if softcap and (need_h or need_w or need_b) else None
            valid = t != -100
            tc = t.clamp_min(0)
            picked = z.gather(1, tc[:, None]).squeeze(1)
            top = z.amax(-1)
            e = z.sub_(top[:, None]).exp_()  # exp(z - max), in place
            sums = e.sum(-1)
            lse = top + sums.log()
            total += ((lse - picked) * valid).sum()
            if need_h or need_w or need_b:
                g = e.mul_((valid / sums)[:, None])  # softmax, 0 on rows without a label
                g.scatter_add_(1, tc[:, None], -valid[:, None].to(g.dtype))
                if softcap:  # d softcap(x) / dx = 1 - tanh^2
                    g.mul_(1 - (capped / softcap).square_())
                if need_h:
                    grad_h[i : i + rows] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
                if need_w:
                    grad_w += g.t().to(h.dtype) @ h
                if need_b:
                    grad_b += g.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = lambda g, dtype=None: None if g is None else (g * grad_out).to(dtype or g.dtype)
        return (
            scale(grad_h),
            scale(grad_w, ctx.dtypes[0]),
            scale(grad_b, ctx.dtypes[1]) if grad_b is not None else None,
            None,
            None,
            None,
        )


def chunked_cross_entropy(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk: int | None = None, softcap: float | None = None
) -> torch.Tensor:
    """Sum of token cross-entropies of head(hidden) against targets (-100 ignored), in chunks of rows:
    no full-vocabulary fp32 copy of the logits ever lives. A plain nn.Linear head goes through a fused
    linear + cross-entropy (gradients in the same pass: one logits matmul instead of two); any other
    head (e.g. adapted by PEFT) through checkpointed chunks whose logits are recomputed in backward."""
    weight = getattr(head, "weight", None)
    if type(head) is nn.Linear and weight is not None and torch.is_grad_enabled():
        rows = _ce_chunk_rows(weight.shape[0], chunk, hidden.device)
        return _FusedLinearCE.apply(hidden, weight, head.bias, targets, rows, softcap)

    def piece(h, t):
        logits = head(h).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return nn.functional.cross_entropy(logits, t, reduction="sum")

    rows = _ce_chunk_rows(getattr(weight, "shape", (32768,))[0], chunk, hidden.device)
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, hidden.shape[0], rows):
        h, t = hidden[i : i + rows], targets[i : i + rows]
        total = total + (checkpoint(piece, h, t, use_reentrant=False) if torch.is_grad_enabled() else piece(h, t))
    return total


def label_loss(lm: nn.Module, inputs_embeds, attention_mask, position_ids, labels) -> tuple[torch.Tensor, int]:
    """(mean token loss, number of label tokens): the backbone's hidden states, then the LM head only
    at positions whose next token is labelled. Labels are aligned with the input (label i is token i)."""
    backbone = getattr(lm, lm.base_model_prefix)
    # the MLPs keep less for backward (lean_backbone.py), the same loss and gradients; checkpointed layers
    # keep nothing anyway, and recompute in backward, outside this call, where the path must be the same
    checkpointed = getattr(lm, "is_gradient_checkpointing", False)
    use_lean = not checkpointed and pays_off(inputs_embeds.device, inputs_embeds.dtype)
    with lean() if use_lean else contextlib.nullcontext():
        hidden = backbone(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    h, t = hidden[:, :-1][keep], targets[keep]
    del hidden  # every position's states: not needed past here, and the loss's chunks come on top of the peak
    n = t.numel()
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    return chunked_cross_entropy(h, lm.get_output_embeddings(), t, softcap=softcap) / max(n, 1), n


def logits_and_loss(lm: nn.Module, inputs_embeds, attention_mask, position_ids, labels=None):
    """The plain path: full logits, and the usual mean cross-entropy where labels are given."""
    logits = lm(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).logits
    loss = None
    if labels is not None:
        loss = nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
        )
    return logits, loss
