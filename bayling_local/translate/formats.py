"""The file formats `translate -i` reads and writes, described as data: a reader/writer pair per format.

A format whose rows can hold every target (JSONL, TSV, CSV) writes one file with a field or column per
target; the others (text, SRT, Markdown, XLIFF, PO, DOCX, HTML) write one file per target. A `binary`
format (DOCX, HTML: they decode their bytes themselves) reads bytes and writes bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bayling_local.errors import UsageError
from bayling_local.translate.document import Document, ReadOptions
from bayling_local.translate.format_delimited import read_csv, read_tsv, write_csv, write_tsv
from bayling_local.translate.format_docx import read_docx, write_docx
from bayling_local.translate.format_html import read_html, write_html
from bayling_local.translate.format_jsonl import read_jsonl, write_jsonl
from bayling_local.translate.format_markdown import read_markdown, write_markdown
from bayling_local.translate.format_po import read_po, write_po
from bayling_local.translate.format_srt import read_srt, write_srt
from bayling_local.translate.format_text import read_text, write_text
from bayling_local.translate.format_xliff import read_xliff, write_xliff

Reader = Callable[[str | bytes, ReadOptions], Document]
Writer = Callable[[Document, Mapping[str, Sequence[str]]], str | bytes]
"""(document, target code -> a translation per segment) -> the output file's text. A format with placeholders
(`takes_flags`) is also given `flags`: target code -> segment index -> why its translation was rejected."""


@dataclass(frozen=True)
class FileFormat:
    name: str
    extensions: tuple[str, ...]
    description: str
    read: Reader
    write: Writer
    one_file_per_target: bool
    takes_flags: bool = False
    binary: bool = False


FORMATS: dict[str, FileFormat] = {
    f.name: f
    for f in (
        FileFormat("text", (".txt",), "one segment per line, blank lines kept", read_text, write_text, True),
        FileFormat("jsonl", (".jsonl", ".ndjson"), "--field, output <field>_<code>", read_jsonl, write_jsonl, False),
        FileFormat("tsv", (".tsv", ".tab"), "--column, output <column>_<code>", read_tsv, write_tsv, False),
        FileFormat("csv", (".csv",), "--column, output <column>_<code>", read_csv, write_csv, False),
        FileFormat("srt", (".srt",), "subtitles, timings kept", read_srt, write_srt, True),
        FileFormat(
            "markdown", (".md", ".markdown"), "code, URLs, front matter kept", read_markdown, write_markdown, True
        ),
        FileFormat(
            "xliff", (".xlf", ".xliff"), "XLIFF 1.2/2.x, inline codes kept", read_xliff, write_xliff, True, True
        ),
        FileFormat("po", (".po", ".pot"), "gettext, plurals and format specifiers kept", read_po, write_po, True, True),
        FileFormat(
            "docx",
            (".docx",),
            "Word: run formatting, links, fields, notes kept",
            read_docx,
            write_docx,
            True,
            True,
            binary=True,
        ),
        FileFormat(
            "html",
            (".html", ".htm"),
            "inline markup, alt/title kept; code untouched",
            read_html,
            write_html,
            True,
            True,
            binary=True,
        ),
    )
}
ALIASES = {"txt": "text", "md": "markdown", "ndjson": "jsonl", "xlf": "xliff", "pot": "po", "htm": "html"}


def get_format(name: str) -> FileFormat:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in FORMATS:
        raise UsageError(f"unknown format {name!r}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[key]


def format_for_path(path: Path) -> FileFormat:
    """The format a file's extension names; plain text for a file without one."""
    suffix = path.suffix.lower()
    if not suffix:
        return FORMATS["text"]
    for file_format in FORMATS.values():
        if suffix in file_format.extensions:
            return file_format
    raise UsageError(
        f"cannot tell the format of {path.name} from its extension {suffix!r}; "
        f"pass --format with one of: {', '.join(FORMATS)}"
    )
