"""SRT subtitles: cue numbers and timing lines are copied untouched; each cue's text is one segment.

A cue of several lines is translated as one sentence (its lines joined with spaces) and the translation
is wrapped back to the same number of lines, balanced at spaces; a translation with fewer words than
the cue had lines (or in a script written without spaces) takes fewer lines. A timing line that is
missing or malformed stops the run with its line number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bayling_local.translate.document import Document, ReadOptions, Segment, bad_input, split_lines

TIMING = re.compile(r"^\s*\d+:\d{2}:\d{2}[,.]\d{1,3}\s*-->\s*\d+:\d{2}:\d{2}[,.]\d{1,3}(\s.*)?$")
TIMING_EXAMPLE = "`00:00:01,000 --> 00:00:02,500`"


@dataclass
class Cue:
    head: list[str]
    """Number and timing lines with their endings, copied as they are."""
    lines: int
    """How many text lines the cue had."""
    segment: int | None
    endings: list[str]
    """The line ending after each text line."""


Line = tuple[int, tuple[str, str]]
"""(line number, (content, ending))"""


def read_srt(text: str, options: ReadOptions) -> Document:
    document = Document([], [])
    lines: list[Line] = list(enumerate(split_lines(text), start=1))
    position = 0
    while position < len(lines):
        _, (content, ending) = lines[position]
        if content.strip():
            position = _read_cue(lines, position, document, options)
        else:
            document.layout.append(content + ending)
            position += 1
    return document


def _read_cue(lines: list[Line], position: int, document: Document, options: ReadOptions) -> int:
    """Read the cue starting at `position`; returns the position after its text."""
    head, position = _cue_head(lines, position, options)
    start = position
    while position < len(lines) and lines[position][1][0].strip():
        position += 1
    text_lines = lines[start:position]
    segment = None
    if text_lines:
        segment = len(document.segments)
        joined = " ".join(content.strip() for _, (content, _) in text_lines)
        document.segments.append(Segment(joined, text_lines[0][0]))
    endings = [ending for _, (_, ending) in text_lines]
    document.layout.append(Cue(head, len(text_lines), segment, endings))
    return position


def _cue_head(lines: list[Line], position: int, options: ReadOptions) -> tuple[list[str], int]:
    """The cue's number line (optional) and timing line, and the position after them."""
    head = []
    number, (content, ending) = lines[position]
    if content.strip().isdigit():
        head.append(content + ending)
        position += 1
        number, (content, ending) = lines[position] if position < len(lines) else (number + 1, ("", ""))
    if not TIMING.match(content):
        found = content.strip()[:40]
        raise bad_input(
            options, number, f"expected a timing line like {TIMING_EXAMPLE}, found {found!r}", "fix the subtitle file"
        )
    head.append(content + ending)
    return head, position + 1


def write_srt(document: Document, translations: Mapping[str, Sequence[str]]) -> str:
    (translated,) = translations.values()
    out = []
    for part in document.layout:
        if isinstance(part, str):
            out.append(part)
            continue
        out.extend(part.head)
        if part.segment is not None:
            wrapped = wrap_lines(translated[part.segment], part.lines)
            # The last ending closes the cue, so it stays on the last line written.
            endings = part.endings[: len(wrapped) - 1] + part.endings[-1:]
            out.extend(line + ending for line, ending in zip(wrapped, endings))
    return "".join(out)


def wrap_lines(text: str, count: int) -> list[str]:
    """`text` in at most `count` lines of similar length, broken at spaces only."""
    words = text.split()
    if not words:
        return [""]
    count = max(1, min(count, len(words)))
    lines: list[str] = []
    for lines_left in range(count, 0, -1):
        if lines_left == 1:
            lines.append(" ".join(words))
            break
        target = len(" ".join(words)) / lines_left
        taken = 1
        while taken < len(words) - (lines_left - 1) and len(" ".join(words[: taken + 1])) <= target:
            taken += 1
        lines.append(" ".join(words[:taken]))
        words = words[taken:]
    return lines
