"""What every file format reads into: the segments to translate, and a layout only its writer reads.

A reader turns a file's text into a `Document`; the batch runner translates `segments`; the writer
puts the translations back into the layout, so everything outside the segments is copied untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bayling_local.errors import InputTextError
from bayling_local.translate.placeholders import Placeholder

LINE = re.compile(r"([^\r\n]*)(\r\n|\n|\r|$)")


@dataclass(frozen=True)
class Segment:
    """One unit of text to translate, and the input line it starts on (1-based) for reports."""

    text: str
    line: int
    context: str = ""
    """What tells this text apart from the same words elsewhere (PO msgctxt): in the prompt and the TM key."""
    notes: str = ""
    """Translator notes and comments (XLIFF <note>, PO #.): shown to the model, not part of the TM key."""
    placeholders: tuple[Placeholder, ...] = ()
    """Tokens the translation must carry (inline codes, format specifiers); such a segment is never split."""


@dataclass(frozen=True)
class SkippedLine:
    """An input line that `--skip-bad` copied through untranslated, and why."""

    line: int
    reason: str


@dataclass
class Document:
    segments: list[Segment]
    layout: Any
    """Whatever the format's writer needs besides the translations (lines, cues, JSON objects)."""
    skipped: list[SkippedLine] = field(default_factory=list)


@dataclass(frozen=True)
class ReadOptions:
    """What readers need besides the text: where it came from, and the format's own options."""

    name: str = "input"
    """The file's name, used in error messages."""
    field: str = "text"
    """JSONL: the field to translate."""
    column: str = "text"
    """TSV/CSV: the header of the column to translate."""
    skip_bad: bool = False
    """Copy bad records through untranslated (reported) instead of stopping."""
    overwrite_final: bool = False
    """XLIFF: translate units a person marked final or signed off too."""
    mark_fuzzy: bool = True
    """PO: mark machine translations `fuzzy`, so a reviewer sees what a machine wrote."""


def split_lines(text: str) -> list[tuple[str, str]]:
    """`text` as (content, line ending) pairs; the endings (\\n, \\r\\n, \\r or none at the end) are kept."""
    lines = [(m.group(1), m.group(2)) for m in LINE.finditer(text)]
    if lines and lines[-1] == ("", ""):
        lines.pop()  # the empty match after the last line ending
    return lines


def first_line_ending(text: str) -> str:
    """The line ending the file uses (its first one), `\\n` when it has none."""
    match = re.search(r"\r\n|\n|\r", text)
    return match.group(0) if match else "\n"


def bad_input(options: ReadOptions, line: int, problem: str, fix: str) -> InputTextError:
    return InputTextError(f"{options.name} line {line}: {problem}; {fix}")
