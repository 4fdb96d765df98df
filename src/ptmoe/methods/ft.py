"""Full fine-tuning: every weight of the base model trains."""
from dataclasses import dataclass

from .base import MethodConfig, MethodSpec, register


@dataclass
class FTConfig(MethodConfig):
    pass


def build_ft(cfg: FTConfig, base_model):
    for p in base_model.parameters():
        p.requires_grad_(True)
    return base_model


register(MethodSpec("ft", FTConfig, "weights", build_ft))
