"""Run configs: YAML files with dotted key=value overrides on the command line.

Every key, its default, type and meaning is in schema.py, so a config file names only what
differs; an unknown key or a wrong value is a one-line error that names it, raised here, before
any model or data is loaded. Relative data paths in a config file are read from the file's folder.
`ptmoe config show [CONFIG] [key=value ...]` prints the resolved config; `ptmoe config doc` writes
docs/config.md from the same table (reference.py).
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import yaml

from .schema import LEAF_MAPPINGS, METHODS, SCHEMA, ConfigError


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = copy.deepcopy(value)
    return out


DEFAULTS: dict = _nest({k: d for k, (d, _, _) in SCHEMA.items()})
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".gz")


class Loader(yaml.SafeLoader):
    """YAML as people write numbers: `5e-5` and `1e-2` are floats (YAML 1.1 reads them as strings)."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def parse_value(text: str):
    """A command-line value as YAML: 1 -> int, 5e-5 -> float, true -> bool, [a, b] -> list, else the text."""
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError:
        return text


def parse_override(item: str) -> dict:
    """'train.lr=0.1' -> {'train': {'lr': 0.1}}."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, value = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value")
    return _nest({key.strip(): parse_value(value)})


def merge(base: dict, over: dict, where: str | None = None, path: str = "") -> dict:
    """`over` merged into a copy of `base`, recursively. With `where` (a config), every key must be a
    known one (the error names it) and mapping-valued keys (method_options, ...) are merged one level;
    without it (a compare file's own keys) anything goes."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{path}{k}"
        if where is not None and k not in base:
            raise ConfigError(f"{where}: unknown key {key!r}")
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            if where is not None and key in LEAF_MAPPINGS:
                out[k] = {**out[k], **v}
            else:
                out[k] = merge(out[k], v, where, key + ".")
        elif where is not None and isinstance(out.get(k), dict) and key not in LEAF_MAPPINGS and v is not None:
            raise ConfigError(f"{where}: key {key!r} must be a mapping, got {v!r}")
        else:
            out[k] = v
    return out


def read_config_file(path) -> dict:
    """The mapping in a YAML file, its relative data file paths made relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(), Loader=Loader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    data_section = data.get("data")
    if isinstance(data_section, dict):
        for key in ("train", "eval"):
            v = data_section.get(key)
            if isinstance(v, (str, list)):
                data_section[key] = [_beside(path, s) for s in ([v] if isinstance(v, str) else v)]
    return data


def _beside(config: Path, spec):
    """A relative data file named in a config file is found next to the config file."""
    if not isinstance(spec, str) or spec.startswith("hf:") or Path(spec).expanduser().is_absolute():
        return spec
    candidate = config.parent / spec
    return str(candidate) if candidate.exists() or spec.endswith(DATA_SUFFIXES) else spec


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None, note=None
) -> dict:
    """Defaults < config file < overrides, validated. `method=` given as an override switches the
    method: options inherited from the file that the new method lacks are dropped, and so is an inherited
    preset the new method does not define (each said in one line through `note`)."""
    note = note or (lambda msg: print(msg, file=sys.stderr))
    if path and "=" in str(path) and not Path(path).exists():  # no config file, only overrides
        path, overrides = None, [str(path), *(overrides or [])]
    cfg = copy.deepcopy(base or DEFAULTS)
    if path:
        cfg = merge(cfg, read_config_file(path), str(path))
    inherited_method, inherited_preset = cfg["method"], cfg["preset"]
    explicit_options: set = set()
    for item in overrides or []:
        over = parse_override(item)
        if isinstance(over.get("method_options"), dict):
            explicit_options |= set(over["method_options"])
        cfg = merge(cfg, over, f"override {item!r}")
    if cfg["method"] != inherited_method:
        switch_method(cfg, inherited_method, inherited_preset, explicit_options, note)
    return validate(cfg)


def switch_method(cfg: dict, old: str, old_preset, explicit: set, note) -> None:
    """cfg's method changed from `old`: drop the inherited options and preset that belong to `old` only."""
    # on use: these import torch, and `ptmoe config`, --help and config checks start without it
    from .presets import PRESETS

    method = cfg["method"]
    if method not in METHODS:  # validate() names it
        return
    from ..methods import get_method

    known = {f for f in get_method(method).config_cls.__dataclass_fields__}
    dropped = sorted(k for k in cfg["method_options"] if k not in known and k not in explicit)
    for k in dropped:
        del cfg["method_options"][k]
    if dropped:
        note(f"[config] method={method}: dropped method_options {', '.join(dropped)} (options of {old})")
    if cfg["preset"] and cfg["preset"] == old_preset and cfg["preset"] not in PRESETS.get(method, {}):
        note(f"[config] method={method}: dropped preset {cfg['preset']!r} (a preset of {old})")
        cfg["preset"] = None


def validate(cfg: dict) -> dict:
    """Check every key (types, ranges, the model name, data files, the output folder, the method's
    options and preset); numbers written as strings are converted in place. Returns cfg."""
    for key, (_, kind, _) in SCHEMA.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = kind.check(node[leaf], key)
    # on use: these import torch, and `ptmoe config`, --help and config checks start without it
    from ..base_models import check_model_name
    from ..data.readers import parse_columns
    from ..methods import make_config
    from .presets import apply_preset

    _check_columns(cfg["data"], parse_columns)
    check_model_name(cfg["model"])
    for key in ("train", "eval"):
        for spec in cfg["data"][key]:
            _check_data(spec, f"data.{key}")
    out = str(cfg["output_dir"])
    try:
        folder = Path(out.format(method=cfg["method"], seed=cfg["seed"]))
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"output_dir: only {{method}} and {{seed}} can be filled in, got {out!r}") from None
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output_dir: {folder} is a file, not a folder")
    expanded = apply_preset(cfg)
    make_config(cfg["method"], expanded["method_options"], where="method_options")
    check_grow(cfg)
    return cfg


def check_grow(cfg: dict) -> None:
    """The grow section against the method: only a method whose spec declares it `growable` adds experts
    or keeps a replay store."""
    # on use: these import torch, and `ptmoe config`, --help and config checks start without it
    from ..methods import REGISTRY, get_method

    g = cfg["grow"]
    for key in ("experts", "store_size"):
        if g[key] and not get_method(cfg["method"]).growable:
            growable = ", ".join(n for n, s in REGISTRY.items() if s.growable)
            raise ConfigError(
                f"grow.{key}: only a routed method with experts can grow or keep a replay store "
                f"({growable}); method is {cfg['method']!r}"
            )
    if g["experts"] and not cfg["init_from"]:
        raise ConfigError("grow.experts: growing needs the adapter to grow from: `ptmoe train CONFIG --from ADAPTER`")
    if g["router_fit_steps"] and not g["experts"]:
        raise ConfigError("grow.router_fit_steps: fits the new router rows of a run that grows (grow.experts >= 1)")
    if g["router_fit_steps"] and not (g["replay_weight"] > 0 or g["route_weight"] > 0):
        raise ConfigError("grow.router_fit_steps: fits the router on its replay and route losses; both weights are 0")


def _check_data(spec: str, key: str) -> None:
    if spec.startswith("hf:") or Path(spec).expanduser().exists():
        return
    if spec.endswith(DATA_SUFFIXES) or not re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        raise ConfigError(
            f"{key}: no such file {spec!r} (relative paths in a config file are read from its "
            f"folder, on the command line from the working directory)"
        )


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def resolved(cfg: dict) -> dict:
    """cfg with its preset expanded and every method option spelled out with its default."""
    # on use: these import torch, and `ptmoe config`, --help and config checks start without it
    from ..methods import make_config
    from .presets import apply_preset

    out = apply_preset(cfg)
    out["method_options"] = make_config(out["method"], out["method_options"]).to_dict()
    return out


def _check_columns(data: dict, parse_columns) -> None:
    """data.columns: one mapping for every file, or per data set, each naming a data set of the config."""
    # on use, as validate's data readers: loading a config imports no data code
    from ..data.load import columns_for, per_set_columns

    columns = data["columns"]
    for key, mapping in columns.items() if per_set_columns(columns) else [(None, columns)]:
        where = "data.columns" if key is None else f"data.columns.{key}"
        try:
            parse_columns(mapping)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        specs = [*data["train"], *data["eval"]]
        if key is not None and not any(columns_for({key: mapping}, s) is mapping for s in specs):
            raise ConfigError(f"{where}: names no data set of data.train / data.eval ({', '.join(map(str, specs))})")
