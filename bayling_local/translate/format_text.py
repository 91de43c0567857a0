"""Plain text: every non-blank line is one segment; blank lines and line endings are kept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bayling_local.translate.document import Document, ReadOptions, Segment, split_lines


def read_text(text: str, options: ReadOptions) -> Document:
    lines = split_lines(text)
    segments, layout = [], []
    for number, (content, ending) in enumerate(lines, start=1):
        if content.strip():
            layout.append((len(segments), ending))
            segments.append(Segment(content, number))
        else:
            layout.append((content, ending))
    return Document(segments, layout)


def write_text(document: Document, translations: Mapping[str, Sequence[str]]) -> str:
    (translated,) = translations.values()
    return "".join((translated[part] if isinstance(part, int) else part) + ending for part, ending in document.layout)
