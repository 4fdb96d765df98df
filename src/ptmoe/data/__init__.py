"""Data layer: prepared benchmark sets, local/HF readers, prompt formatting."""

from .load import check_prepared, eval_subset, load_eval_set, load_examples, load_set
from .readers import DataError
from .sources import list_sets, load_split, prepare, set_states

__all__ = [
    "DataError",
    "check_prepared",
    "eval_subset",
    "load_eval_set",
    "load_examples",
    "load_set",
    "list_sets",
    "load_split",
    "prepare",
    "set_states",
]
