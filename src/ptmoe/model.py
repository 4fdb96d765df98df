"""PtmoeModel: a frozen Hugging Face causal LM plus one method's trainable part.

Prompt methods prepend each example's own prompt to its input embeddings: the sequence is
[prompt, input (with its own padding)], the attention mask is extended, prompt positions get
labels -100, and position ids are the running count of real tokens, so left and right padding
both give each real token the position it has when the example stands alone.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file, save_model
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

from .fsutil import atomic_dir
from .interop.model_card import write_model_card
from .methods import MethodConfig, get_method, make_config

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_VERSION = 1


class AdapterError(ValueError):
    pass


@dataclass
class Output:
    loss: torch.Tensor | None
    logits: torch.Tensor | None = None
    num_label_tokens: int = 0


def base_identity(base: nn.Module) -> dict:
    """Name, sizes and a fingerprint of the embedding matrix (dtype-independent: rounded to bf16)."""
    emb = base.get_input_embeddings().weight.detach()
    rows = emb[:: max(1, emb.shape[0] // 4096)].to(torch.bfloat16).cpu().contiguous()
    digest = hashlib.sha256(rows.view(torch.int16).numpy().tobytes()).hexdigest()[:16]
    return {"name": str(getattr(base.config, "_name_or_path", "")), "hidden_size": int(emb.shape[1]),
            "vocab_size": int(emb.shape[0]), "embedding_fingerprint": digest}


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def context_mask(attention_mask: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The one rule for input-dependent prompts: they read only what the model is given at inference,
    the real tokens before the row's first labelled position (the answer it is asked to produce).
    Labels are aligned with the input (label i is token i). Without labels: every real token."""
    if labels is None:
        return attention_mask
    answered = (labels != -100).long().cumsum(-1) > 0
    return attention_mask * (~answered).to(attention_mask.dtype)


def _ce_chunk_rows(vocab: int, chunk: int | None) -> int:
    """Rows per chunk: at most `chunk`, and about 64 MiB of fp32 logits per chunk by default."""
    auto = max(64, (1 << 24) // max(vocab, 1))
    return max(1, min(chunk, auto) if chunk else auto)


class _FusedLinearCE(torch.autograd.Function):
    """sum_i CE(softcap(h_i W^T + b), t_i), chunk by chunk. The gradients (dL/dh, and dL/dW, dL/db only
    where they require grad) are computed in the same pass, so backward only rescales them: the logits
    are computed once, never stored, never recomputed. Rows with target -100 count 0."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows, softcap):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        total = hidden.new_zeros((), dtype=torch.float32)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        for i in range(0, hidden.shape[0], rows):
            h, t = hidden[i:i + rows], targets[i:i + rows]
            z = nn.functional.linear(h, weight, bias).float()
            if softcap:
                z = torch.tanh(z / softcap).mul_(softcap)
            valid = t != -100
            tc = t.clamp_min(0)
            lse = torch.logsumexp(z, -1)
            total += ((lse - z.gather(1, tc[:, None]).squeeze(1)) * valid).sum()
            if need_h or need_w or need_b:
                g = z if not softcap else z.clone()
                g.sub_(lse[:, None]).exp_()  # softmax
                g.scatter_add_(1, tc[:, None], -valid[:, None].to(g.dtype))
                g.mul_(valid[:, None])
                if softcap:  # d softcap(x) / dx = 1 - tanh^2
                    g.mul_(1 - (z / softcap).square_())
                if need_h:
                    grad_h[i:i + rows] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
                if need_w:
                    grad_w += g.t().to(h.dtype) @ h
                if need_b:
                    grad_b += g.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = lambda g, dtype=None: None if g is None else (g * grad_out).to(dtype or g.dtype)
        return (scale(grad_h), scale(grad_w, ctx.dtypes[0]), scale(grad_b, ctx.dtypes[1]) if grad_b is not None
                else None, None, None, None)


def chunked_cross_entropy(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk: int | None = None,
                          softcap: float | None = None) -> torch.Tensor:
    """Sum of token cross-entropies of head(hidden) against targets (-100 ignored), in chunks of rows:
    no full-vocabulary fp32 copy of the logits ever lives. A plain nn.Linear head goes through a fused
    linear + cross-entropy (gradients in the same pass: one logits matmul instead of two); any other
    head (e.g. adapted by PEFT) through checkpointed chunks whose logits are recomputed in backward."""
    weight = getattr(head, "weight", None)
    if type(head) is nn.Linear and weight is not None and torch.is_grad_enabled():
        rows = _ce_chunk_rows(weight.shape[0], chunk)
        return _FusedLinearCE.apply(hidden, weight, head.bias, targets, rows, softcap)

    def piece(h, t):
        logits = head(h).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return nn.functional.cross_entropy(logits, t, reduction="sum")

    rows = _ce_chunk_rows(getattr(weight, "shape", (32768,))[0], chunk)
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, hidden.shape[0], rows):
        h, t = hidden[i:i + rows], targets[i:i + rows]
        total = total + (checkpoint(piece, h, t, use_reentrant=False) if torch.is_grad_enabled() else piece(h, t))
    return total


class PtmoeModel(nn.Module):
    def __init__(self, base: nn.Module, method: str, config: MethodConfig | dict | None = None,
                 tokenizer=None, seed: int = 0, adapter_name: str = "default"):
        super().__init__()
        spec = get_method(method)
        if not isinstance(config, MethodConfig):
            config = make_config(method, config)
        self.method, self.config, self.spec = method, config, spec
        self._identity = None
        if method == "ft":  # full fine-tuning changes the embeddings: fingerprint the base before training
            if not base.get_input_embeddings().weight.is_meta:  # (count_trainable builds on meta)
                self._identity = base_identity(base)
        else:
            for p in base.parameters():
                p.requires_grad_(False)
        self.prompts = nn.ModuleDict()
        self.active_adapter = adapter_name
        if spec.kind == "prompt":
            g = torch.Generator().manual_seed(seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # router init
                module = spec.build(config, base.get_input_embeddings(), tokenizer, g)
            device = base.get_input_embeddings().weight.device
            self.prompts[adapter_name] = module.to(device)  # stays fp32 even on a bf16 base
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                base = spec.build(config, base)
        self.base = base

    # ---- the underlying pieces -------------------------------------------------------------
    @property
    def identity(self) -> dict:
        if self._identity is None:  # lazily: hashing is skipped where nothing is saved or loaded
            self._identity = base_identity(self.lm)
        return self._identity

    @property
    def lm(self) -> nn.Module:
        """The transformers *ForCausalLM (inside PEFT's wrapper for LoRA)."""
        return self.base.get_base_model() if hasattr(self.base, "get_base_model") else self.base

    @property
    def prompt_module(self):
        return self.prompts[self.active_adapter] if self.spec.kind == "prompt" else None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def gradient_checkpointing_enable(self):
        self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ---- inputs --------------------------------------------------------------------------------
    def build_inputs(self, input_ids, attention_mask, labels=None, adapter_names=None):
        """-> inputs_embeds, attention_mask, position_ids, labels with each example's prompt prepended.
        `adapter_names` (one per row) mixes prompts of several loaded adapters in one batch."""
        embeds = self.lm.get_input_embeddings()(input_ids)
        if self.spec.kind != "prompt":
            return embeds, attention_mask, position_ids_from_mask(attention_mask), labels
        given = context_mask(attention_mask, labels)  # never the answer: see context_mask
        if adapter_names is None:
            prompt = self.prompt_module(embeds, given)
            pmask = attention_mask.new_ones(prompt.shape[:2])
        else:
            prompt, pmask = self._mixed_prompts(embeds, given, adapter_names)
        x = torch.cat([prompt.to(embeds.dtype), embeds], 1)
        mask = torch.cat([pmask, attention_mask], 1)
        if labels is not None:
            labels = torch.cat([labels.new_full(prompt.shape[:2], -100), labels], 1)
        return x, mask, position_ids_from_mask(mask), labels

    def _mixed_prompts(self, embeds, given_mask, adapter_names):
        if len(adapter_names) != embeds.shape[0]:
            raise ValueError(f"adapter_names: {len(adapter_names)} names for a batch of {embeds.shape[0]}")
        unknown = sorted(set(adapter_names) - set(self.prompts))
        if unknown:
            raise ValueError(f"adapter_names: not loaded: {unknown}; loaded: {sorted(self.prompts)}")
        T = max(self.prompts[n].num_tokens for n in set(adapter_names))
        B, _, H = embeds.shape
        prompt = embeds.new_zeros(B, T, H, dtype=torch.float32)
        pmask = given_mask.new_zeros(B, T)
        for name in sorted(set(adapter_names)):
            rows = torch.tensor([i for i, n in enumerate(adapter_names) if n == name], device=embeds.device)
            p = self.prompts[name](embeds[rows], given_mask[rows])
            # left-aligned: the first position of every row stays a real token
            prompt[rows, : p.shape[1]] = p.float()
            pmask[rows, : p.shape[1]] = 1
        return prompt, pmask

    # ---- training forward -----------------------------------------------------------------------
    def forward(self, input_ids, attention_mask, labels=None, return_logits=False, adapter_names=None) -> Output:
        """Fast path (default): the backbone's hidden states, then the LM head only where labels exist,
        in checkpointed chunks. `return_logits=True`: the plain path, full logits and the usual loss."""
        x, mask, pos, labels = self.build_inputs(input_ids, attention_mask, labels, adapter_names)
        lm = self.lm
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        if return_logits or labels is None:
            logits = lm(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=False).logits
            loss = None
            if labels is not None:
                loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                   ignore_index=-100)
            return Output(loss, logits)
        backbone = getattr(lm, lm.base_model_prefix)
        hidden = backbone(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != -100
        h, t = hidden[:, :-1][keep], targets[keep]
        n = t.numel()
        loss = chunked_cross_entropy(h, lm.get_output_embeddings(), t, softcap=softcap) / max(n, 1)
        return Output(loss, None, n)

    def aux_loss(self):
        m = self.prompt_module
        return None if m is None else m.aux_loss

    # ---- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 32, eos_token_id=None,
                 pad_token_id: int = 0, adapter_names=None) -> torch.Tensor:
        """Greedy decoding with the KV cache; the prompt is computed and injected once, at prefill.
        Any padding side works (inputs are left-aligned first). Returns [B, n] new tokens, pad after EOS."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        order = torch.sort(attention_mask, dim=1, stable=True).indices  # pads first: left padding
        input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
        eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
        was_training = self.training
        self.eval()
        lm = self.lm
        x, mask, pos, _ = self.build_inputs(input_ids, attention_mask, adapter_names=adapter_names)
        cache = DynamicCache(config=lm.config)
        out = lm(inputs_embeds=x, attention_mask=mask, position_ids=pos, past_key_values=cache,
                 use_cache=True, logits_to_keep=1)
        B = input_ids.shape[0]
        next_pos = pos[:, -1:] + 1
        done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        eos_t = torch.tensor(sorted(eos), device=input_ids.device, dtype=torch.long)
        new = []
        for step in range(max_new_tokens):
            tok = out.logits[:, -1].argmax(-1)
            tok = torch.where(done, torch.full_like(tok, pad_token_id), tok)
            new.append(tok)
            if len(eos_t):
                done |= torch.isin(tok, eos_t)
            if step == max_new_tokens - 1 or bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(B, 1)], 1)
            out = lm(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache,
                     use_cache=True)
            next_pos = next_pos + 1
        self.train(was_training)
        return torch.stack(new, 1) if new else input_ids.new_zeros(B, 0)

    # ---- adapters ---------------------------------------------------------------------------------
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        if self.spec.kind == "prompt":
            return {k: v.detach().float().contiguous() for k, v in self.prompt_module.state_dict().items()}
        if self.method == "ft":
            return {k: v.detach().contiguous() for k, v in self.lm.state_dict().items()}
        if not hasattr(self.base, "peft_config"):  # hand-written weight method (HydraLoRA): trainable tensors
            return {k: v.detach().contiguous() for k, v in self.base.named_parameters() if v.requires_grad}
        from peft import get_peft_model_state_dict
        return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(self.base).items()}

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Writes adapter_config.json and adapter_model.safetensors atomically (temp dir, then rename)."""
        meta = {"format_version": FORMAT_VERSION, "method": self.method, "config": self.config.to_dict(),
                "base_model": self.identity, "num_trainable": self.num_trainable(), **(extra or {})}
        with atomic_dir(directory) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
            if self.method == "ft":
                save_model(self.lm, str(tmp / WEIGHTS_NAME))  # handles tied weights
            else:
                save_file(self.adapter_state_dict(), str(tmp / WEIGHTS_NAME))
            write_model_card(tmp, meta, final_dir=directory)
        return Path(directory)

    @staticmethod
    def read_adapter_config(directory: str | os.PathLike) -> dict:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise AdapterError(f"{path}: adapter config not found")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise AdapterError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        for key in ("method", "config", "base_model"):
            if key not in meta:
                raise AdapterError(f"{path}: field {key!r} missing")
        if not (Path(directory) / WEIGHTS_NAME).is_file():
            raise AdapterError(f"{Path(directory) / WEIGHTS_NAME}: adapter weights not found")
        return meta

    def check_base(self, meta: dict, where) -> None:
        want, have = meta["base_model"], self.identity
        keys = ("hidden_size", "vocab_size", "embedding_fingerprint")
        if any(want.get(k) != have[k] for k in keys):
            desc = lambda d: (f"{d.get('name') or '?'} (hidden {d.get('hidden_size')}, vocab {d.get('vocab_size')}, "
                              f"fingerprint {d.get('embedding_fingerprint')})")
            raise AdapterError(f"{where}: adapter was trained on base model {desc(want)}, "
                               f"but this base model is {desc(have)}")

    @classmethod
    def from_pretrained(cls, directory, base: nn.Module, tokenizer=None, adapter_name: str = "default"):
        from .interop.peft_format import is_peft_folder, load_peft

        if is_peft_folder(directory):  # a Hugging Face PEFT prompt-tuning or LoRA folder
            return load_peft(directory, base, tokenizer, adapter_name)
        meta = cls.read_adapter_config(directory)
        where = Path(directory) / CONFIG_NAME
        config = make_config(meta["method"], meta["config"], where=str(where))
        model = cls(base, meta["method"], config.for_loading(), tokenizer, adapter_name=adapter_name)
        model.config = config
        model.check_base(meta, where)
        model._load_weights(directory, adapter_name)
        return model

    def load_adapter(self, directory, adapter_name: str):
        """Add another prompt adapter (same base model) for mixed-adapter batches."""
        from .interop.peft_format import is_peft_folder, load_peft_prompt

        if is_peft_folder(directory) and self.spec.kind == "prompt":  # PEFT prompt tuning
            self.prompts[adapter_name] = load_peft_prompt(directory, self.lm)
            return
        meta = self.read_adapter_config(directory)
        where = Path(directory) / CONFIG_NAME
        self.check_base(meta, where)
        spec = get_method(meta["method"])
        if spec.kind != "prompt" or self.spec.kind != "prompt":
            raise AdapterError(f"{where}: only prompt methods can be mixed in one batch "
                               f"(this is {meta['method']!r} on a {self.method!r} model)")
        config = make_config(meta["method"], meta["config"], where=str(where))
        emb = self.lm.get_input_embeddings()
        self.prompts[adapter_name] = spec.build(config.for_loading(), emb, None, torch.Generator().manual_seed(0)).to(emb.weight.device)
        self._load_weights(directory, adapter_name)

    def _load_weights(self, directory, adapter_name):
        path = Path(directory) / WEIGHTS_NAME
        try:
            state = load_file(str(path))  # safetensors only: never a pickle
        except Exception as e:
            raise AdapterError(f"{path}: cannot read safetensors ({e})") from None
        if self.spec.kind == "prompt":
            target = self.prompts[adapter_name]
            expected = target.state_dict()
            missing = sorted(set(expected) - set(state))
            bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
            if missing or bad:
                raise AdapterError(f"{path}: tensors missing {missing} or of wrong shape {bad}")
            target.load_state_dict(state)
        elif self.method == "ft":
            self.lm.load_state_dict(state, strict=False)
        elif not hasattr(self.base, "peft_config"):
            expected = {k: v.shape for k, v in self.base.named_parameters() if v.requires_grad}
            missing = sorted(set(expected) - set(state))
            bad = sorted(k for k in state if k not in expected or state[k].shape != expected[k])
            if missing or bad:
                raise AdapterError(f"{path}: tensors missing {missing[:3]} or unexpected / of wrong shape {bad[:3]}")
            self.base.load_state_dict(state, strict=False)
        else:
            from peft import set_peft_model_state_dict
            res = set_peft_model_state_dict(self.base, state)
            if getattr(res, "unexpected_keys", None):
                raise AdapterError(f"{path}: unexpected tensors {res.unexpected_keys[:3]}")
