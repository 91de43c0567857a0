"""`bayling-local tui`: the Textual app for chat, translation, benchmarks and the model store."""

from __future__ import annotations

import importlib.util

import typer

from bayling_local.cli.options import (
    ContextOption,
    DeviceOption,
    DraftModelOption,
    DraftTokensOption,
    LookupNgramOption,
    MaxTokensOption,
    ModelOption,
    TemperatureOption,
    ThreadsOption,
)


def tui(
    model: ModelOption = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    context: ContextOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = 0.7,
    draft_model: DraftModelOption = None,
    draft_tokens: DraftTokensOption = 8,
    lookup_ngram: LookupNgramOption = 0,
) -> None:
    """Open the terminal UI: chat (F1), translate (F2), bench (F3), models (F4); ctrl+p lists every action."""
    from bayling_local.cli.options import load_options, speculation_options
    from bayling_local.errors import BackendUnavailableError

    if importlib.util.find_spec("textual") is None:
        raise BackendUnavailableError("the TUI needs textual; run `pip install 'bayling-local[tui]'`")
    from bayling_local.tui.app import BaylingApp
    from bayling_local.tui.screens.chat_settings import ChatSettings

    defaults = ChatSettings(temperature=temperature, max_tokens=max_tokens or ChatSettings.max_tokens)
    options = load_options(device, threads, context, speculation_options(draft_model, draft_tokens, lookup_ngram))
    app = BaylingApp(model, load_options=options, chat_defaults=defaults)
    try:
        app.run()
    finally:
        app.close_resources()
    raise typer.Exit(app.return_code or 0)
