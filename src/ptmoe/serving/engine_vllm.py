"""The vllm engine: vLLM's engine in this process, for throughput and many GPUs.

No engine can precompute a PT-MoE prompt (it depends on each request's own tokens), so ptmoe computes
each request's soft prompt (router included) with `model.build_inputs` and hands vLLM
`{"prompt_embeds": [soft prompt; token embeddings]}`; a request for the base model is plain token ids;
a LoRA adapter goes through vLLM's own LoRA requests (a PEFT-format copy of the adapter). vLLM's
tensor/pipeline-parallel options pass through `--vllm-arg`.

Answers stream token by token as vLLM steps; queued requests join the running batch between steps.
Anything that starts this engine must sit under `if __name__ == "__main__":` (vLLM spawns processes).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from ..base_models import PACKAGED, cache_dir
from ..interop.peft_format import export_peft, is_peft_folder
from ..methods import get_method
from .adapters import Served
from .engine_hf import finish
from .text import TextStream


def model_folder(name: str) -> str:
    """The transformers folder (or hub id) vLLM loads for a ptmoe base model name."""
    if name in PACKAGED:
        return str(cache_dir() / "models" / name)  # de-quantised and cached by load_base_model
    if name.startswith("shape:") or name.endswith(".gguf"):
        raise ValueError(f"--model {name}: the vllm engine needs a transformers folder or a hub id")
    return name


def check_supported(base_name: str, methods: dict[str, str]) -> None:
    """Before anything loads: the base must be a transformers folder, adapters prompt methods or LoRA."""
    model_folder(base_name)
    unsupported = {n: m for n, m in methods.items() if m != "lora" and get_method(m).changes != "prompt"}
    if unsupported:
        raise ValueError(
            f"--engine vllm: adapters {unsupported} change the weights in a way vLLM can't load; "
            "serve them with --engine hf (a full fine-tune: serve its exported folder as --model)"
        )


class VLLMEngine:
    name = "vllm"

    def __init__(self, served: Served, in_process: bool = False, **options):
        """`options` go to vllm.LLM. `in_process`: vLLM's engine core runs in this process (no spawned
        process re-importing vLLM: a faster start, used by the tests)."""
        check_supported(served.base_name, served.methods)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU default (4) is more than needed here
        if in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # the optional `vllm` extra
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        self.served = served
        self._tmp = tempfile.TemporaryDirectory(prefix="ptmoe-vllm-lora-")
        self.loras = {}
        for i, name in enumerate(n for n, m in served.methods.items() if get_method(m).peft_type == "LORA"):
            path = served.paths[name]  # vLLM's LoRA requests read PEFT's folder format
            folder = path if is_peft_folder(path) else export_peft(path, Path(self._tmp.name) / name)
            self.loras[name] = LoRARequest(name, i + 1, str(folder))
        cpu = not torch.cuda.is_available()
        kw = {
            "model": model_folder(served.base_name),
            "enable_prompt_embeds": True,
            "dtype": "float32" if cpu else "auto",
            "max_model_len": min(served.max_model_len(), 4096),
            "seed": 0,
        }
        if self.loras:
            ranks = [served.weights[n].config.r for n in self.loras]
            kw.update(enable_lora=True, max_loras=len(self.loras), max_lora_rank=_lora_rank_slot(max(ranks)))
        kw.update(options)
        self.llm = LLM(**kw)
        self._max_len = int(kw["max_model_len"])

    def max_model_len(self) -> int:
        return self._max_len

    def group(self, adapter: str) -> str:
        """vLLM batches prompt embeddings with token prompts, and LoRA requests with plain ones; but
        vllm-cpu 0.32's LoRA kernels mis-serve mixed steps: a row without LoRA gets the last LoRA slot
        (torch_ops index -1) and prompt embeddings beside LoRA rows fail (einsum shape mismatch). So
        LoRA requests run in batches of their own (several LoRA adapters still mix)."""
        return "lora" if adapter in self.loras else "plain"

    def _is_prompt_adapter(self, adapter: str) -> bool:
        return adapter in self.served.methods and adapter not in self.served.weights

    def _prompt(self, job):
        s = self.served
        if self._is_prompt_adapter(job.adapter):
            ids = torch.tensor([job.ids], device=next(s.prompt.parameters()).device)
            with torch.inference_mode():
                x, _, _, _ = s.prompt.build_inputs(ids, torch.ones_like(ids), adapter_names=[job.adapter])
            return {"prompt_embeds": x[0].float().cpu()}
        return {"prompt_token_ids": list(job.ids)}

    def _params(self, job):
        # the optional `vllm` extra
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            output_kind=RequestOutputKind.CUMULATIVE,  # every step's tokens: streaming
            max_tokens=job.sampling.max_tokens,
            temperature=job.sampling.temperature,
            top_p=job.sampling.top_p,
            seed=job.sampling.seed,
            stop=job.stop or None,
            stop_token_ids=self.served.eos_ids(),
            skip_special_tokens=True,
        )

    def run(self, jobs, more=None) -> None:
        """Step vLLM's engine until every job is done, streaming each step's new tokens; between steps,
        queued requests join the running batch (`more(live)` hands them over: continuous batching)."""
        engine = self.llm.llm_engine
        eos = self.served.eos_ids()
        live: dict[str, list] = {}  # request id -> [job, its TextStream, tokens seen, vLLM's internal id]

        def add(new):
            for job in new:
                internal = self.llm.enqueue(
                    [self._prompt(job)], [self._params(job)], use_tqdm=False, lora_request=[self.loras.get(job.adapter)]
                )[0]
                # enqueue answers vLLM's internal id "N-suffix"; outputs carry the request's own id "N"
                stream = TextStream(self.served.tokenizer, job.stop, eos)
                live[internal.rsplit("-", 1)[0]] = [job, stream, 0, internal]

        def end(rid, abort: bool):
            job, stream, seen, internal = live.pop(rid)
            if abort:
                engine.abort_request([internal], internal=True)
            finish(job, stream, seen)

        add(jobs)
        while live:
            for out in engine.step():
                if out.request_id not in live:
                    continue
                entry = live[out.request_id]
                job, stream, seen, _ = entry
                tokens = out.outputs[0].token_ids
                for token in tokens[seen:]:  # one TextStream for both engines: the same stop rules
                    entry[2] += 1
                    delta = stream.push(token)
                    if delta:
                        job.emit("delta", delta)
                    if stream.stopped:
                        break
                if out.finished or stream.stopped:
                    stream.stopped |= out.outputs[0].finish_reason == "stop"  # EOS or a stop string in vLLM
                    end(out.request_id, abort=not out.finished)
            for rid in [r for r, entry in live.items() if entry[0].expired]:
                end(rid, abort=True)  # finish() answers the timeout or the cancellation
            if more is not None:
                add(more(len(live)))

    def close(self) -> None:
        self._tmp.cleanup()


def _lora_rank_slot(r: int) -> int:
    """vLLM takes max_lora_rank from a fixed set of sizes."""
    return next((s for s in (8, 16, 32, 64, 128, 256, 320, 512) if s >= r), r)
