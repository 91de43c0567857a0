"""A paragraph's inline markup as the model sees it: text with numbered codes, and back again.

A format with inline markup (DOCX runs and links, HTML elements) describes a paragraph as `Inline` items:
text, `Span`s (markup around text: bold, a link, a field's result) and `Mark`s (markup with no text of its
own: an image, a tab, a footnote reference). `flatten` turns them into the tokens of `placeholders`
(`<1>…</1>`, `<2/>`); `unflatten` turns a translation that passed the integrity check back into items, in
the translation's order, each token carrying the original span's or mark's payload.

Codes at the very start or end of a paragraph (an image before the text, a note reference after it) stay
where they are and are not shown to the model: every token is one more thing a small model can drop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bayling_local.translate.placeholders import CLOSE, MARKUP_TOKEN, OPEN, STANDALONE, Placeholder, markup_token

LETTER = re.compile(r"[^\W\d_]")


@dataclass(eq=False)
class Span:
    """Markup around text; `payload` is whatever the format needs to rebuild it."""

    payload: Any
    children: list[Inline] = field(default_factory=list)


@dataclass(eq=False)
class Mark:
    """Markup without text of its own, copied as it is."""

    payload: Any


Inline = str | Span | Mark


@dataclass
class FlatParagraph:
    text: str
    """What the model translates: the text with a token for each code."""
    placeholders: tuple[Placeholder, ...]
    codes: dict[int, Span | Mark]
    """Token number -> the span or mark it stands for."""
    leading: list[Inline]
    trailing: list[Inline]
    """Codes (and the blanks between them) before the first and after the last text: kept in place."""


def has_letters(items: Sequence[Inline]) -> bool:
    for item in items:
        if isinstance(item, str) and LETTER.search(item):
            return True
        if isinstance(item, Span) and has_letters(item.children):
            return True
    return False


def flatten(items: Sequence[Inline]) -> FlatParagraph:
    """The text the model sees; a span without letters (a linked image) is one standalone code."""
    start, end = _edges(items)
    parts: list[str] = []
    placeholders: list[Placeholder] = []
    codes: dict[int, Span | Mark] = {}

    def add(number: int, kind: str) -> None:
        token = markup_token(number, kind)
        parts.append(token)
        placeholders.append(Placeholder(token, kind, str(number)))

    def walk(level: Sequence[Inline]) -> None:
        for item in level:
            if isinstance(item, str):
                parts.append(item)
                continue
            number = len(codes) + 1
            codes[number] = item
            if isinstance(item, Span) and has_letters(item.children):
                add(number, OPEN)
                walk(item.children)
                add(number, CLOSE)
            else:
                add(number, STANDALONE)

    walk(items[start:end])
    return FlatParagraph("".join(parts), tuple(placeholders), codes, list(items[:start]), list(items[end:]))


def unflatten(translation: str, flat: FlatParagraph) -> list[Inline]:
    """`translation` (its placeholders checked) as items: new spans with the originals' payloads, the original
    marks, and the paragraph's fixed leading and trailing codes."""
    root: list[Inline] = []
    stack = [root]
    position = 0
    for match in MARKUP_TOKEN.finditer(translation):
        code = flat.codes.get(int(match.group(2)))
        if code is None:  # not one of ours (the source's own text): stays text
            continue
        _append_text(stack[-1], translation[position : match.start()])
        position = match.end()
        if match.group(3) or isinstance(code, Mark) or not has_letters(code.children):
            stack[-1].append(code)
        elif match.group(1):
            stack.pop()
        else:
            span = Span(code.payload)
            stack[-1].append(span)
            stack.append(span.children)
    _append_text(stack[-1], translation[position:])
    return [*flat.leading, *root, *flat.trailing]


def _append_text(level: list[Inline], text: str) -> None:
    if not text:
        return
    if level and isinstance(level[-1], str):
        level[-1] += text
    else:
        level.append(text)


def _is_code(item: Inline) -> bool:
    return isinstance(item, Mark) or (isinstance(item, Span) and not has_letters(item.children))


def _edges(items: Sequence[Inline]) -> tuple[int, int]:
    """[start, end): the items between the leading and trailing codes (blanks between codes go with them)."""
    start = 0
    for index, item in enumerate(items):
        if _is_code(item):
            start = index + 1
        elif not (isinstance(item, str) and not item.strip()):
            break
    end = len(items)
    for index in range(len(items) - 1, start - 1, -1):
        item = items[index]
        if _is_code(item):
            end = index
        elif not (isinstance(item, str) and not item.strip()):
            break
    return start, max(start, end)
