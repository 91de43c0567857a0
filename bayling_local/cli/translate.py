"""`bayling-local translate`: text from the arguments or stdin lines into one or more languages."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from bayling_local.cli.loading import open_model_for_cli
from bayling_local.cli.options import (
    ChatFormatOption,
    ContextOption,
    DeviceOption,
    MaxTokensOption,
    ModelOption,
    SeedOption,
    TemperatureOption,
    ThreadsOption,
    TopKOption,
    TopPOption,
    generation_config,
)
from bayling_local.errors import InputTextError


def translate(
    text: Annotated[Optional[list[str]], typer.Argument(help="Text to translate; stdin lines when none is given.")] = None,
    to: Annotated[str, typer.Option("--to", "-t", help="Target language(s), comma-separated: sw,yo,zh.")] = ...,
    source: Annotated[Optional[str], typer.Option("--from", "-f", help="Source language (lines already in a target pass through).")] = None,
    glossary: Annotated[Optional[str], typer.Option("--terms", help="Comma-separated words the translation must include.")] = None,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    context: ContextOption = None,
    chat_format: ChatFormatOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = 0.0,
    top_p: TopPOption = 0.95,
    top_k: TopKOption = 40,
    seed: SeedOption = None,
) -> None:
    """Translate TEXT (or each stdin line) into every --to language.

    One target prints one line per input line; several print `code<TAB>translation`, the targets of
    each input line together in the order given.
    """
    from bayling_local.languages import resolve, resolve_many
    from bayling_local.translate import translate_lines

    targets = resolve_many(to)
    source_language = resolve(source) if source else None
    lines = [" ".join(text)] if text else read_stdin_lines()
    loaded = open_model_for_cli(model, device, threads, context, chat_format)
    config = generation_config(None, temperature, top_p, top_k, seed)
    terms = [t.strip() for t in glossary.split(",") if t.strip()] if glossary else []
    several = len(targets) > 1
    for result in translate_lines(
        loaded, lines, targets, source=source_language, glossary=terms, config=config, max_tokens=max_tokens
    ):
        print(f"{result.target.code}\t{result.text}" if several else result.text, flush=True)


def read_stdin_lines() -> list[str]:
    """Stdin as lines of UTF-8 text; a clear error when it is empty or not UTF-8."""
    if sys.stdin is None or sys.stdin.isatty():
        raise InputTextError("no text to translate: give TEXT arguments or pipe lines on stdin")
    data = sys.stdin.buffer.read()
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputTextError(
            f"stdin is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); convert it first, "
            "e.g. `iconv -f LATIN1 -t UTF-8`"
        ) from None
    if not decoded.strip():
        raise InputTextError("no text to translate: stdin is empty")
    return decoded.splitlines()
