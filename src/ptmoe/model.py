"""Former home of the wrapper, kept so older imports keep working. `PtmoeModel` is `AdaptedModel`:
it wraps every method, not only PT-MoE. New code imports from the modules named here."""

from .adapted import AdaptedModel, Output  # noqa: F401
from .generation import greedy_decode, left_align  # noqa: F401
from .inputs import context_mask, position_ids_from_mask  # noqa: F401
from .loss import chunked_cross_entropy  # noqa: F401
from .persistence import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, AdapterError, base_identity, read_adapter_config  # noqa: F401

PtmoeModel = AdaptedModel
