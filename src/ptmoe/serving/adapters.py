"""The models a server holds: one base model, every prompt adapter on it (one AdaptedModel, so their
requests share batches), and each weight-method adapter (LoRA, HydraLoRA, a full fine-tune) on its
own copy of the base (those change the weights, so they are never batched with anything else)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..adapted import AdaptedModel
from ..base_models import load_base_model
from ..data.format import special_ids
from ..methods import get_method

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def parse_adapter_args(items: list[str], base_name: str, note=None) -> dict[str, str]:
    """["NAME=PATH" or "PATH", ...] -> {name: path}, every problem named with the option. A bare PATH (a
    folder, as `ptmoe generate --adapter` takes) is served under a name made from it (`note` says which)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if Path(item).is_dir() or not sep:
            name, path = default_name(item, taken={*out, base_name}), item
            if note and Path(path).is_dir():
                note(f"--adapter {item}: served as model {name!r} (NAME=PATH chooses the name)")
        if not name or not path:
            raise ValueError(f"--adapter: expected NAME=PATH or a folder, got {item!r}")
        if not NAME.match(name):
            raise ValueError(f"--adapter {item}: name {name!r} must be letters, digits and . _ : / -")
        if name in out or name == base_name:
            raise ValueError(f"--adapter {item}: name {name!r} is already used")
        if not Path(path).is_dir():
            raise ValueError(f"--adapter {item}: folder {path} not found")
        out[name] = path
    return out


def default_name(path: str, taken: set) -> str:
    """A model name for an adapter folder: its own name, or its run's for RUN/best and RUN/final."""
    p = Path(path).resolve()
    stem = p.parent.name if p.name in ("best", "final") or p.name.startswith("checkpoint") else p.name
    name = re.sub(r"[^A-Za-z0-9._:/-]", "-", stem).lstrip("._:/-")[:120] or "adapter"
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


@dataclass
class Served:
    base_name: str
    tokenizer: object
    base: AdaptedModel  # the untouched base model (requests naming the base model)
    prompt: AdaptedModel | None = None  # every prompt adapter, mixed per row
    weights: dict[str, AdaptedModel] = field(default_factory=dict)  # name -> its own model
    methods: dict[str, str] = field(default_factory=dict)  # adapter name -> method
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [self.base_name, *self.methods]

    def model_for(self, name: str) -> AdaptedModel:
        if name == self.base_name:
            return self.base
        return self.weights.get(name, self.prompt)

    def prompt_tokens(self, name: str) -> int:
        """Soft prompt tokens a request for `name` adds in front of its input."""
        if name in self.methods and get_method(self.methods[name]).mixable:
            return self.prompt.adapters[name].num_tokens
        return 0

    def eos_ids(self) -> list[int]:
        return special_ids(self.tokenizer)[1]

    def max_model_len(self) -> int:
        return int(getattr(self.base.lm.config, "max_position_embeddings", 2048))


def _frozen(model: AdaptedModel, device) -> AdaptedModel:
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_served(base_name: str, adapters: dict[str, str], device="cpu", dtype=torch.float32) -> Served:
    """Read every adapter config first (a bad folder fails before any model loads), then the models."""
    metas = {n: AdaptedModel.read_adapter_config(p) for n, p in adapters.items()}
    for meta in metas.values():
        get_method(meta["method"])  # an unknown method is named before loading
    base, tok = load_base_model(base_name, dtype=dtype)
    served = Served(base_name, tok, _frozen(AdaptedModel(base, "ft", {}, tok), device), paths=dict(adapters))
    for name, path in adapters.items():
        method = metas[name]["method"]
        served.methods[name] = method
        if get_method(method).mixable:
            if served.prompt is None:
                served.prompt = _frozen(
                    AdaptedModel.from_pretrained(path, served.base.lm, tok, adapter_name=name), device
                )
            else:
                served.prompt.load_adapter(path, name)
                _frozen(served.prompt, device)
        else:  # changes the weights: its own copy of the base model
            own, _ = load_base_model(base_name, dtype=dtype)
            served.weights[name] = _frozen(AdaptedModel.from_pretrained(path, own, tok, adapter_name=name), device)
    return served
