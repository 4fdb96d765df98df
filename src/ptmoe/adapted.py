"""AdaptedModel: a frozen Hugging Face causal LM plus one method's adapter (or several mixable ones).

It asks the adapter, never the method's name: what prompt to prepend (`inputs.py`), what to save and
load (`persistence.py`), its routing and auxiliary loss. The loss is in `loss.py`, decoding in
`generation.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from transformers.utils import ModelOutput

from . import lean_backbone, persistence
from .collate import pad_batch
from .generation import check_cache, greedy_decode, left_align
from .inputs import context_mask, mixed_prompts, prepend_prompt
from .interop.peft_format import check_mixable, is_peft_folder, read_peft  # PEFT folders load like ours
from .loss import label_loss, logits_and_loss
from .methods import PROMPT, Adapter, MethodConfig, PromptCall, Routing, get_method, make_config
from .methods.router_input import RouterInput
from .persistence import CONFIG_NAME, AdapterError


@dataclass
class Output(ModelOutput):
    """A transformers ModelOutput. `loss`: what training minimises, the mean token loss where labels exist
    plus, in training mode, the adapter's auxiliary terms (load balancing, z-loss, ...); `logits`: only on
    the plain path. Outside the mapping, as attributes, so that the Trainer's evaluation (which takes every
    entry but the loss for a prediction) sees only these two: `label_loss` (the mean token loss alone),
    `num_label_tokens` (how many tokens it averages), `routing` (what the adapter's router chose for each
    row of this call, a `Routing`; None: not routed, or rows of several adapters) and `aux_loss` (the
    adapter's extra loss terms of this call, or None)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None

    @classmethod
    def of(cls, loss, logits, label_loss, num_label_tokens: int, call: PromptCall | None = None) -> "Output":
        out = cls(loss=loss, logits=logits)
        out.label_loss, out.num_label_tokens = label_loss, num_label_tokens
        out.routing, out.aux_loss = (call.routing, call.aux_loss) if call is not None else (None, None)
        return out


class AdaptedModel(nn.Module):
    """`lm`: the transformers *ForCausalLM (weight methods change it in place); `adapters`: name -> Adapter."""

    def __init__(
        self,
        base: nn.Module,
        method: str,
        config: MethodConfig | dict | None = None,
        tokenizer=None,
        seed: int = 0,
        adapter_name: str = "default",
    ):
        super().__init__()
        spec = get_method(method)
        if not isinstance(config, MethodConfig):
            config = make_config(method, config)
        self.method, self.config, self.spec = method, config, spec
        self.identity = persistence.base_identity(base)  # before any method (full FT) changes the base
        base.requires_grad_(False)
        self.lm = base
        self.adapters = nn.ModuleDict({adapter_name: spec.build(config, base, tokenizer, seed)})
        lean_backbone.install(base)  # after the method (LoRA wraps projections): used by label_loss only
        self.active_adapter = adapter_name
        # the latest call's routing and loss terms (detached), for `routing` / `aux_loss()`: inspection only
        self.last_call: tuple[Routing | None, torch.Tensor | None] = (None, None)
        self.saved_with: dict = {}  # extra adapter_config.json fields (a grown adapter's lineage)
        self.sidecar_files: dict = {}  # file name -> () -> (tensors, metadata), saved beside the weights

    # ---- the pieces ---------------------------------------------------------------------------------
    @property
    def adapter(self) -> Adapter:
        return self.adapters[self.active_adapter]

    @property
    def prompt_module(self):
        """The active adapter where it makes a soft prompt, else None."""
        return self.adapter if self.adapter.changes == PROMPT else None

    @property
    def routing(self) -> Routing | None:
        """What the router chose on the model's latest forward or generate, for a look from outside (None:
        not routed, not called, or rows of several adapters); the library reads each call's own record
        (`Output.routing`, `generate(..., return_routing=True)`)."""
        return self.last_call[0]

    @torch.no_grad()
    def pooled_inputs(self, rows: list[dict], pad_id: int, batch_size: int = 32) -> torch.Tensor:
        """What a routed prompt reads of each encoded row: its router input (the active adapter's
        `router_features`: pooled input embeddings or hidden states, `methods/router_input.py`; the paper's
        input for an adapter without a router) over the context (`context_mask`, never the answer), [n, H]
        fp32 on the model's device."""
        emb = self.lm.get_input_embeddings()
        read = getattr(self.adapter, "router_features", None) or partial(RouterInput(), self.lm)
        out = []
        for i in range(0, len(rows), batch_size):
            b = {k: v.to(emb.weight.device) for k, v in pad_batch(rows[i : i + batch_size], pad_id).items()}
            out.append(read(emb(b["input_ids"]), context_mask(b["attention_mask"], b["labels"])))
        return torch.cat(out) if out else torch.zeros(0, emb.weight.shape[1], device=emb.weight.device)

    @torch.no_grad()
    def init_from_data(self, rows: list[dict], seed: int = 0):
        """Let the adapter start from encoded training rows (what its prompt may read of each: the
        context before the answer, `context_mask`): their router inputs and token embeddings.
        Returns the adapter's note, or None."""
        embed = self.lm.get_input_embeddings()
        device = embed.weight.device
        texts = []
        for r in rows:
            ids = torch.tensor(r["input_ids"], device=device)[None]
            mask = context_mask(torch.ones_like(ids), torch.tensor(r["labels"], device=device)[None])
            texts.append(embed(ids[mask.bool()]).float())
        pooled = self.pooled_inputs(rows, pad_id=0) if rows else torch.zeros(0, embed.weight.shape[1])
        return self.adapter.init_from_data(pooled, texts, torch.Generator().manual_seed(seed))

    def aux_loss(self) -> torch.Tensor | None:
        """The adapter's extra loss terms of the latest call (as `routing`); training reads `Output.loss`."""
        return self.last_call[1]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **options):
        """Checkpoint the frozen base's layers (the Trainer's `gradient_checkpointing=True` calls this with its
        kwargs; `every_n_layers`, `offload` pass through). Non-reentrant unless asked otherwise, so the prompt
        gets gradients through checkpointed layers."""
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        # transformers 5.2x renamed the call (the old name warns on every use); PeftModel forwards either name
        if hasattr(self.lm, "activation_checkpointing_enable"):
            self.lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, **options)
        else:
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs, **options)

    def gradient_checkpointing_disable(self):
        (getattr(self.lm, "activation_checkpointing_disable", None) or self.lm.gradient_checkpointing_disable)()

    # ---- inputs, loss, generation ---------------------------------------------------------------------
    def build_inputs(self, input_ids, attention_mask, labels=None, adapter_names=None, row_sources=None):
        """-> inputs_embeds, attention_mask, position_ids, labels with each example's prompt prepended.
        `adapter_names` (one per row) mixes prompts of several loaded adapters in one batch; `row_sources`
        (each row's data set) is passed to an adapter that routes by it."""
        return self._prompted(input_ids, attention_mask, labels, adapter_names, row_sources)[0]

    def _prompted(self, input_ids, attention_mask, labels, adapter_names, row_sources):
        """build_inputs' four tensors and the call's record (PromptCall; None without a prompt)."""
        embeds = self.lm.get_input_embeddings()(input_ids)
        given = context_mask(attention_mask, labels)  # never the answer: see context_mask
        sources = None if row_sources is None else list(row_sources)
        if adapter_names is not None and len(set(adapter_names)) == 1:  # one adapter after all
            adapter_names, adapter = None, self.adapters[_known(self.adapters, adapter_names[0])]
        else:
            adapter = self.adapter
        if adapter_names is None:
            call = adapter.prompt_call(embeds, given, sources)
            inputs = prepend_prompt(embeds, attention_mask, labels, None if call is None else call.prompt)
        else:  # rows of several adapters: no one routing record or loss term for the batch
            call = None
            inputs = prepend_prompt(
                embeds, attention_mask, labels, *mixed_prompts(self.adapters, embeds, given, adapter_names, sources)
            )
        # no prompt and no graph held past the call
        aux = None if call is None or call.aux_loss is None else call.aux_loss.detach()
        self.last_call = (None if call is None else call.routing, aux)
        return inputs, call

    accepts_loss_kwargs = True  # transformers' Trainer: pass num_items_in_batch, the loss handles accumulation

    def forward(
        self,
        input_ids,
        attention_mask=None,
        labels=None,
        return_logits=False,
        adapter_names=None,
        num_items_in_batch=None,
        row_sources=None,
        **ignored,
    ) -> Output:
        """Fast path (default): the backbone's hidden states, then the LM head only where labels exist,
        in chunks. `return_logits=True` (or no labels): the plain path, full logits and the usual loss.
        What transformers' Trainer passes is taken: `num_items_in_batch` (the label tokens of the whole
        accumulated batch, see `_objective`), `row_sources` (each row's data set, read by an adapter that
        routes by it); other keyword arguments (a dataset's extra columns) are ignored."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        (x, mask, pos, labels), call = self._prompted(input_ids, attention_mask, labels, adapter_names, row_sources)
        if return_logits or labels is None:
            logits, mean = logits_and_loss(self.lm, x, mask, pos, labels)
            n = 0 if labels is None else int((labels[:, 1:] != -100).sum())
        else:
            logits, (mean, n) = None, label_loss(self.lm, x, mask, pos, labels)
        aux = call.aux_loss if call is not None and self.training else None
        return Output.of(self._objective(mean, n, num_items_in_batch, aux), logits, mean, n, call)

    def _objective(self, mean, n: int, num_items_in_batch, aux=None):
        """The token loss plus, in training, the adapter's auxiliary terms. Given `num_items_in_batch` (label
        tokens of every micro-batch of the step, on every process: the Trainer's, and `ptmoe train`'s), both
        are weighed by this batch's share of those tokens: summed over the accumulated micro-batches that is
        the token mean of the whole step (the Trainer then does not divide by the accumulation steps).
        The token mean is scaled as `mean * n / N` and the auxiliary terms by `n / N`, in that order: with one
        micro-batch the gradients are bit for bit those of earlier releases' `ptmoe train`, so its adapters are."""
        if mean is None:
            return None
        if num_items_in_batch is None:
            return mean if aux is None else mean + aux
        total = max(int(num_items_in_batch), 1)
        loss = mean * n / total
        return loss if aux is None else loss + aux * (n / total)

    @torch.no_grad()
    def generate(
        self,
        input_ids,
        attention_mask=None,
        max_new_tokens: int = 32,
        eos_token_id=None,
        pad_token_id: int = 0,
        adapter_names=None,
        cache: str | None = None,
        row_sources=None,
        return_routing: bool = False,
    ) -> torch.Tensor:
        """Greedy decoding with the KV cache; the prompt is computed and injected once, at prefill.
        Any padding side works (inputs are left-aligned first). Returns [B, n] new tokens, pad after EOS.
        `cache`: "dynamic", "static" (CUDA: with compiled decode steps) or None (dynamic; generation.py);
        see `generation`. Every choice gives the same tokens. `row_sources`: each row's data set (an adapter
        that routes by it); `return_routing`: -> (tokens, the prompt's Routing or None)."""
        check_cache(cache)
        input_ids, attention_mask = left_align(input_ids, attention_mask)
        was_training = self.training
        self.eval()
        try:
            (x, mask, pos, _), call = self._prompted(input_ids, attention_mask, None, adapter_names, row_sources)
            tokens = greedy_decode(self.lm, x, mask, pos, max_new_tokens, eos_token_id, pad_token_id, cache)
            return (tokens, None if call is None else call.routing) if return_routing else tokens
        finally:
            self.train(was_training)

    # ---- saving and loading -------------------------------------------------------------------------------
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return self.adapter.adapter_state()

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Writes adapter_config.json and adapter_model.safetensors atomically (temp dir, then rename)."""
        files = {name: make() for name, make in self.sidecar_files.items()}
        return persistence.write_adapter(directory, persistence.adapter_meta(self, extra), self.adapter, files)

    def state_dict(self, *args, **kwargs):
        """Alone: the adapter and its config, never the frozen base (what transformers' plain Trainer saves:
        persistence.trainer_state; the base's is `model.lm.state_dict()`). With torch's arguments: every tensor."""
        if args or kwargs:
            return super().state_dict(*args, **kwargs)
        return persistence.trainer_state(persistence.adapter_meta(self), self.adapter_state_dict())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """`state_dict()`'s dict back (the same method and base model, else one line); others as torch loads them."""
        if persistence.CONFIG_KEY in state_dict:
            return persistence.load_trainer_state(self, state_dict)
        return super().load_state_dict(state_dict, strict, assign)

    read_adapter_config = staticmethod(persistence.read_adapter_config)

    def check_base(self, meta: dict, where) -> None:
        persistence.check_base(meta, self.identity, where)

    @classmethod
    def from_pretrained(cls, directory, base: nn.Module, tokenizer=None, adapter_name: str = "default"):
        if is_peft_folder(directory):  # a Hugging Face PEFT prompt-tuning or LoRA folder
            method, options, fill = read_peft(directory, base)
            model = cls(base, method, options, tokenizer, adapter_name=adapter_name)
            fill(model)
            model.peft_source = str(directory)
            return model
        meta = persistence.read_adapter_config(directory)
        where = Path(directory) / CONFIG_NAME
        config = make_config(meta["method"], meta["config"], where=str(where))
        model = cls(base, meta["method"], config.for_loading(), tokenizer, adapter_name=adapter_name)
        model.config = config
        model.check_base(meta, where)
        model.load_weights(directory, adapter_name)
        return model

    def load_adapter(self, directory, adapter_name: str):
        """Add another adapter (same base model) for mixed-adapter batches: both must be mixable."""
        if is_peft_folder(directory) and self.spec.mixable:  # PEFT prompt tuning
            check_mixable(directory)
            self.adapters[adapter_name] = type(self).from_pretrained(directory, self.lm).prompt_module
            return
        meta = persistence.read_adapter_config(directory)
        where = Path(directory) / CONFIG_NAME
        self.check_base(meta, where)
        spec = get_method(meta["method"])
        if not (spec.mixable and self.spec.mixable):
            raise AdapterError(
                f"{where}: only prompt methods (mixable ones) can be mixed in one batch "
                f"(this is {meta['method']!r} on a {self.method!r} model)"
            )
        config = make_config(meta["method"], meta["config"], where=str(where))
        self.adapters[adapter_name] = spec.build(config.for_loading(), self.lm)
        self.load_weights(directory, adapter_name)

    def load_weights(self, directory, adapter_name: str | None = None) -> None:
        persistence.load_weights(directory, self.adapters[adapter_name or self.active_adapter])


def _known(adapters, name: str) -> str:
    if name not in adapters:
        raise ValueError(f"adapter_names: not loaded: {[name]}; loaded: {sorted(adapters)}")
    return name
