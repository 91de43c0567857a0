"""`bayling-local serve`: parse options, then run `bayling_local.serve` (OpenAI-compatible HTTP)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bayling_local.cli.options import (
    BackendOption,
    ChatFormatOption,
    ContextOption,
    DeviceOption,
    DraftModelOption,
    DraftTokensOption,
    LookupNgramOption,
    ModelOption,
    ThreadsOption,
)

HostOption = Annotated[
    str, typer.Option("--host", help="Address to bind. Anything but loopback needs --api-key.")
]
PortOption = Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="BAYLING_API_KEY", help="Require `Authorization: Bearer KEY` on every route but /health."
    ),
]
ParallelOption = Annotated[int, typer.Option("--parallel", min=1, help="Requests decoded together (engine slots).")]
MaxQueueOption = Annotated[
    int, typer.Option("--max-queue", min=0, help="Requests that may wait for a slot; more get 429 with Retry-After.")
]
MaxBodyOption = Annotated[int, typer.Option("--max-body", min=1024, help="Largest request body in bytes.")]
ServedNameOption = Annotated[
    str | None, typer.Option("--served-name", help="Model id clients use (default: the model's name).")
]


def serve(
    model: ModelOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    api_key: ApiKeyOption = None,
    parallel: ParallelOption = 1,
    max_queue: MaxQueueOption = 64,
    max_body: MaxBodyOption = 4 * 1024 * 1024,
    served_name: ServedNameOption = None,
    device: DeviceOption = "auto",
    backend: BackendOption = "auto",
    threads: ThreadsOption = None,
    context: ContextOption = None,
    chat_format: ChatFormatOption = None,
    draft_model: DraftModelOption = None,
    draft_tokens: DraftTokensOption = 8,
    lookup_ngram: LookupNgramOption = 0,
) -> None:
    """Serve a model over the OpenAI HTTP API (chat, completions, models) plus /v1/translate.

    Also answers llama-server's /health (503 while the model loads), /tokenize and /detokenize.
    Binds 127.0.0.1 unless --host says otherwise; SIGTERM lets open requests finish, then stops.
    """
    from bayling_local.cli.options import load_options, speculation_options
    from bayling_local.families import backend_name
    from bayling_local.serve.server import ServeSettings, run_server

    backend_name(backend)  # a misspelt --backend is refused before the server starts

    settings = ServeSettings(host, port, api_key, parallel, max_queue, max_body, served_name)
    options = load_options(device, threads, context, speculation_options(draft_model, draft_tokens, lookup_ngram))

    def load():
        from bayling_local.engine import create_engine
        from bayling_local.model import open_model

        loaded = open_model(model, options=options, chat_format=chat_format, backend=backend)
        if loaded.backend_choice:
            print(loaded.backend_choice, file=sys.stderr, flush=True)
        return loaded, create_engine(loaded, parallel=parallel)

    run_server(settings, load, on_listening=_announce)


def _announce(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{port}/v1 (the model is loading; /health turns 200 when ready)",
          file=sys.stderr, flush=True)
