"""OpenAI request schemas, their validation into one error per bad field, and prompt encoding.

Types are checked strictly (a string is not a number, a bool is not an integer); fields the server
does not implement are refused when set to anything but their default, unknown fields are ignored.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ApiError(Exception):
    """An OpenAI-style error: HTTP status, message, the offending field, a short code."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = Field(None)
    stream: bool = False
    stream_options: dict | None = None
    n: int = Field(1, ge=1, le=1)  # one choice per prompt
    user: str | None = None
    # accepted only at their defaults (not implemented)
    presence_penalty: float = Field(0.0, ge=0, le=0)
    frequency_penalty: float = Field(0.0, ge=0, le=0)
    logprobs: None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise ApiError(400, "stop: at most 4 stop sequences", "stop")
        return [s for s in stops if s]


class CompletionRequest(_Common):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = Field(False, le=False)
    suffix: None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)


def _param(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("str", "list[str]", "list[TextPart]", "function-after[...]") and "[" not in str(part):
            out += f".{part}" if out else str(part)
    return out or "body"


def parse_request(raw: bytes, schema: type[BaseModel]) -> BaseModel:
    """Bytes -> a validated request, or ApiError(400) naming the first bad field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"body: malformed JSON ({e})", "body", "invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: expected a JSON object", "body", "invalid_json")
    try:
        return schema.model_validate_json(raw, strict=True)
    except ValidationError as e:
        err = min(e.errors(), key=lambda x: x["type"] == "missing")  # a wrong value before a missing one
        param = _param(err["loc"])
        if err["type"] == "missing":
            msg = f"{param}: required field missing"
        else:
            msg = f"{param}: {err['msg']} (got {json.dumps(err.get('input'))[:80]})"
        raise ApiError(400, msg, param, "invalid_type" if "type" in err["type"] else "invalid_value") from None


def encode_completion(tokenizer, prompt: str) -> list[int]:
    """The prompt text as given, tokenized like `ptmoe generate` tokenizes its prompts."""
    return tokenizer(prompt, add_special_tokens=not getattr(tokenizer, "chat_template", None))["input_ids"]


def encode_chat(tokenizer, messages: list[ChatMessage]) -> list[int]:
    """Messages rendered the way training renders a prompt (data/format.py build_prompt_text): the
    tokenizer's chat template with the generation prompt, else the plain-text form."""
    turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    text = "\n\n".join(t["content"] for t in turns)
    return tokenizer(f"{text}\n\nAnswer:\n", add_special_tokens=True)["input_ids"]
