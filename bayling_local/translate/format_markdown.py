"""Markdown, translated line by line so the output has the input's lines.

Left untranslated: YAML front matter, fenced and indented code blocks, HTML comments, link reference
definitions, inline code, URLs, link destinations, HTML tags and table pipes. Heading, quote and list
markers stay in front of the translated text. A sentence wrapped over two lines is translated in two
parts (unwrap paragraphs first for the best quality); emphasis markers are left to the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bayling_local.translate.document import Document, ReadOptions, Segment, split_lines

FRONT_MATTER_OPEN = re.compile(r"^---\s*$")
FRONT_MATTER_CLOSE = re.compile(r"^(---|\.\.\.)\s*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INDENTED_CODE = re.compile(r"^( {4}|\t)")
LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S")
LIST_ITEM = re.compile(r"^\s*([-*+]|\d{1,9}[.)])\s")
# Block markers kept in front of the text: indentation, quotes, a heading, a list item (with a task box).
LINE_PREFIX = re.compile(r"^\s*(?:>\s?)*\s*(?:#{1,6}\s+|(?:[-*+]|\d{1,9}[.)])\s+(?:\[[ xX]\]\s+)?)?")
PROTECTED = re.compile(
    r"(`+)[^`].*?(?<!`)\1(?!`)"  # inline code, any number of backticks
    r"|``"
    r"|<!--.*?-->"
    r"|<[^<>\n]*>"  # autolinks and HTML tags
    r"|\]\([^()\s]*(?:\([^()\s]*\)[^()\s]*)*(?:\s+\"[^\"]*\")?\)"  # ](destination "title")
    r"|\]\[[^\]]*\]"  # ][reference]
    r"|!?\[|\]"
    r"|(?:https?|ftp)://[^\s<>()]*[^\s<>().,;:!?'\"]"
    r"|www\.[^\s<>()]*[^\s<>().,;:!?'\"]"
    r"|\|"  # table cell borders
    r"|(?<=\s)#+\s*$"  # closing hashes of a heading
)
LETTER = re.compile(r"[^\W\d_]")


@dataclass
class Block:
    """Which multi-line construct the reader is inside, if any."""

    kind: str = ""  # "", "front", "fence", "comment", "indented"
    fence: str = ""
    after_list: bool = False


@dataclass
class Reader:
    document: Document = field(default_factory=lambda: Document([], []))
    block: Block = field(default_factory=Block)
    previous_blank: bool = True

    def literal(self, content: str, ending: str) -> None:
        self.document.layout.append([content, ending])

    def translatable(self, content: str, ending: str, number: int) -> None:
        self.document.layout.append([*self._parts(content, number), ending])

    def _parts(self, content: str, number: int) -> list[str | int]:
        prefix = LINE_PREFIX.match(content).group(0)
        parts: list[str | int] = [prefix]
        position = len(prefix)
        for match in PROTECTED.finditer(content, position):
            parts += [*self._text(content[position : match.start()], number), match.group(0)]
            position = match.end()
        return parts + self._text(content[position:], number)

    def _text(self, text: str, number: int) -> list[str | int]:
        if not LETTER.search(text):
            return [text]
        self.document.segments.append(Segment(text, number))
        return [len(self.document.segments) - 1]


def read_markdown(text: str, options: ReadOptions) -> Document:
    reader = Reader()
    lines = split_lines(text)
    front_end = _front_matter_end(lines)
    for number, (content, ending) in enumerate(lines, start=1):
        if number <= front_end or _in_block(reader, content):
            reader.literal(content, ending)
        else:
            reader.translatable(content, ending, number)
        if content.strip() and reader.block.kind == "" and not INDENTED_CODE.match(content):
            reader.block.after_list = bool(LIST_ITEM.match(content))
        reader.previous_blank = not content.strip()
    return reader.document


def _front_matter_end(lines: list[tuple[str, str]]) -> int:
    """The line number closing YAML front matter at the top, 0 when there is none."""
    if not lines or not FRONT_MATTER_OPEN.match(lines[0][0]):
        return 0
    for number, (content, _) in enumerate(lines[1:], start=2):
        if FRONT_MATTER_CLOSE.match(content):
            return number
    return 0


def _in_block(reader: Reader, content: str) -> bool:
    """Whether `content` is code, a comment or a definition (copied as is); updates the block state."""
    block = reader.block
    if block.kind == "fence":
        if re.match(rf"^ {{0,3}}{re.escape(block.fence[0])}{{{len(block.fence)},}}\s*$", content):
            block.kind = ""
        return True
    if block.kind == "comment":
        if "-->" in content:
            block.kind = ""
        return True
    if block.kind == "indented":
        if content.strip() and not INDENTED_CODE.match(content):
            block.kind = ""
        else:
            return True
    fence = FENCE.match(content)
    if fence:
        block.kind, block.fence = "fence", fence.group(1)
        return True
    if content.lstrip().startswith("<!--") and "-->" not in content:
        block.kind = "comment"
        return True
    if reader.previous_blank and INDENTED_CODE.match(content) and not block.after_list:
        block.kind = "indented"
        return True
    return bool(LINK_DEFINITION.match(content)) or not content.strip()


def write_markdown(document: Document, translations: Mapping[str, Sequence[str]]) -> str:
    (translated,) = translations.values()
    return "".join(
        "".join(translated[part] if isinstance(part, int) else part for part in line) for line in document.layout
    )
