"""Open the model a verb asked for, showing a status line on a terminal while it loads."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from bayling_local.cli.options import load_options

if TYPE_CHECKING:
    from bayling_local.backends.base import SpeculationOptions
    from bayling_local.model import Model


def open_model_for_cli(
    model: str | None,
    device: str,
    threads: int | None,
    context: int | None,
    chat_format: str | None,
    backend: str | None = None,
    speculation: SpeculationOptions | None = None,
) -> Model:
    """`backend`: None loads exactly the artifact named; `auto` or a backend's name may load another
    artifact of its family (bayling_local/families.py), said in one line on stderr."""
    opened = _open(model, device, threads, context, chat_format, backend, speculation)
    if opened.backend_choice:
        print(opened.backend_choice, file=sys.stderr, flush=True)
    return opened


def _open(model, device, threads, context, chat_format, backend, speculation) -> Model:
    # imported here: a verb's `--help` and its usage errors need neither the model API nor the store
    from bayling_local.model import open_model

    options = load_options(device, threads, context, speculation)
    if not sys.stderr.isatty():
        return open_model(model, options=options, chat_format=chat_format, backend=backend)
    from rich.console import Console

    with Console(stderr=True).status(f"loading {model or 'the default model'}…"):
        return open_model(model, options=options, chat_format=chat_format, backend=backend)
