"""HydraLoRA (Tian et al. 2024): LoRA with one shared A and K routed B heads per target module.

    y = W x + (alpha / r) * sum_k g_k(x) B_k A x,   g(x) = softmax(R x)  (per token)

A (r x in) kaiming-uniform, B_k (out x r) zeros (starts as the base model), router R (K x in,
no bias) small random. PEFT has no HydraLoRA, so the targeted nn.Linear modules are wrapped by
hand; target selection matches PEFT's list form (a module name equal to, or ending in ".", a target).

Trainable parameters per module: r*in (A) + K*out*r (B heads) + K*in (router). Llama-3.2-1B,
q_proj (2048 -> 2048) and v_proj (2048 -> 512), r = 1, K = 2, 16 layers:
16 * ((2048 + 4096 + 4096) + (2048 + 1024 + 4096)) = 16 * 17,408 = 278,528 (the paper's "278k").
"""

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import MethodConfig, MethodSpec, WeightAdapter, linear_shapes, register


@dataclass
class HydraLoRAConfig(MethodConfig):
    r: int = 1
    heads: int = 2
    alpha: float = 2.0  # scale = alpha / r, as LoRA here
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


class HydraLoRALinear(nn.Module):
    def __init__(self, base_layer: nn.Linear, r: int, heads: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base_layer = base_layer
        dev, (out_f, in_f) = base_layer.weight.device, base_layer.weight.shape
        self.r, self.heads, self.scale = r, heads, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, in_f, device=dev))  # fp32, as PEFT keeps adapters
        self.lora_B = nn.Parameter(torch.zeros(heads, out_f, r, device=dev))
        self.router = nn.Linear(in_f, heads, bias=False, device=dev)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # PEFT's LoRA init of A
        nn.init.normal_(self.router.weight, std=1.0 / in_f)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token head weights [..., K]."""
        return torch.softmax(self.router(x.to(self.router.weight.dtype)), -1)

    def forward(self, x):
        y = self.base_layer(x)
        h = self.dropout(x).to(self.lora_A.dtype)
        g = self.gate(x)
        mix = (g.unsqueeze(-1) * (h @ self.lora_A.T).unsqueeze(-2)).flatten(-2)  # [..., K*r]: g_k * A x
        B = self.lora_B.permute(1, 0, 2).reshape(self.lora_B.shape[1], -1)  # [out, K*r]
        return y + (self.scale * (mix @ B.T)).to(y.dtype)


def matches(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


class HydraLoRA(WeightAdapter):
    """Wraps the targeted nn.Linear modules of the model in place; saved keys are the model's own
    names of the trainable tensors (e.g. model.layers.0.self_attn.q_proj.lora_A)."""

    def __init__(self, cfg: HydraLoRAConfig, lm):
        super().__init__(lm)
        names = [n for n, m in lm.named_modules() if isinstance(m, nn.Linear) and matches(n, cfg.target_modules)]
        if not names:
            raise ValueError(f"hydralora: target_modules {list(cfg.target_modules)} match no nn.Linear of the model")
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = lm.get_submodule(parent_name)
            setattr(parent, child, HydraLoRALinear(getattr(parent, child), cfg.r, cfg.heads, cfg.alpha, cfg.dropout))

    def remove(self):
        for name, module in list(self.lm.named_modules()):
            if isinstance(module, HydraLoRALinear):
                parent_name, _, child = name.rpartition(".")
                setattr(self.lm.get_submodule(parent_name), child, module.base_layer)


def _count(c, m):
    return sum(c.r * i + c.heads * o * c.r + c.heads * i for i, o in linear_shapes(m, c.target_modules))


register(MethodSpec("hydralora", HydraLoRAConfig, HydraLoRA, num_params=_count))
