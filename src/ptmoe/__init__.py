"""ptmoe: PT-MoE and the soft-prompt baselines for frozen causal language models."""
from .methods import REGISTRY as METHODS, get_method, make_config
from .model import AdapterError, PtmoeModel
from .models import DEFAULT_MODEL, load_base_model

__all__ = ["METHODS", "get_method", "make_config", "PtmoeModel", "AdapterError", "load_base_model", "DEFAULT_MODEL"]
__version__ = "0.1.0"
