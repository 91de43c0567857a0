"""The OpenAI request bodies `serve` accepts, as pydantic models, and the response objects it returns.

Unknown fields are ignored, as OpenAI does. Besides OpenAI's fields a request may carry llama-server's
and vLLM's sampling extensions (`top_k`, `repeat_penalty`, `stop_token_ids`, `ignore_eos`): the remote
backend sends them so a remote model samples and stops as a local one does.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(ApiModel):
    include_usage: bool = False


class ContentPart(ApiModel):
    type: str
    text: str | None = None


class ChatMessage(ApiModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text; content parts other than text are refused by the route."""
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content)
        return self.content or ""


class SamplingFields(ApiModel):
    """What chat and text completions share: sampling, stops, limits, streaming."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    top_k: int = Field(default=0, ge=0)
    """llama-server/vLLM extension; 0 keeps every token (OpenAI has no top-k)."""
    repeat_penalty: float = Field(default=1.0, gt=0.0)
    """llama-server extension."""
    stop_token_ids: list[int] = Field(default_factory=list)
    """vLLM extension: token ids that end generation."""
    ignore_eos: bool = False
    """vLLM extension: generate through end-of-generation tokens (benchmarks)."""
    return_token_ids: bool = False
    """vLLM extension: the generated token ids in the choice (`token_ids`; in a stream's last chunk)."""

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False

    def token_limit(self) -> int | None:
        return self.max_tokens

    def single_prompt(self) -> str | list[int] | None:
        """The one prompt of the request, as text or token ids; None when it holds several."""
        prompt = self.prompt
        if isinstance(prompt, str) or (prompt and all(isinstance(p, int) for p in prompt)):
            return prompt
        return prompt[0] if len(prompt) == 1 else None


class TokenizeRequest(ApiModel):
    """llama-server's `/tokenize` body."""

    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(ApiModel):
    tokens: list[int]


class TranslateRequest(ApiModel):
    """`/v1/translate` (ours): one text or several, into one target or several."""

    model: str | None = None
    text: str | None = None
    texts: list[str] | None = None
    target: str | None = None
    targets: list[str] | None = None
    source: str | None = None
    glossary: list[str] = Field(default_factory=list)
    """Terms the translation must include."""
    max_tokens: int | None = Field(default=None, ge=1)


# --- responses ---------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(ident: str, model: str, text: str, finish_reason: str, counts: dict) -> dict:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": None,
        "finish_reason": finish_reason,
    }
    return _envelope(ident, "chat.completion", model, [choice], counts)


def chat_chunk(ident: str, model: str, delta: dict, finish_reason: str | None) -> dict:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return _envelope(ident, "chat.completion.chunk", model, [choice], None)


def text_completion(
    ident: str, model: str, text: str, finish_reason: str | None, counts: dict | None, token_ids: list | None = None
) -> dict:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return _envelope(ident, "text_completion", model, [choice], counts)


def usage_chunk(ident: str, obj: str, model: str, counts: dict) -> dict:
    """The last chunk of a stream with `include_usage`: no choices, the request's usage."""
    return _envelope(ident, obj, model, [], counts)


def _envelope(ident: str, obj: str, model: str, choices: list, counts: dict | None) -> dict:
    return {
        "id": ident,
        "object": obj,
        "created": now(),
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": counts,
    }


def model_list(name: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "bayling-local"}]}


def finish_reason(reason: str) -> str:
    """OpenAI's names: a cancelled request (server shutting down) reports `stop`'s neighbour `abort`."""
    return reason if reason in ("stop", "length") else "abort"
