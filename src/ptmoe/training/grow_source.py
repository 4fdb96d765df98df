"""Starting a run from a trained adapter (`ptmoe train CONFIG --from ADAPTER`): the checks and the
config the run trains (growth.py grows it), and reading the router's replay store saved beside it."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from ..base_models import load_base_config
from ..config.schema import ConfigError
from ..methods.router_input import RouterInput
from ..persistence import AdapterError, read_adapter_config

STORE_NAME = "router_replay.safetensors"
SHAPE_OPTIONS = ("num_tokens", "experts", "rank", "r", "heads", "target_modules")  # fixed by the saved tensors
READ_OPTIONS = ("router_input", "router_pool")  # what the saved router rows were trained to read


# ---- the config a run from an adapter trains, before any model loads --------------------------------
def from_adapter(cfg: dict) -> tuple[dict, dict | None]:
    """cfg (preset applied) -> (the config the run trains: the --from adapter's method options, grown by
    grow.experts; its adapter_config or None). Every mismatch is a one-line error before the model loads."""
    path = cfg["init_from"]
    if not path:
        return cfg, None
    try:
        meta = read_adapter_config(path)
    except AdapterError as e:
        raise ConfigError(f"--from {path}: not a ptmoe adapter folder ({e})") from None
    if meta["method"] != cfg["method"]:
        raise ConfigError(
            f"--from {path}: a {meta['method']!r} adapter, but this run trains method {cfg['method']!r} "
            f"(set method: {meta['method']} or start from a {cfg['method']} adapter)"
        )
    want, have = meta["base_model"], load_base_config(cfg["model"])
    if (want.get("hidden_size"), want.get("vocab_size")) != (have.hidden_size, have.vocab_size):
        raise ConfigError(
            f"--from {path}: trained on base model {want.get('name') or '?'} (hidden {want.get('hidden_size')}, "
            f"vocab {want.get('vocab_size')}), but model is {cfg['model']} (hidden {have.hidden_size}, "
            f"vocab {have.vocab_size})"
        )
    options = dict(meta["config"])
    for key, value in cfg["method_options"].items():
        if key in SHAPE_OPTIONS and key in options and value != options[key]:
            raise ConfigError(
                f"method_options.{key}: {value!r}, but the --from adapter {path} has {key}={options[key]!r} "
                f"(use grow.experts to add experts)"
            )
        if key in READ_OPTIONS and key in options and value != options[key]:
            raise ConfigError(
                f"method_options.{key}: {value!r}, but the --from adapter {path} has {key}={options[key]!r}: "
                f"its router rows were trained on that input"
            )
        options[key] = value
    if cfg["grow"]["experts"]:
        stages = options.get("stage_experts")
        if stages and cfg["grow"]["gate"] == "shared":
            raise ConfigError(
                f"grow.gate: shared, but the --from adapter {path} weighs its experts per growth stage "
                f"(stage_experts {stages}): grow it with grow.gate=per_stage"
            )
        if cfg["grow"]["gate"] == "per_stage":
            options["stage_experts"] = (stages or [options["experts"]]) + [cfg["grow"]["experts"]]
        options["experts"] = options["experts"] + cfg["grow"]["experts"]
        options["rank"] = options["rank"] + cfg["grow"]["rank"]
    elif cfg["grow"]["rank"]:
        raise ConfigError("grow.rank: B rows are added with new experts only (set grow.experts too)")
    return {**cfg, "method_options": options, "preset": None}, meta


def read_store(adapter_dir, reads: str | None = None) -> dict | None:
    """{inputs [n, H], experts [n], tasks [n], names} of an adapter's replay store, or None. `reads`: the
    router input kind (`RouterInput.kind`) of the adapter that will replay it; a store of another kind
    (vectors of another meaning, maybe another width) is refused. Stores from before the option read
    the paper's input."""
    path = Path(adapter_dir) / STORE_NAME
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:  # safetensors: never a pickle
        store = {k: f.get_tensor(k) for k in ("inputs", "experts", "tasks")}
        meta = f.metadata() or {}
        store["names"] = json.loads(meta.get("tasks", "[]"))
    stored = meta.get("router_input", RouterInput().kind)
    if reads is not None and stored != reads:
        raise AdapterError(
            f"{path}: the replay store holds router inputs of kind {stored!r}, but this adapter's router reads "
            f"{reads!r}: grow it with the router_input and router_pool it was trained with"
        )
    return store
