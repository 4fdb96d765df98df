"""ptmoe: PT-MoE and the soft-prompt baselines for frozen causal language models."""

import importlib
import warnings

__version__ = "0.1.0"

# Imported on first use, so `ptmoe --help` and `ptmoe data list` start without torch.
_EXPORTS = {
    "AdaptedModel": "adapted",
    "PtmoeModel": "adapted",  # the former name of AdaptedModel
    "AdapterError": "persistence",
    "load_base_model": "base_models",
    "DEFAULT_MODEL": "base_models",
    "encode": "data.format",
    "get_method": "methods",
    "make_config": "methods",
    "METHODS": "methods",
}
__all__ = [name for name in _EXPORTS if name != "PtmoeModel"]
_warned: set = set()


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ptmoe' has no attribute {name!r}")
    if name == "PtmoeModel" and name not in _warned:  # a former name: once per process
        _warned.add(name)
        warnings.warn(
            "ptmoe.PtmoeModel is deprecated: it is AdaptedModel (from ptmoe import AdaptedModel, or ptmoe.adapted)",
            DeprecationWarning,
            stacklevel=2,
        )
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    return getattr(module, {"METHODS": "REGISTRY", "PtmoeModel": "AdaptedModel"}.get(name, name))
