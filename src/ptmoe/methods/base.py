"""The interface every method sits behind: a method owns its whole life.

A method is a config dataclass plus an `Adapter` class, registered under a name. The adapter says
what it changes (`changes`: a soft prompt computed from the input, the base model's weights, or
nothing), builds itself onto a base model (`attach`), counts its trainable parameters without a
real model (`count_trainable`), gives and takes its saved state (safetensors tensors, checked
against the expected keys and shapes), returns with each call's prompt what that call routed and the
loss terms it adds (`PromptCall`) and says whether rows of one batch may use different adapters of its
kind (`mixable`). What a call depends on beyond its inputs (each row's data set, for the oracle) is an
argument of the call, never state left on the adapter.

The wrapper (`ptmoe.adapted.AdaptedModel`), the training loop, evaluation and the benchmark only call these hooks:
a new method is one new file here that calls `register`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from safetensors.torch import save_file
from torch import nn

from .building import init_embeddings, linear_shapes, masked_mean, svd_factors  # noqa: F401  (re-exported)
from .router_input import RouterInput

PROMPT = "prompt"  # a soft prompt computed from each input, prepended to it
WEIGHTS = "weights"  # the base model's weights (added low-rank terms, or all of them)
NOTHING = "nothing"  # the frozen base model alone


@dataclass
class MethodConfig:
    """Fields shared by every method; each method's dataclass adds its own."""

    # options added after runs of the method were stored (`ptmoe compare`'s run store): at their default
    # they are left out of a run's key, so the runs stored before them are still found. A new option goes
    # here, or every stored run of the method would be run again (tests/test_run_keys.py)
    added_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def unkeyed_defaults(cls) -> dict:
        """{added option: its default}: the values at which an option drops out of a run's key."""
        defaults = cls()  # every method's options have defaults
        return {name: getattr(defaults, name) for name in cls.added_options}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config"):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"{where}: unknown option(s) {', '.join(unknown)} for method "
                f"{cls.method_name!r}; known: {', '.join(sorted(names))}"
            )
        cfg = cls(**d)
        cfg.validate(where)
        return cfg

    def for_loading(self) -> "MethodConfig":
        """The config that builds a module of the same shapes for saved weights to be loaded into.
        Itself, unless building reads outside files (ATTEMPT's source prompts, saved in the adapter)."""
        return self

    def for_counting(self) -> "MethodConfig":
        """The config that builds a module with the same trainable parameters without reading files."""
        return self.for_loading()

    def validate(self, where: str = "config") -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(v, int) or isinstance(v, bool)):
                raise ValueError(f"{where}: option {f.name!r} must be an integer, got {v!r}")
            if f.name in ("num_tokens", "experts", "rank", "r", "heads", "top_k") and isinstance(v, int) and v < 1:
                raise ValueError(f"{where}: option {f.name!r} must be >= 1, got {v}")
            kind = f.type.__name__ if isinstance(f.type, type) else str(f.type)  # "float", "str | None", ...
            if kind.startswith("float") and not (v is None and "None" in kind):
                if isinstance(v, str):  # '5e-5': YAML 1.1 reads it as a string
                    try:
                        v = float(v)
                    except ValueError:
                        pass
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"{where}: option {f.name!r} must be a finite number, got {v!r}")
                setattr(self, f.name, v)
            elif kind.startswith("str") and not (v is None and "None" in kind) and not isinstance(v, str):
                raise ValueError(f"{where}: option {f.name!r} must be a string, got {v!r}")
            elif kind == "bool" and not isinstance(v, bool):
                raise ValueError(f"{where}: option {f.name!r} must be true or false, got {v!r}")
            elif kind.startswith("list") and not (v is None and "None" in kind):
                item, what = (int, "integers") if kind.startswith("list[int]") else (str, "strings")
                if not (isinstance(v, list) and all(isinstance(x, item) and not isinstance(x, bool) for x in v)):
                    raise ValueError(f"{where}: option {f.name!r} must be a list of {what}, got {v!r}")


class AdapterStateError(ValueError):
    """Saved tensors that do not fit the adapter (the wrapper names the file)."""


@dataclass
class Routing:
    """What a routed adapter chose on its last call, one row per example."""

    probs: torch.Tensor  # [B, N] router probabilities (detached)
    selected: torch.Tensor  # [B, N] 1 where an expert is selected; all ones for a dense mixture
    weights: torch.Tensor  # [B, N] the weight each expert got (detached)
    balance_loss: torch.Tensor | None = None  # load-balancing term N * sum_i f_i P_i (carries gradient)
    z_loss: torch.Tensor | None = None  # ST-MoE router z-loss mean(logsumexp(logits)^2) (carries gradient)


@dataclass
class PromptCall:
    """What one call of a prompt adapter gives: the soft prompt [B, T, H], what its router chose (None:
    not routed) and the extra loss terms the call adds to training (load balancing, z-loss, ...; None)."""

    prompt: torch.Tensor
    routing: Routing | None = None
    aux_loss: torch.Tensor | None = None

    def add_loss(self, term: torch.Tensor) -> "PromptCall":
        return dataclasses.replace(self, aux_loss=term if self.aux_loss is None else self.aux_loss + term)


class Adapter(nn.Module):
    """What one method attaches to one base model, under one adapter name."""

    changes: ClassVar[str] = NOTHING
    mixable: ClassVar[bool] = False  # may rows of one batch use different adapters of this kind
    peft_type: ClassVar[str | None] = None  # the PEFT adapter type it is saved as by `ptmoe export`, if any
    routed: ClassVar[bool] = False  # does its prompt route each input (a `Routing` record per call)?
    # can a run add experts to it and keep a router replay store (`grow:`, training/grow.py)? Such an
    # adapter has the growth hooks of methods/growth.py (`grow_from`, `init_new_router_rows`, `frozen_rows`, ...)
    growable: ClassVar[bool] = False

    # does a call need each row's data set (`row_sources`)? the oracle bracket routes by it
    reads_row_sources: bool = False

    # ---- building ---------------------------------------------------------------------------------
    @classmethod
    def attach(cls, cfg, lm: nn.Module, tokenizer=None, generator: torch.Generator | None = None) -> "Adapter":
        """Build onto a frozen transformers *ForCausalLM `lm` (weight methods change it in place)."""
        raise NotImplementedError

    @classmethod
    def count_trainable(cls, cfg, base_config) -> int:
        """Trainable parameters on a base model with this transformers config, without its weights."""
        raise NotImplementedError

    # ---- use ----------------------------------------------------------------------------------------
    def prompt_call(
        self, input_embeds: torch.Tensor, context_mask: torch.Tensor, row_sources=None
    ) -> PromptCall | None:
        """Each example's soft prompt [B, T, H] from what the model is given, with the call's routing and
        loss terms; None: the adapter makes no prompt. `row_sources`: each row's data set, where
        `reads_row_sources` (else not passed on)."""
        return None

    def soft_prompt(self, input_embeds: torch.Tensor, context_mask: torch.Tensor, row_sources=None):
        """The prompt of `prompt_call` alone, [B, T, H] or None."""
        call = self.prompt_call(input_embeds, context_mask, row_sources)
        return None if call is None else call.prompt

    def init_from_data(self, pooled: torch.Tensor, texts: list[torch.Tensor], generator=None):
        """Start from the training data before the first step (pooled inputs [M, H] and each input's
        token embeddings); returns what it did for the log, or None where the method does not."""
        return None

    # ---- saved state --------------------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The tensors to save (contiguous, on any device)."""
        return {}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take saved tensors; raise AdapterStateError naming missing / unexpected / misshapen keys."""
        check_state(state, {})

    def save_weights(self, path) -> None:
        save_file(self.adapter_state(), str(path))

    def remove(self) -> None:
        """Take the adapter off the base model, leaving it as it was built on (frozen)."""


def check_state(state: dict, expected: dict) -> None:
    """Saved tensors against the expected {key: shape}: the first few problems in one line."""
    missing = sorted(set(expected) - set(state))
    bad = sorted(k for k in state if k not in expected or tuple(state[k].shape) != tuple(expected[k]))
    if missing or bad:
        raise AdapterStateError(f"tensors missing {missing[:3]} or unexpected / of wrong shape {bad[:3]}")


class PromptModule(Adapter):
    """A prompt method: maps (input embeddings, context mask) to one soft prompt per example [B, T, H].
    Subclasses define __init__(cfg, embeddings, tokenizer, generator) and forward; parameters stay fp32."""

    changes = PROMPT
    mixable = True
    num_tokens: int  # length of the prompt it returns

    # what a routed prompt's router reads of each input (`router_input.py`); the paper's by default
    router_reads: RouterInput = RouterInput()

    @classmethod
    def attach(cls, cfg, lm, tokenizer=None, generator=None):
        emb = lm.get_input_embeddings()
        module = cls(cfg, emb, tokenizer, generator).to(emb.weight.device)  # fp32 even on a bf16 base
        module.router_reads.check_base(lm)
        module.__dict__["lm"] = lm  # held, not owned (no submodule): a hidden-state router input reads it
        return module

    def router_features(self, input_embeds: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """The pooled vector [B, H] fp32 a router reads of each row (only what `context_mask` lets it see)."""
        return self.router_reads(self.__dict__.get("lm"), input_embeds, context_mask)

    @classmethod
    def count_trainable(cls, cfg, base_config) -> int:
        stand_in = nn.Embedding(64, base_config.hidden_size)  # shapes depend only on the width
        module = cls(cfg.for_counting(), stand_in, None, torch.Generator().manual_seed(0))
        return sum(p.numel() for p in module.parameters())

    def forward(self, input_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | PromptCall:
        """The prompt [B, T, H], or a `PromptCall` with the routing and loss terms of the call (routed
        methods; one that reads row sources takes them as the keyword `row_sources`)."""
        raise NotImplementedError

    def prompt_call(self, input_embeds, context_mask, row_sources=None) -> PromptCall:
        kwargs = {"row_sources": row_sources} if self.reads_row_sources else {}
        out = self(input_embeds, context_mask, **kwargs)
        if isinstance(out, PromptCall):
            return out
        # a method written against the first interface sets `self.routing` / `self.aux_loss` in forward:
        # taken into this call's record and cleared, so nothing of it is left for the next call
        return PromptCall(out, self.__dict__.pop("routing", None), self.__dict__.pop("aux_loss", None))

    def adapter_state(self):
        return {k: v.detach().float().contiguous() for k, v in self.state_dict().items()}

    def load_adapter_state(self, state):
        check_state(state, {k: v.shape for k, v in self.state_dict().items()})
        self.load_state_dict(state)


class WeightAdapter(Adapter):
    """A weight method: changes the base model in place. `lm` is held, not owned (no submodule), so
    the wrapper's parameters and devices stay those of the base model."""

    changes = WEIGHTS

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.__dict__["lm"] = lm  # bypasses nn.Module registration on purpose

    @classmethod
    def attach(cls, cfg, lm, tokenizer=None, generator=None):
        return cls(cfg, lm)

    @classmethod
    def count_trainable(cls, cfg, base_config) -> int:
        # transformers is slow to import, and the methods (so `ptmoe config`) load without it until here
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):  # shapes only, no memory
            lm = AutoModelForCausalLM.from_config(base_config)
        lm.requires_grad_(False)
        cls(cfg, lm)
        return sum(p.numel() for p in lm.parameters() if p.requires_grad)

    def adapter_state(self):  # the trainable tensors, under the model's own names
        return {k: v.detach().contiguous() for k, v in self.lm.named_parameters() if v.requires_grad}

    def load_adapter_state(self, state):
        check_state(state, {k: v.shape for k, v in self.lm.named_parameters() if v.requires_grad})
        self.lm.load_state_dict(state, strict=False)

    def remove(self) -> None:
        self.lm.requires_grad_(False)


@dataclass
class MethodSpec:
    """A registered method: its name, config and adapter class."""

    name: str
    config_cls: type
    adapter_cls: type  # an Adapter subclass
    num_params: Callable[[Any, Any], int] | None = None  # formula(cfg, base_config), for checks

    @property
    def changes(self) -> str:
        return self.adapter_cls.changes

    @property
    def mixable(self) -> bool:
        return self.adapter_cls.mixable

    @property
    def peft_type(self) -> str | None:
        return self.adapter_cls.peft_type

    @property
    def growable(self) -> bool:
        return self.adapter_cls.growable

    @property
    def routed(self) -> bool:
        return self.adapter_cls.routed

    def build(self, cfg, lm, tokenizer=None, seed: int = 0) -> Adapter:
        """The adapter on `lm`, its random init fixed by `seed` (the global RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # e.g. router and LoRA init
            return self.adapter_cls.attach(cfg, lm, tokenizer, torch.Generator().manual_seed(seed))

    def count_trainable(self, cfg, base_config) -> int:
        return self.adapter_cls.count_trainable(cfg, base_config)


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    spec.config_cls.method_name = spec.name
    REGISTRY[spec.name] = spec
    return spec
