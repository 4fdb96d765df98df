"""The vllm engine: vLLM's engine in this process, for throughput and many GPUs.

No engine can precompute a PT-MoE prompt (it depends on each request's own tokens), so ptmoe computes
each request's soft prompt (router included) with `model.build_inputs` and hands vLLM
`{"prompt_embeds": [soft prompt; token embeddings]}`; a request for the base model is plain token ids;
a LoRA adapter goes through vLLM's own LoRA requests (a PEFT-format copy of the adapter). vLLM's
tensor/pipeline-parallel options pass through `--vllm-arg`. vLLM schedules everything in one batch.

Answers come back when vLLM's generate call returns, so a stream carries the whole answer at once.
Anything that starts this engine must sit under `if __name__ == "__main__":` (vLLM spawns processes).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from ..models import PACKAGED, cache_dir
from .adapters import Served
from .engine_hf import finish
from .peft_export import export_peft_lora
from .text import TextStream


def model_folder(name: str) -> str:
    """The transformers folder (or hub id) vLLM loads for a ptmoe base model name."""
    if name in PACKAGED:
        return str(cache_dir() / "models" / name)  # de-quantised and cached by load_base_model
    if name.startswith("shape:") or name.endswith(".gguf"):
        raise ValueError(f"--model {name}: the vllm engine needs a transformers folder or a hub id")
    return name


class VLLMEngine:
    name = "vllm"

    def __init__(self, served: Served, in_process: bool = False, **options):
        """`options` go to vllm.LLM. `in_process`: vLLM's engine core runs in this process (no spawned
        process re-importing vLLM: a faster start, used by the tests)."""
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU default (4) is more than needed here
        if in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        unsupported = {n: m for n, m in served.methods.items() if m not in ("lora",) and n in served.weights}
        if unsupported:
            raise ValueError(f"--engine vllm: adapters {unsupported} change the weights in a way vLLM can't load; "
                             "serve them with --engine hf (a full fine-tune: serve its exported folder as --model)")
        self.served = served
        self._tmp = tempfile.TemporaryDirectory(prefix="ptmoe-vllm-lora-")
        self.loras = {}
        for i, name in enumerate(n for n, m in served.methods.items() if m == "lora"):
            folder = export_peft_lora(served.weights[name], Path(self._tmp.name) / name)
            self.loras[name] = LoRARequest(name, i + 1, str(folder))
        cpu = not torch.cuda.is_available()
        kw = dict(model=model_folder(served.base_name), enable_prompt_embeds=True, dtype="float32" if cpu else "auto",
                  max_model_len=min(served.max_model_len(), 4096), seed=0)
        if self.loras:
            ranks = [served.weights[n].config.r for n in self.loras]
            kw.update(enable_lora=True, max_loras=len(self.loras), max_lora_rank=_lora_rank_slot(max(ranks)))
        kw.update(options)
        self.llm = LLM(**kw)
        self._max_len = int(kw["max_model_len"])

    def max_model_len(self) -> int:
        return self._max_len

    def group(self, adapter: str) -> str:
        return "all"  # vLLM mixes prompt embeddings, token prompts and LoRA requests in one batch

    def _prompt(self, job):
        s = self.served
        if job.adapter in s.methods and job.adapter not in s.weights:  # a prompt adapter
            ids = torch.tensor([job.ids], device=next(s.prompt.parameters()).device)
            with torch.inference_mode():
                x, _, _, _ = s.prompt.build_inputs(ids, torch.ones_like(ids), adapter_names=[job.adapter])
            return {"prompt_embeds": x[0].float().cpu()}
        return {"prompt_token_ids": list(job.ids)}

    def run(self, jobs) -> None:
        from vllm import SamplingParams

        eos = self.served.eos_ids()
        params = [SamplingParams(max_tokens=j.sampling.max_tokens, temperature=j.sampling.temperature,
                                 top_p=j.sampling.top_p, seed=j.sampling.seed, stop=j.stop or None,
                                 stop_token_ids=eos, skip_special_tokens=True) for j in jobs]
        live = [i for i, j in enumerate(jobs) if not j.expired]
        outs = self.llm.generate([self._prompt(jobs[i]) for i in live], [params[i] for i in live],
                                 lora_request=[self.loras.get(jobs[i].adapter) for i in live], use_tqdm=False)
        for i, out in zip(live, outs):
            job, stream = jobs[i], TextStream(self.served.tokenizer, jobs[i].stop, eos)
            n = 0
            for token in out.outputs[0].token_ids:  # one TextStream for both engines: the same stop rules
                n += 1
                delta = stream.push(token)
                if delta:
                    job.emit("delta", delta)
                if stream.stopped:
                    break
            finish(job, stream, n)
        for i, job in enumerate(jobs):
            if i not in live:
                job.emit("error", 504, "request timed out while queued")

    def close(self) -> None:
        self._tmp.cleanup()


def _lora_rank_slot(r: int) -> int:
    """vLLM takes max_lora_rank from a fixed set of sizes."""
    return next((s for s in (8, 16, 32, 64, 128, 256, 320, 512) if s >= r), r)

