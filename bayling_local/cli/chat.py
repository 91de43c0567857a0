"""`bayling-local chat`: a streaming multi-turn chat in a plain terminal."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from bayling_local.cli.loading import open_model_for_cli
from bayling_local.cli.options import (
    BackendOption,
    ChatFormatOption,
    ContextOption,
    DeviceOption,
    DraftModelOption,
    DraftTokensOption,
    LookupNgramOption,
    MaxTokensOption,
    ModelOption,
    SeedOption,
    TemperatureOption,
    ThreadsOption,
    TopKOption,
    TopPOption,
    generation_config,
    speculation_options,
)

HELP = "Commands: /reset (forget the conversation), /system TEXT (new system prompt), /exit. Ctrl-C stops an answer."


def chat(
    model: ModelOption = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="System prompt (replaces the format's default).")] = None,
    device: DeviceOption = "auto",
    backend: BackendOption = "auto",
    threads: ThreadsOption = None,
    context: ContextOption = None,
    chat_format: ChatFormatOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = 0.7,
    top_p: TopPOption = 0.95,
    top_k: TopKOption = 40,
    seed: SeedOption = None,
    draft_model: DraftModelOption = None,
    draft_tokens: DraftTokensOption = 8,
    lookup_ngram: LookupNgramOption = 0,
) -> None:
    """Chat with a model, streaming each answer as it is written."""
    from bayling_local.chat import ChatSession

    speculation = speculation_options(draft_model, draft_tokens, lookup_ngram)
    loaded = open_model_for_cli(model, device, threads, context, chat_format, backend, speculation)
    config = generation_config(max_tokens, temperature, top_p, top_k, seed)
    session = ChatSession(loaded, config, system=system)
    interactive = sys.stdin.isatty()
    if interactive:
        _note(f"{loaded.name} ({loaded.chat_format.id}, {loaded.context_length} tokens of context). {HELP}")
    for line in _read_lines(interactive):
        if not _handle(session, line):
            break


def _read_lines(interactive: bool) -> Iterator[str]:
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        except KeyboardInterrupt:
            _note("\n(type /exit or press Ctrl-D to leave)")
            continue
        if not interactive and line == "":
            return
        yield line.rstrip("\n")


def _handle(session, line: str) -> bool:
    """Act on one input line; False ends the chat."""
    text = line.strip()
    if not text:
        return True
    if text in ("/exit", "/quit"):
        return False
    if text == "/reset":
        session.reset()
        _note("(conversation cleared)")
    elif text == "/system" or text.startswith("/system "):
        session.system = text[len("/system") :].strip() or None
        session.reset()
        _note(f"(system prompt {'set' if session.system else 'back to the default'}; conversation cleared)")
    elif text.startswith("/"):
        _note(f"unknown command {text.split()[0]}. {HELP}")
    else:
        _answer(session, line)
    return True


def _answer(session, text: str) -> None:
    cancel = threading.Event()
    with _ctrl_c_sets(cancel):
        reply = session.send(text, cancel)
        if reply.dropped_turns:
            _note(f"(dropped the {reply.dropped_turns} oldest exchange(s) to fit the context window)")
        for piece in reply:
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    if reply.completion and reply.completion.finish_reason == "cancelled":
        _note("(stopped)")
    elif reply.completion and reply.completion.finish_reason == "length":
        _note("(answer cut at --max-tokens)")


@contextmanager
def _ctrl_c_sets(event: threading.Event):
    """While answering, Ctrl-C stops the answer instead of the program."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
