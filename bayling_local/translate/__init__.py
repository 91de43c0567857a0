"""Translation with BayLing's own instruction: single texts and lines into one or more languages.

File formats, sentence splitting and the resumable batch runner build on `translate_lines`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from bayling_local.backends.base import Completion, GenerationConfig, TextStream
from bayling_local.languages import Language, display_name
from bayling_local.model import Model
from bayling_local.prompts import Message, translation_prompt

# Without a user-chosen limit, a translation may be this many times the source's tokens (plus slack):
# enough for any real translation, and a stop for small models that loop.
LENGTH_FACTOR = 3
LENGTH_SLACK = 32
DEFAULT_BATCH_SIZE = 8


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


def stream_translation(
    model: Model,
    text: str,
    target: Language,
    *,
    source: Language | None = None,
    glossary: Sequence[str] = (),
    config: GenerationConfig | None = None,
    max_tokens: int | None = None,
    cancel: threading.Event | None = None,
) -> TextStream:
    """`text` into `target` as it is generated; text already in `target` (or blank) streams back as is."""
    if passes_through(text, source, target):
        return TextStream(_unchanged(text))
    stream, _ = model.chat(
        translation_messages(text, target, glossary=glossary),
        _length_limited(model, text, config, max_tokens),
        cancel,
    )
    return stream


def _unchanged(text: str):
    yield text
    return Completion(text)


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
    if passes_through(text, source, target):
        return text
    stream = stream_translation(
        model, text, target, source=source, glossary=glossary, config=config, max_tokens=max_tokens, cancel=cancel
    )
    return as_one_line(stream.collect().text)


def passes_through(text: str, source: Language | None, target: Language) -> bool:
    """Blank text, or text already in the target language, is returned as it is."""
    return not text.strip() or (source is not None and source.code == target.code)


def translate_lines(
    model: Model,
    lines: Iterable[str],
    targets: Sequence[Language],
    *,
    source: Language | None = None,
    glossary: Sequence[str] = (),
    config: GenerationConfig | None = None,
    max_tokens: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cancel: threading.Event | None = None,
) -> Iterator[Translation]:
    """Each line into every target, in input order with the targets of a line together.

    (line, target) pairs are decoded `batch_size` at a time; blank lines and lines already in the
    target language pass through. Stops early (yielding nothing more) once `cancel` is set.
    """
    lines = list(lines)
    jobs = [(index, target) for index in range(len(lines)) for target in targets]
    for start in range(0, len(jobs), batch_size):
        if cancel is not None and cancel.is_set():
            return
        chunk = jobs[start : start + batch_size]
        answers = _translate_jobs(model, lines, chunk, source, glossary, config, max_tokens, cancel)
        if cancel is not None and cancel.is_set():
            return  # a cancelled batch is dropped whole: nothing half-translated is yielded
        for index, target in chunk:
            yield Translation(index, target, answers.get((index, target.code), lines[index]))


def _translate_jobs(model, lines, jobs, source, glossary, config, max_tokens, cancel) -> dict:
    todo = [(i, t) for i, t in jobs if not passes_through(lines[i], source, t)]
    if not todo:
        return {}
    conversations = [translation_messages(lines[i], t, glossary=glossary) for i, t in todo]
    # One config per batch: the longest line's limit bounds them all.
    longest = max((lines[i] for i, _ in todo), key=lambda line: len(model.backend.tokenize(line)))
    completions = model.chat_batch(conversations, _length_limited(model, longest, config, max_tokens), cancel)
    return {(i, t.code): as_one_line(c.text) for (i, t), c in zip(todo, completions)}


def _length_limited(
    model: Model, text: str, config: GenerationConfig | None, max_tokens: int | None
) -> GenerationConfig:
    """`config` with the token limit the user gave, else one proportional to the source's length."""
    limit = max_tokens or LENGTH_FACTOR * len(model.backend.tokenize(text)) + LENGTH_SLACK
    return replace(config or GenerationConfig(), max_tokens=limit)
