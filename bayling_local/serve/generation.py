"""From an OpenAI request to what the engine takes: prompt ids (checked against the context window) and
a GenerationConfig. Chat prompts are rendered and tokenized by our chat format (`Model.fit`), so usage
counts are our tokenizer's and a served model answers as it does locally."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bayling_local.backends.base import GenerationConfig
from bayling_local.backends.decoding import prompt_token_ids
from bayling_local.errors import BaylingError
from bayling_local.serve.errors import ApiError, from_bayling_error
from bayling_local.serve.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from bayling_local.serve.streaming import collect

DISCONNECT_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class PreparedRequest:
    prompt_ids: list[int]
    config: GenerationConfig


def prepare_chat(model, request: ChatCompletionRequest) -> PreparedRequest:
    _refuse_unsupported(request, request.logprobs or request.top_logprobs)
    messages = [_message(m) for m in request.messages]
    limit = request.token_limit()
    reserve = min(limit or 1, model.context_length // 4)
    try:
        fitted = model.fit(messages, reserve=reserve)
    except BaylingError as error:
        raise from_bayling_error(error) from None
    if fitted.dropped_turns:
        raise ApiError(
            413,
            f"the conversation is {len(model.prompt_ids(messages))} tokens; with {reserve} tokens to answer it "
            f"does not fit the context window of {model.context_length} tokens",
            param="messages",
            code="context_length_exceeded",
        )
    config = model.chat_config(_config(request, limit, model.context_length - len(fitted.prompt_ids)))
    return PreparedRequest(fitted.prompt_ids, config)


def prepare_completion(model, request: CompletionRequest) -> PreparedRequest:
    _refuse_unsupported(request, request.logprobs)
    if request.echo:
        raise ApiError(400, "echo is not supported", param="echo")
    prompt = request.single_prompt()
    if prompt is None:
        raise ApiError(400, "send one prompt per request", param="prompt")
    try:
        ids = prompt_token_ids(model.backend, prompt)
    except BaylingError as error:
        raised = from_bayling_error(error)
        raised.param = "prompt"
        raise raised from None
    config = _config(request, request.token_limit(), model.context_length - len(ids))
    return PreparedRequest(ids, config)


def _message(message) -> dict:
    if isinstance(message.content, list) and any(p.type != "text" for p in message.content):
        raise ApiError(400, "only text content parts are supported", param="messages")
    role = "system" if message.role == "developer" else message.role
    return {"role": role, "content": message.text()}


def _refuse_unsupported(request: SamplingFields, logprobs) -> None:
    if request.n != 1:
        raise ApiError(400, "n must be 1: send one request per answer", param="n")
    if logprobs:
        raise ApiError(400, "logprobs are not supported by this server", param="logprobs")


def _config(request: SamplingFields, limit: int | None, room: int) -> GenerationConfig:
    """Sampling as OpenAI defines it; the answer may use at most the rest of the context (llama-server
    clamps `max_tokens` the same way rather than refusing it)."""
    if room <= 0:
        raise ApiError(
            413, "the prompt fills the context window", param="messages", code="context_length_exceeded"
        )
    return GenerationConfig(
        max_tokens=min(limit or room, room),
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        repeat_penalty=request.repeat_penalty,
        seed=request.seed,
        stop=request.stops(),
        stop_token_ids=tuple(request.stop_token_ids),
        ignore_eos=request.ignore_eos,
    )


async def collect_unless_disconnected(request, handle) -> str | None:
    """The request's whole text; None (and the request cancelled) when the client goes away first."""
    task = asyncio.ensure_future(collect(handle))
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
        if done:
            return task.result()
        if await request.is_disconnected():
            handle.cancel()
            task.cancel()
            return None
