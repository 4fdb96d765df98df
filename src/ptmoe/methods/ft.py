"""Full fine-tuning: every weight of the base model trains, and every weight is saved."""

from dataclasses import dataclass

from safetensors.torch import save_model

from .base import MethodConfig, MethodSpec, WeightAdapter, check_state, register


@dataclass
class FTConfig(MethodConfig):
    pass


class FullFineTuning(WeightAdapter):
    def __init__(self, cfg: FTConfig, lm):
        super().__init__(lm)
        lm.requires_grad_(True)

    def adapter_state(self):
        return {k: v.detach().contiguous() for k, v in self.lm.state_dict().items()}

    def load_adapter_state(self, state):
        # tied weights are saved once (save_model), so a key may be absent; none may be unknown or misshapen
        expected = {k: v.shape for k, v in self.lm.state_dict().items()}
        check_state(state, {k: shape for k, shape in expected.items() if k in state})
        self.lm.load_state_dict(state, strict=False)

    def save_weights(self, path):
        save_model(self.lm, str(path))  # handles tied weights


register(MethodSpec("ft", FTConfig, FullFineTuning))
