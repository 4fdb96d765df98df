"""Less activation memory for the backbone while ptmoe trains through it, with the same numbers.

A SwiGLU MLP (`down(silu(gate(x)) * up(x))`, the Llama family's) keeps three [tokens, intermediate]
tensors for backward under plain autograd: gate(x), up(x) and silu(gate(x)). Those are two thirds of
what a frozen SmolLM2 keeps in training. `SiLUMul` keeps the first two and recomputes the third in
backward (one elementwise pass), as Liger Kernel's SwiGLU does on GPUs; its forward and gradients are
the same kernels autograd runs, so the loss and every gradient are unchanged bit for bit.

The MLPs of a base model get a forward that takes this path only inside `lean()`, which ptmoe's
training forward enters where it `pays_off`; anywhere else (the base model called directly, PEFT sharing it in
`ptmoe bench`, no-grad evaluation) the module runs its own code.
"""

from __future__ import annotations

import contextlib
import contextvars
import types

import torch
from torch import nn

_ACTIVE = contextvars.ContextVar("ptmoe_lean_backbone", default=False)


class SiLUMul(torch.autograd.Function):
    """silu(gate) * up, keeping gate and up only."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return nn.functional.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        grad_gate = grad_up = None
        if ctx.needs_input_grad[1]:
            grad_up = nn.functional.silu(gate).mul_(grad)
        if ctx.needs_input_grad[0]:  # what autograd computes for silu's input: silu_backward(grad * up),
            grad_gate = grad * up  # here written over its own input (an elementwise kernel): one buffer
            torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        return grad_gate, grad_up


def _lean_forward(self, x):
    if not (_ACTIVE.get() and torch.is_grad_enabled()):
        return self._ptmoe_plain_forward(x)
    return self.down_proj(SiLUMul.apply(self.gate_proj(x), self.up_proj(x)))


def _has_swiglu_parts(module: nn.Module) -> bool:
    act = getattr(module, "act_fn", None)
    parts = [getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    return all(isinstance(p, nn.Module) for p in parts) and (
        isinstance(act, nn.SiLU) or type(act).__name__ == "SiLUActivation"
    )


@torch.no_grad()
def _computes_swiglu(module: nn.Module) -> bool:
    """Whether the module's own forward gives exactly what the lean path gives, on one token."""
    weight = next(module.parameters())
    x = torch.randn(1, module.gate_proj.in_features, generator=torch.Generator().manual_seed(0))
    x = x.to(weight.device, weight.dtype)
    return torch.equal(module(x), module.down_proj(SiLUMul.apply(module.gate_proj(x), module.up_proj(x))))


def install(lm: nn.Module) -> int:
    """Give every SwiGLU MLP of `lm` the lean path (once); returns how many have it. An MLP class whose
    forward does more than down(silu(gate) * up) (checked once per class), and other MLPs (GELU,
    experts, fused gate_up projections), keep plain autograd."""
    exact: dict[type, bool] = {}
    count = 0
    for m in lm.modules():
        if hasattr(m, "_ptmoe_plain_forward"):
            count += 1
            continue
        if not _has_swiglu_parts(m):
            continue
        if type(m) not in exact:
            exact[type(m)] = _computes_swiglu(m)
        if exact[type(m)]:
            m._ptmoe_plain_forward = m.forward
            m.forward = types.MethodType(_lean_forward, m)
            count += 1
    return count


def pays_off(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether recomputing silu(gate) costs less than it saves. On a GPU it is one elementwise pass beside
    the matmuls; on a CPU in fp32 a step is no slower (it allocates less); on a CPU in bf16 one run measured
    the step 4% slower (each elementwise pass converts through fp32) and another equal
    (benchmarks/lean_step.py), so there it is left off until a clearer measurement says otherwise."""
    return device.type != "cpu" or dtype == torch.float32


@contextlib.contextmanager
def lean():
    """The backbone's lean paths, for the calls made inside."""
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
