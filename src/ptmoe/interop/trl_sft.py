"""TRL's SFTTrainer for a ptmoe AdaptedModel (the `trl` extra). docs/trainers.md.

TRL (1.16) takes a model id, a PreTrainedModel or a PeftModel. It reads `model.config` as a transformers
config (an AdaptedModel's `config` is its method's options) and patches the model's forward with its fused
LM head, computing the loss itself from the per-token log-probabilities the patched head returns. An
AdaptedModel prepends its prompt before the base model runs and adds its router's terms to the loss, so
that head cannot stand in for it. `AdapterSFTTrainer` is SFTTrainer with three changes: SFTTrainer sets up
seeing the base model's config (and model-card tags), the patched forward is taken off again, and the loss is the
model's own (transformers' `Trainer.compute_loss`). Checkpoints are adapter folders (`AdapterCheckpoints`).
Give it encoded rows (`training_rows`, as a `datasets.Dataset`), `collator_for(...)` as the collator and
`dataset_kwargs={"skip_prepare_dataset": True}`: ptmoe's prompt format replaces TRL's dataset preparation.
"""

from __future__ import annotations

from contextlib import contextmanager

from transformers import Trainer
from trl import SFTTrainer

from .trainers import AdapterCheckpoints


@contextmanager
def _seen_as_base(model):
    """While SFTTrainer sets up: `config` and `add_model_tags` are the base model's."""
    method_config = model.config
    model.config, model.add_model_tags = model.lm.config, model.lm.add_model_tags
    try:
        yield
    finally:
        model.config = method_config
        del model.add_model_tags


class AdapterSFTTrainer(AdapterCheckpoints, SFTTrainer):
    def __init__(self, model, args, *rest, **kwargs):
        if args is None or not (args.dataset_kwargs or {}).get("skip_prepare_dataset"):
            raise ValueError(
                "AdapterSFTTrainer: pass an SFTConfig with dataset_kwargs={'skip_prepare_dataset': True} and encoded "
                "rows (ptmoe.interop.trainers.training_rows): ptmoe formats its prompts itself"
            )
        with _seen_as_base(model):
            super().__init__(model, args, *rest, **kwargs)
        vars(model).pop("forward", None)  # TRL's fused-head forward, set on the instance: the model's own again

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
