"""No adapter: the frozen base model alone, behind the same interface (evaluate and generate use it)."""

from dataclasses import dataclass

from .base import Adapter, MethodConfig, MethodSpec, register


@dataclass
class NoAdapterConfig(MethodConfig):
    pass


class NoAdapter(Adapter):
    @classmethod
    def attach(cls, cfg, lm, tokenizer=None, generator=None):
        return cls()

    @classmethod
    def count_trainable(cls, cfg, base_config) -> int:
        return 0


register(MethodSpec("none", NoAdapterConfig, NoAdapter, num_params=lambda c, m: 0))
