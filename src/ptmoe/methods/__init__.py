"""Methods, registered by name. Importing this package registers them all."""

from . import attempt, dpt, ft, hydralora, lora, none, pt, ptmoe, smop  # noqa: F401
from .base import (  # noqa: F401
    NOTHING,
    PROMPT,
    REGISTRY,
    WEIGHTS,
    Adapter,
    AdapterStateError,
    MethodConfig,
    MethodSpec,
    PromptCall,
    PromptModule,
    Routing,
    WeightAdapter,
)


def get_method(name: str) -> MethodSpec:
    if name not in REGISTRY:
        raise ValueError(f"--method: unknown method {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def make_config(name: str, options: dict | None = None, where: str = "method options") -> MethodConfig:
    return get_method(name).config_cls.from_dict(dict(options or {}), where)
