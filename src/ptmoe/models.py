"""Former name of `ptmoe.base_models` (base models by name), kept so older imports keep working:
`ptmoe.models` is the same module object."""

import sys

from . import base_models

sys.modules[__name__] = base_models
