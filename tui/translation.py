"""Streaming translation for the translate screen, built on `bayling_local.translate`'s own pieces.

`translate_text` returns a finished string; the screen wants pieces as they arrive, so this runs the
same prompt (`translation_messages`), the same length limit and the same one-line cleanup, streamed.
TODO(runtime): replace with a public `bayling_local.translate.stream_translation` when it exists.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from bayling_local.languages import Language
from bayling_local.model import Model
from bayling_local.translate import _length_limited, as_one_line, translation_messages

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
    if not line.strip() or (source is not None and source.code == target.code):
        return line
    stream, _ = model.chat(translation_messages(line, target), _length_limited(model, line, None, None), cancel)
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
