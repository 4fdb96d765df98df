"""The training loss: token cross-entropy of the LM head computed only where labels exist, in chunks,
so no full-vocabulary fp32 copy of the logits ever lives (the fused path also needs one matmul, not two)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _ce_chunk_rows(vocab: int, chunk: int | None) -> int:
    """Rows per chunk: at most `chunk`, and about 64 MiB of fp32 logits per chunk by default."""
    auto = max(64, (1 << 24) // max(vocab, 1))
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
        for i in range(0, hidden.shape[0], rows):
            h, t = hidden[i : i + rows], targets[i : i + rows]
            z = nn.functional.linear(h, weight, bias).float()
            if softcap:
                z = torch.tanh(z / softcap).mul_(softcap)
            valid = t != -100
            tc = t.clamp_min(0)
            lse = torch.logsumexp(z, -1)
            total += ((lse - z.gather(1, tc[:, None]).squeeze(1)) * valid).sum()
            if need_h or need_w or need_b:
                g = z if not softcap else z.clone()
                g.sub_(lse[:, None]).exp_()  # softmax
                g.scatter_add_(1, tc[:, None], -valid[:, None].to(g.dtype))
                g.mul_(valid[:, None])
                if softcap:  # d softcap(x) / dx = 1 - tanh^2
                    g.mul_(1 - (z / softcap).square_())
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
        rows = _ce_chunk_rows(weight.shape[0], chunk)
        return _FusedLinearCE.apply(hidden, weight, head.bias, targets, rows, softcap)

    def piece(h, t):
        logits = head(h).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return nn.functional.cross_entropy(logits, t, reduction="sum")

    rows = _ce_chunk_rows(getattr(weight, "shape", (32768,))[0], chunk)
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, hidden.shape[0], rows):
        h, t = hidden[i : i + rows], targets[i : i + rows]
        total = total + (checkpoint(piece, h, t, use_reentrant=False) if torch.is_grad_enabled() else piece(h, t))
    return total


def label_loss(lm: nn.Module, inputs_embeds, attention_mask, position_ids, labels) -> tuple[torch.Tensor, int]:
    """(mean token loss, number of label tokens): the backbone's hidden states, then the LM head only
    at positions whose next token is labelled. Labels are aligned with the input (label i is token i)."""
    backbone = getattr(lm, lm.base_model_prefix)
    hidden = backbone(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    h, t = hidden[:, :-1][keep], targets[keep]
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
