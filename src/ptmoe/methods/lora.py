"""LoRA through PEFT: rank and target modules configurable (the paper: rank 1 on q_proj, v_proj)."""

from dataclasses import dataclass, field

from .base import MethodConfig, MethodSpec, WeightAdapter, check_state, linear_shapes, register


@dataclass
class LoRAConfig(MethodConfig):
    r: int = 1
    alpha: float = 2.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


class PeftLoRA(WeightAdapter):
    peft_type = "LORA"  # exported to (and loaded from) PEFT folders
    """PEFT injects its LoRA layers into the model in place; its wrapper is kept (unowned) for PEFT's
    own state-dict functions, so saved keys are PEFT's."""

    def __init__(self, cfg: LoRAConfig, lm):
        # peft is slow to import; only a LoRA adapter needs it
        from peft import LoraConfig, get_peft_model

        peft_cfg = LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(lm, peft_cfg)
        super().__init__(peft_model.get_base_model())
        self.__dict__["peft_model"] = peft_model

    def adapter_state(self):
        # peft is slow to import; only a LoRA adapter needs it
        from peft import get_peft_model_state_dict

        return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(self.peft_model).items()}

    def load_adapter_state(self, state):
        # peft is slow to import; only a LoRA adapter needs it
        from peft import set_peft_model_state_dict

        check_state(state, {k: v.shape for k, v in self.adapter_state().items()})
        set_peft_model_state_dict(self.peft_model, state)

    def remove(self):
        self.peft_model.unload()  # PEFT puts the original linear layers back


def _count(c, m):
    return sum(c.r * (i + o) for i, o in linear_shapes(m, c.target_modules))


register(MethodSpec("lora", LoRAConfig, PeftLoRA, num_params=_count))
