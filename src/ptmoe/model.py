"""Former home of the wrapper, kept so older imports keep working; importing it warns once. `PtmoeModel`
is `AdaptedModel` (ptmoe.adapted): it wraps every method, not only PT-MoE. New code imports from the
modules named here."""

import warnings

warnings.warn(
    "ptmoe.model is deprecated: import AdaptedModel (formerly PtmoeModel) from ptmoe.adapted, and the "
    "rest from ptmoe.generation, ptmoe.inputs, ptmoe.loss and ptmoe.persistence",
    DeprecationWarning,
    stacklevel=2,
)

from .adapted import AdaptedModel, Output  # noqa: E402, F401
from .generation import greedy_decode, left_align  # noqa: E402, F401
from .inputs import context_mask, position_ids_from_mask  # noqa: E402, F401
from .loss import chunked_cross_entropy  # noqa: E402, F401
from .persistence import (  # noqa: E402, F401
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    AdapterError,
    base_identity,
    read_adapter_config,
)

PtmoeModel = AdaptedModel
