"""The `ptmoe` model for lm-evaluation-harness 0.4.x.

It is lm-eval's own Hugging Face class (HFLM: tokenisation, request ordering, batching, stop-sequence
handling, chat templates) with two model calls replaced so that every method's adapter is applied:
  - log-likelihoods run through `PtmoeModel.build_inputs` with the continuation marked as labels, so an
    input-dependent prompt is routed on the context alone (`ptmoe.inputs.context_mask`), never on the
    continuation being scored;
  - generation runs `PtmoeModel.generate` (greedy, KV cache, the prompt injected once at prefill).
Registered by importing this module; `ptmoe lm-eval ...` does that before lm-eval's own CLI runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator
from tqdm.auto import tqdm

from ..base_models import DEFAULT_MODEL
from ..data.format import render_user_turn, special_ids
from ..evaluation.evaluate import load_for_eval

GREEDY_ONLY = ("do_sample", "temperature")


@register_model("ptmoe")
class PtmoeLM(HFLM):
    """`lm_eval --model ptmoe --model_args pretrained=NAME,adapter=DIR` (NAME as `ptmoe --model` takes it;
    DIR a ptmoe or PEFT adapter folder; no adapter = the base model), or `PtmoeLM(model=<PtmoeModel>,
    tokenizer=tok)` for `lm_eval.simple_evaluate(model=...)`."""

    def __init__(
        self,
        pretrained: str = DEFAULT_MODEL,
        adapter: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int | str = 1,
        max_length: int | None = None,
        model=None,
        tokenizer=None,
        **kwargs,
    ):
        if str(batch_size).startswith("auto"):
            raise ValueError("model_args batch_size: the ptmoe model takes a number, not 'auto'")
        if model is None:
            if not device or (device.startswith("cuda") and not torch.cuda.is_available()):
                device = "cuda" if torch.cuda.is_available() else "cpu"  # lm-eval's --device defaults to cuda
            dev = torch.device(device)
            model, tokenizer = load_for_eval({"model": pretrained, "dtype": dtype}, adapter, dev)
        elif tokenizer is None:
            raise ValueError("PtmoeLM(model=...): pass the base model's tokenizer too")
        model.eval()
        chat = bool(getattr(tokenizer, "chat_template", None))
        for key in ("peft", "delta", "parallelize", "tp_plan"):
            if kwargs.get(key):
                raise ValueError(f"model_args {key}: not supported by the ptmoe model (use adapter=DIR)")
        # chat templates carry their own special tokens: encode prompts as training does (data.format._ids)
        super().__init__(
            pretrained=model.lm,
            tokenizer=tokenizer,
            batch_size=int(batch_size),
            max_length=max_length,
            add_bos_token=False if chat else None,
            logits_cache=False,
            **kwargs,
        )
        self.ptmoe = model
        self.adapter = adapter

    @property
    def prompt_length(self) -> int:
        pm = self.ptmoe.prompt_module
        return pm.num_tokens if pm is not None else 0

    @property
    def max_length(self) -> int:
        return super().max_length - self.prompt_length  # the soft prompt takes positions too

    # ---- log-likelihood ----------------------------------------------------------------------------
    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """(sum of log p(continuation | context), continuation is greedy) per (key, context ids,
        continuation ids). Rows are right-padded; the continuation tokens inside the input are labels,
        so the prompt reads only the context. No shared-logits cache across requests: the prompt of
        `ctx + cont[:-1]` depends on where the context ends."""
        re_ord = Collator(requests, sort_fn=lambda r: (-len(r[1]) - len(r[2]), tuple(r[1] + r[2])))
        res = []
        pbar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="loglikelihood (ptmoe)")
        pad = self.tokenizer.pad_token_id or 0
        for chunk in re_ord.get_batched(n=override_bs or self.batch_size):
            inps = [(ctx + cont)[-(self.max_length + 1) :][:-1] for _, ctx, cont in chunk]
            L = max(len(x) for x in inps)
            ids = torch.full((len(chunk), L), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for i, ((_, _, cont), inp) in enumerate(zip(chunk, inps)):
                ids[i, : len(inp)] = torch.tensor(inp)
                mask[i, : len(inp)] = 1
                first = max(0, len(inp) - (len(cont) - 1))  # continuation tokens given as input
                labels[i, first : len(inp)] = ids[i, first : len(inp)]
            ids, mask, labels = ids.to(self.device), mask.to(self.device), labels.to(self.device)
            x, m, pos, _ = self.ptmoe.build_inputs(ids, mask, labels)
            logits = self.ptmoe.lm(inputs_embeds=x, attention_mask=m, position_ids=pos, use_cache=False).logits
            logprobs = F.log_softmax(logits[:, -L:].float(), -1)  # drop the prompt positions
            for (key, _, cont), inp, lp in zip(chunk, inps, logprobs):
                n = len(cont)
                rows = lp[len(inp) - n : len(inp)]  # position j predicts token j + 1
                target = torch.tensor(cont, device=rows.device)
                answer = (float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all()))
                res.append(answer)
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, answer)
                pbar.update(1)
        pbar.close()
        return re_ord.get_original(res)

    def _model_call(self, inps, attn_mask=None, labels=None):
        raise NotImplementedError("the ptmoe model computes log-likelihoods in _loglikelihood_tokens")

    # ---- generation ---------------------------------------------------------------------------------
    def _model_generate(self, context, max_length: int, stop, **generation_kwargs):
        """Greedy tokens after `context` (left-padded ids); lm-eval cuts the text at the stop sequences.
        Generation ends early at EOS or the chat template's end-of-turn token, as in `ptmoe eval`."""
        mask = generation_kwargs.pop("attention_mask", None)
        if generation_kwargs.get("do_sample") or (generation_kwargs.get("temperature") or 0) > 0:
            raise ValueError("generation_kwargs: the ptmoe model decodes greedily (do_sample: false, temperature: 0)")
        pad, ends = special_ids(self.tokenizer)
        new = self.ptmoe.generate(
            context, mask, max_new_tokens=max_length - context.shape[1], eos_token_id=ends, pad_token_id=pad
        )
        return torch.cat([context, new.to(context.device)], 1)

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        """`--apply_chat_template`: one user turn is rendered exactly as training renders prompts
        (`data.format.render_user_turn`: the chat template, or plain text for tokenizers without one)."""
        if add_generation_prompt and len(chat_history) == 1 and chat_history[0]["role"] == "user":
            return render_user_turn(chat_history[0]["content"], self.tokenizer)
        return super().apply_chat_template(chat_history, add_generation_prompt)

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info.update(
            ptmoe_method=self.ptmoe.method,
            ptmoe_adapter=self.adapter,
            ptmoe_trainable=self.ptmoe.num_trainable() if self.adapter else 0,
        )
        return info
