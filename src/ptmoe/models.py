"""Former name of `ptmoe.base_models` (base models by name), kept so older imports keep working; importing
it warns once. `ptmoe.models` is the same module object."""

import sys
import warnings

from . import base_models

warnings.warn("ptmoe.models is deprecated: import from ptmoe.base_models", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = base_models
