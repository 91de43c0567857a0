"""Streaming translation for the translate screen, built on `bayling_local.translate`'s own pieces.

`translate_text` returns a finished string; the screen wants pieces as they arrive, so this streams
`stream_translation` (the same prompt and length limit) and applies the same one-line cleanup.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from bayling_local.languages import Language
from bayling_local.model import Model
from bayling_local.translate import as_one_line, passes_through, stream_translation

OnPiece = Callable[[str], None]


def stream_line(
    model: Model,
    line: str,
    target: Language,
    on_piece: OnPiece,
    *,
    source: Language | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Translate one line, calling `on_piece` with each piece; returns what `translate_text` would."""
    if passes_through(line, source, target):
        return line
    stream = stream_translation(model, line, target, cancel=cancel)
    for piece in stream:
        on_piece(piece)
    return as_one_line(stream.completion.text if stream.completion else "")


def stream_text(
    model: Model,
    text: str,
    target: Language,
    on_piece: OnPiece,
    on_line: Callable[[str], None],
    *,
    source: Language | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Each line of `text` in turn (blank lines kept), so a translation keeps the source's layout."""
    for line in text.splitlines():
        if cancel is not None and cancel.is_set():
            return
        on_line(stream_line(model, line, target, on_piece, source=source, cancel=cancel))
