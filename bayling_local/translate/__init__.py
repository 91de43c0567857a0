"""Translation with BayLing's own instruction: single texts and lines into one or more languages.

File formats, sentence splitting and the resumable batch runner build on `translate_lines`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Sequence

from bayling_local.backends.base import GenerationConfig
from bayling_local.languages import Language, display_name
from bayling_local.model import Model
from bayling_local.prompts import Message, translation_prompt

# Without a user-chosen limit, a translation may be this many times the source's tokens (plus slack):
# enough for any real translation, and a stop for small models that loop.
LENGTH_FACTOR = 3
LENGTH_SLACK = 32


@dataclass(frozen=True)
class Translation:
    index: int
    """Position of the source line."""
    target: Language
    text: str


def translation_messages(
    text: str, target: Language, *, glossary: Sequence[str] = (), instruction_language: str = "en"
) -> list[Message]:
    prompt = translation_prompt(
        text, display_name(target), glossary=glossary, instruction_language=instruction_language
    )
    return [{"role": "user", "content": prompt}]


def as_one_line(text: str) -> str:
    """A translation on one line: line-oriented output keeps one output line per input line."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def translate_text(
    model: Model,
    text: str,
    target: Language,
    *,
    source: Language | None = None,
    glossary: Sequence[str] = (),
    config: GenerationConfig | None = None,
    max_tokens: int | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """`text` translated into `target` (returned unchanged when it is already in `target`)."""
    if not text.strip() or (source is not None and source.code == target.code):
        return text
    stream, _ = model.chat(
        translation_messages(text, target, glossary=glossary),
        _length_limited(model, text, config, max_tokens),
        cancel,
    )
    return as_one_line(stream.collect().text)


def translate_lines(
    model: Model,
    lines: Iterable[str],
    targets: Sequence[Language],
    *,
    source: Language | None = None,
    glossary: Sequence[str] = (),
    config: GenerationConfig | None = None,
    max_tokens: int | None = None,
) -> Iterator[Translation]:
    """Each line into every target, in input order with the targets of a line together."""
    for index, line in enumerate(lines):
        pending = [t for t in targets if line.strip() and not (source and source.code == t.code)]
        answers = _translate_batch(model, line, pending, glossary, config, max_tokens)
        for target in targets:
            yield Translation(index, target, answers.get(target.code, line))


def _translate_batch(
    model: Model,
    line: str,
    targets: Sequence[Language],
    glossary: Sequence[str],
    config: GenerationConfig | None,
    max_tokens: int | None,
) -> dict[str, str]:
    if not targets:
        return {}
    conversations = [translation_messages(line, t, glossary=glossary) for t in targets]
    completions = model.chat_batch(conversations, _length_limited(model, line, config, max_tokens))
    return {t.code: as_one_line(c.text) for t, c in zip(targets, completions)}


def _length_limited(
    model: Model, text: str, config: GenerationConfig | None, max_tokens: int | None
) -> GenerationConfig:
    """`config` with the token limit the user gave, else one proportional to the source's length."""
    limit = max_tokens or LENGTH_FACTOR * len(model.backend.tokenize(text)) + LENGTH_SLACK
    return replace(config or GenerationConfig(), max_tokens=limit)
