"""FastAPI routes of the OpenAI-compatible server: /v1/completions, /v1/chat/completions (both with
`stream: true` as server-sent events), /v1/models, /health, and /stats (batch sizes, for tests and
operators). Every failure is an OpenAI-style error body; nothing a client sends stops the server."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .batcher import Batcher, Job, QueueFull, ShuttingDown
from .decode import Sampling
from .openai_api import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    encode_chat,
    encode_completion,
    parse_request,
)
from .text import TOKENIZER_LOCK


def create_app(
    engine,
    served,
    max_queue: int = 64,
    max_batch: int = 8,
    batch_wait: float = 0.02,
    request_timeout: float = 300.0,
    chat_max_tokens: int = 512,
) -> FastAPI:
    batcher = Batcher(engine, max_queue, max_batch, batch_wait)
    created = int(time.time())
    max_len = engine.max_model_len() if hasattr(engine, "max_model_len") else served.max_model_len()

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await asyncio.to_thread(batcher.close)  # queued work is rejected, the running batch finishes
        engine.close()

    app = FastAPI(title="ptmoe", lifespan=lifespan)
    app.state.batcher, app.state.engine = batcher, engine

    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(Exception)
    async def unexpected(request, e: Exception):  # a bug of ours: still an OpenAI-style body, and logged
        logging.getLogger("ptmoe.serve").exception("unexpected error")
        return JSONResponse(ApiError(500, f"{type(e).__name__}: {e}", kind="server_error").body(), status_code=500)

    @app.get("/health")
    async def health():
        if batcher.closing:
            raise ApiError(503, "the server is shutting down", kind="server_error")
        return {"status": "ok", "engine": engine.name}

    @app.get("/stats")
    async def stats():
        return {"engine": engine.name, **batcher.snapshot()}

    @app.get("/v1/models")
    async def models():
        data = [
            {
                "id": n,
                "object": "model",
                "created": created,
                "owned_by": "ptmoe",
                "root": served.base_name,
                "method": served.methods.get(n),
            }
            for n in served.names
        ]
        return {"object": "list", "data": data}

    def check_model(name: str) -> None:
        if name not in served.names:
            raise ApiError(
                404, f"model: {name!r} is not served; served: {', '.join(served.names)}", "model", "model_not_found"
            )

    def make_job(req, ids, param: str, max_tokens, loop) -> Job:
        if not ids:
            raise ApiError(400, f"{param}: the prompt is empty", param, "empty_prompt")
        room = max_len - served.prompt_tokens(req.model) - len(ids)
        if room < 1:
            raise ApiError(
                400,
                f"{param}: {len(ids)} prompt tokens (+{served.prompt_tokens(req.model)} soft prompt) "
                f"exceed this model's maximum context length of {max_len} tokens",
                param,
                "context_length_exceeded",
            )
        if max_tokens is None:
            max_tokens = min(chat_max_tokens, room)
        elif max_tokens > room:
            raise ApiError(
                400,
                f"max_tokens: {max_tokens} does not fit: the prompt leaves {room} of the model's {max_len} tokens",
                "max_tokens",
                "context_length_exceeded",
            )
        sampling = Sampling(max_tokens, req.temperature, req.top_p, req.seed)
        return Job(ids, req.model, sampling, req.stops(), time.monotonic() + request_timeout, loop)

    def submit(jobs: list[Job]) -> None:
        shared = asyncio.Queue()
        for i, job in enumerate(jobs):
            job.index, job.events = i, shared
        for n, job in enumerate(jobs):
            try:
                batcher.submit(job)
            except (QueueFull, ShuttingDown) as e:
                for j in jobs[:n]:
                    j.cancelled = True
                raise ApiError(503, str(e), None, "overloaded", "server_error") from None

    async def events(jobs: list[Job]):
        """(index, event) until every job is done; a timeout or error ends the whole request."""
        left = len(jobs)
        queue = jobs[0].events
        try:
            while left:
                remaining = max(0.0, min(j.deadline for j in jobs) - time.monotonic()) + 1.0
                try:
                    index, *event = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    raise ApiError(504, "the request timed out", None, "timeout", "server_error") from None
                if event[0] == "error":
                    raise ApiError(
                        event[1],
                        event[2],
                        None,
                        None if event[1] < 500 else "server_error",
                        "server_error" if event[1] >= 500 else "invalid_request_error",
                    )
                if event[0] == "done":
                    left -= 1
                yield index, event
        finally:
            for j in jobs:  # the client went away, timed out or failed: stop work on the rest
                j.cancelled = j.cancelled or not j.finished

    async def respond(request: Request, endpoint: str):
        schema = ChatRequest if endpoint == "chat" else CompletionRequest
        req = parse_request(await request.body(), schema)
        check_model(req.model)
        loop = asyncio.get_running_loop()
        with TOKENIZER_LOCK:
            if endpoint == "chat":
                prompts = [encode_chat(served.tokenizer, req.messages)]
                param, max_tokens = "messages", req.max_completion_tokens or req.max_tokens
            else:
                texts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
                if not texts or not all(texts):
                    raise ApiError(400, "prompt: the prompt is empty", "prompt", "empty_prompt")
                prompts = [encode_completion(served.tokenizer, t) for t in texts]
                param, max_tokens = "prompt", req.max_tokens
        jobs = [make_job(req, ids, param, max_tokens, loop) for ids in prompts]
        submit(jobs)
        rid = f"{'chatcmpl' if endpoint == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        fmt = _Format(endpoint, rid, req.model, int(time.time()), sum(len(j.ids) for j in jobs))
        if req.stream:
            usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(_sse(fmt, events(jobs), len(jobs), usage), media_type="text/event-stream")
        texts, reasons, counts = [""] * len(jobs), [None] * len(jobs), [0] * len(jobs)
        async for i, event in events(jobs):
            if event[0] == "delta":
                texts[i] += event[1]
            else:
                reasons[i], counts[i] = event[1], event[2]
        return fmt.whole(texts, reasons, sum(counts))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await respond(request, "completion")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await respond(request, "chat")

    return app


class _Format:
    """Response bodies in OpenAI's shapes for completions and chat completions."""

    def __init__(self, endpoint, rid, model, created, prompt_tokens):
        self.endpoint, self.rid, self.model, self.created, self.prompt_tokens = (
            endpoint,
            rid,
            model,
            created,
            prompt_tokens,
        )
        self.object = "chat.completion" if endpoint == "chat" else "text_completion"

    def usage(self, completion_tokens):
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }

    def choice(self, i, text, reason, delta=False):
        if self.endpoint != "chat":
            return {"index": i, "text": text, "finish_reason": reason, "logprobs": None}
        if delta:
            return {
                "index": i,
                "delta": {} if text is None else {"content": text},
                "finish_reason": reason,
                "logprobs": None,
            }
        return {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": reason,
            "logprobs": None,
        }

    def whole(self, texts, reasons, completion_tokens):
        return {
            "id": self.rid,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [self.choice(i, t, r) for i, (t, r) in enumerate(zip(texts, reasons))],
            "usage": self.usage(completion_tokens),
        }

    def chunk(self, choices, usage=None):
        obj = "chat.completion.chunk" if self.endpoint == "chat" else "text_completion"
        body = {"id": self.rid, "object": obj, "created": self.created, "model": self.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"


async def _sse(fmt: _Format, events, n: int, include_usage: bool):
    if fmt.endpoint == "chat":  # the first chunk names the role, as OpenAI's does
        yield fmt.chunk(
            [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}
                for i in range(n)
            ]
        )
    tokens = 0
    try:
        async for i, event in events:
            if event[0] == "delta":
                yield fmt.chunk([fmt.choice(i, event[1], None, delta=True)])
            else:
                tokens += event[2]
                yield fmt.chunk([fmt.choice(i, None if fmt.endpoint == "chat" else "", event[1], delta=True)])
        if include_usage:
            yield fmt.chunk([], fmt.usage(tokens))
    except ApiError as e:  # headers are sent: the error travels as an event, as OpenAI's API does it
        yield f"data: {json.dumps(e.body())}\n\n"
    yield "data: [DONE]\n\n"
