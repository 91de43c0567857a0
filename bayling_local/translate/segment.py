"""Long segments cut into sentence groups that fit the model's context, and translations joined back.

Sentences come from `sentencex` (about 300 languages; the source language's rules when it is known).
Consecutive sentences are grouped up to `max_chars` so a paragraph keeps as much context as it can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bayling_local.languages import Language

DEFAULT_MAX_CHARS = 500
"""About 150 tokens of English: short enough for small models, long enough to keep context."""
# Scripts written without spaces between sentences: their translations join with nothing between.
UNSPACED_SCRIPTS = frozenset({"Hans", "Hant", "Jpan", "Thai", "Laoo", "Khmr", "Mymr"})
# sentencex's rules when the source language is unknown (its fallback handles most punctuation).
DEFAULT_SPLIT_LANGUAGE = "en"


@dataclass(frozen=True)
class SplitText:
    """A segment as the pieces sent to the model, plus the whitespace around it."""

    leading: str
    pieces: tuple[str, ...]
    trailing: str


def split_segment(text: str, max_chars: int = DEFAULT_MAX_CHARS, source: Language | None = None) -> SplitText:
    """`text` as one piece, or as sentence groups of at most `max_chars` (0: one sentence a piece)."""
    core = text.strip()
    leading = text[: len(text) - len(text.lstrip())]
    trailing = text[len(text.rstrip()) :]
    if len(core) <= max_chars or not core:
        return SplitText(leading, (core,) if core else (), trailing)
    glue = "" if source is not None and source.script in UNSPACED_SCRIPTS else " "
    return SplitText(leading, tuple(_grouped(sentences(core, source), max_chars, glue)), trailing)


def sentences(text: str, source: Language | None = None) -> list[str]:
    """The sentences of `text`, stripped."""
    import sentencex

    language = (source.iso639_1 or source.iso639_3) if source else DEFAULT_SPLIT_LANGUAGE
    return [s.strip() for s in sentencex.segment(language, text) if s.strip()]


def _grouped(parts: Sequence[str], max_chars: int, glue: str) -> list[str]:
    groups: list[str] = []
    for part in parts:
        if groups and len(groups[-1]) + len(glue) + len(part) <= max_chars:
            groups[-1] += glue + part
        else:
            groups.append(part)
    return groups


def join_pieces(split: SplitText, translations: Sequence[str], target: Language) -> str:
    """The translated pieces as one text, with the segment's own leading and trailing whitespace."""
    separator = "" if target.script in UNSPACED_SCRIPTS else " "
    return split.leading + separator.join(t for t in translations if t) + split.trailing
