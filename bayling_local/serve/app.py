"""The HTTP routes of `bayling-local serve`: OpenAI's chat and text completions and model list,
llama-server's `/health`, `/tokenize` and `/detokenize`, and our `/v1/translate`.

`create_app` wires the routes to a `ServerState`; `server.py` runs it under uvicorn.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from bayling_local.serve import schemas
from bayling_local.serve.auth import ApiKeyMiddleware
from bayling_local.serve.errors import ApiError, install_error_handlers
from bayling_local.serve.generation import (
    PreparedRequest,
    collect_unless_disconnected,
    prepare_chat,
    prepare_completion,
)
from bayling_local.serve.limits import BodyLimitMiddleware
from bayling_local.serve.state import ServerState
from bayling_local.serve.streaming import DONE, handle_pieces, sse_event
from bayling_local.serve.translation import translate

CLIENT_CLOSED = 499
"""nginx's status for a request whose client went away; nobody reads it, logs do."""


def create_app(state: ServerState, *, api_key: str | None = None, max_body_bytes: int | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.close()  # SIGTERM: uvicorn lets open requests finish (its grace period), then we cancel the rest

    app = FastAPI(title="bayling-local", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    _add_routes(app, state)
    if max_body_bytes is not None:
        app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    return app


def _add_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health")
    def health():
        if state.ready:
            return {"status": "ok"}
        if state.load_error is not None:
            return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/v1/models")
    def models():
        state.require_model(None)
        return schemas.model_list(state.served_name, state.created)

    @app.get("/props")
    def props():
        return model_properties(state)

    @app.post("/tokenize")
    def tokenize(body: schemas.TokenizeRequest):
        backend = state.require_model(None).backend
        ids = backend.tokenize(body.content, add_bos=body.add_special, special=body.parse_special)
        if body.with_pieces:
            return {"tokens": [{"id": i, "piece": _piece(backend, i)} for i in ids]}
        return {"tokens": ids}

    @app.post("/detokenize")
    def detokenize(body: schemas.DetokenizeRequest):
        model = state.require_model(None)
        _check_ids(model, body.tokens)
        return {"content": model.backend.detokenize(body.tokens)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: schemas.ChatCompletionRequest, request: Request):
        model = state.require_model(body.model)
        prepared = prepare_chat(model, body)
        return await _respond(state, request, body, prepared, chat=True)

    @app.post("/v1/completions")
    async def completions(body: schemas.CompletionRequest, request: Request):
        model = state.require_model(body.model)
        prepared = prepare_completion(model, body)
        return await _respond(state, request, body, prepared, chat=False)

    @app.post("/v1/translate")
    async def translations(body: schemas.TranslateRequest):
        model = state.require_model(body.model)
        state.admission.enter()
        try:
            return await translate(model, state.engine, body, state.served_name)
        finally:
            state.admission.leave()


def model_properties(state: ServerState) -> dict:
    """llama-server's `/props` fields a client needs to render prompts as we do, plus our chat format."""
    model = state.require_model(None)
    info = model.backend.info
    return {
        "model_alias": state.served_name,
        "chat_template": info.chat_template or "",
        "bos_token": info.bos_token,
        "eos_token": info.eos_token,
        "add_bos_token": info.add_bos,
        "n_ctx": info.context_length,
        "n_ctx_train": info.trained_context_length,
        "n_vocab": info.vocab_size,
        "architecture": info.architecture,
        "end_of_generation_ids": sorted(info.end_of_generation_ids),
        "chat_format": model.chat_format.id,
        "default_generation_settings": {"n_ctx": info.context_length},
    }


def _piece(backend, token: int):
    raw = backend.token_bytes(token) if hasattr(backend, "token_bytes") else backend.detokenize([token]).encode()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


def _check_ids(model, ids: list[int]) -> None:
    vocab = model.backend.info.vocab_size
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ApiError(400, f"token id {bad[0]} is outside this model's vocabulary (0..{vocab - 1})", param="tokens")


async def _respond(state: ServerState, request: Request, body, prepared: PreparedRequest, *, chat: bool):
    state.admission.enter()
    try:
        handle = state.engine.submit(prepared.prompt_ids, prepared.config)
    except BaseException:
        state.admission.leave()
        raise
    ident = schemas.new_id("chatcmpl" if chat else "cmpl")
    if body.stream:
        events = _stream_events(state, handle, ident, body, len(prepared.prompt_ids), chat)
        return EventSourceResponse(events, ping=15)
    try:
        text = await collect_unless_disconnected(request, handle)
    finally:
        state.admission.leave()
    if text is None:
        return JSONResponse({}, status_code=CLIENT_CLOSED)
    return _whole_response(state, handle, body, ident, len(prepared.prompt_ids), chat)


def _whole_response(state: ServerState, handle, body, ident: str, prompt_tokens: int, chat: bool) -> dict:
    completion = handle.result()
    counts = schemas.usage(prompt_tokens, len(completion.token_ids))
    reason = schemas.finish_reason(completion.finish_reason)
    if chat:
        return schemas.chat_completion(ident, state.served_name, completion.text, reason, counts)
    ids = completion.token_ids if body.return_token_ids else None
    return schemas.text_completion(ident, state.served_name, completion.text, reason, counts, ids)


async def _stream_events(state: ServerState, handle, ident: str, body, prompt_tokens: int, chat: bool):
    """OpenAI's chunks: (chat: a role delta), a delta per piece, the finish reason, usage if asked, [DONE]."""
    name, obj = state.served_name, "chat.completion.chunk" if chat else "text_completion"
    try:
        if chat:
            yield sse_event(schemas.chat_chunk(ident, name, {"role": "assistant", "content": ""}, None))
        async for piece in handle_pieces(handle):
            yield sse_event(_delta_chunk(ident, name, piece, None, chat))
        completion = handle.result()
        reason = schemas.finish_reason(completion.finish_reason)
        if not chat and body.return_token_ids:
            yield sse_event(schemas.text_completion(ident, name, "", reason, None, completion.token_ids))
        else:
            yield sse_event(_delta_chunk(ident, name, None, reason, chat))
        if body.include_usage():
            counts = schemas.usage(prompt_tokens, len(completion.token_ids))
            yield sse_event(schemas.usage_chunk(ident, obj, name, counts))
        yield sse_event(DONE)
    finally:
        handle.cancel()
        state.admission.leave()


def _delta_chunk(ident: str, name: str, piece: str | None, reason: str | None, chat: bool) -> dict:
    if chat:
        return schemas.chat_chunk(ident, name, {"content": piece} if piece is not None else {}, reason)
    return schemas.text_completion(ident, name, piece or "", reason, None)
