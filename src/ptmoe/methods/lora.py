"""LoRA through PEFT: rank and target modules configurable (the paper: rank 1 on q_proj, v_proj)."""
from dataclasses import dataclass, field

from .base import MethodConfig, MethodSpec, register


@dataclass
class LoRAConfig(MethodConfig):
    r: int = 1
    alpha: float = 2.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


def build_lora(cfg: LoRAConfig, base_model):
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(base_model, peft_cfg)


def _count(c, m):
    from .base import linear_shapes
    return sum(c.r * (i + o) for i, o in linear_shapes(m, c.target_modules))


register(MethodSpec("lora", LoRAConfig, "weights", build_lora, num_params=_count))
