"""Cross-lingual instruction builders over a parallel corpus.

Four tasks, each a pool of candidate examples per language that the mixer draws from lazily:
- translation: each language to and from each hub language (English, Chinese), both directions;
- interactive: translate, then a follow-up turn (into a third language, with the next sentence
  added, or back into the source) answered from the corpus;
- pivot: an instruction in a hub language asking to translate between two other languages, so the
  instruction and the answer are in different languages and neither is the hub;
- choice: pick the translation of a sentence among four sentences of the target language.
Instructions are in English or Chinese, or in the source language when a wording file exists for it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bayling_local.languages import resolve
from bayling_local.training.data.parallel import ParallelCorpus
from bayling_local.training.data.records import Example
from bayling_local.training.data.wordings import FOLLOW_UP_KINDS, Wordings

# Scripts written without spaces between sentences.
UNSPACED_SCRIPTS = frozenset({"Hans", "Hant", "Jpan", "Thai", "Khmr", "Laoo", "Mymr", "Tibt"})
CHOICE_OPTIONS = 4
CHOICE_LETTERS = "ABCD"


@dataclass
class Pool:
    """Candidate examples of one (source, language, task); `draw` yields them in a seeded order."""

    source: str
    group: str
    language: str
    task: str
    size: int  # candidates available (an upper bound: empty lines and duplicates are skipped)
    draw: Callable[[random.Random], Iterator[Example]]


@dataclass(frozen=True)
class CrossLingualContext:
    """What every builder needs: the corpus, the hubs it has, and the wordings by language."""

    corpus: ParallelCorpus
    source: str
    group: str
    hubs: tuple[str, ...]  # hub languages present in the corpus, in recipe order
    always: tuple[Wordings, ...]  # instruction languages usable for any example
    by_language: dict[str, Wordings]  # further instruction languages, used when they are the source

    def partners(self, language: str) -> list[str]:
        """Hubs `language` is paired with; a pair of hubs belongs to the later hub of the two."""
        if language in self.hubs:
            return list(self.hubs[: self.hubs.index(language)])
        return list(self.hubs)

    def others(self) -> list[str]:
        return [code for code in self.corpus.languages if code not in self.hubs]

    def instruction_choices(self, source_language: str, kind: str) -> list[Wordings]:
        choices = [w for w in self.always if w.has(kind)]
        own = self.by_language.get(source_language)
        if own is not None and own.has(kind) and own not in choices:
            choices.append(own)
        return choices

    def text(self, language: str, line: int) -> str:
        return self.corpus.lines[language][line].strip()


def crosslingual_pools(context: CrossLingualContext, tasks: dict[str, float]) -> list[Pool]:
    """Every non-empty pool of the tasks with a positive weight."""
    builders = {"translation": _translation_pool, "interactive": _interactive_pool,
                "pivot": _pivot_pool, "choice": _choice_pool}
    pools = []
    for language in context.corpus.languages:
        for task, weight in tasks.items():
            if weight > 0:
                pool = builders[task](context, language)
                if pool.size > 0:
                    pools.append(pool)
    return pools


def _directed_slots(context: CrossLingualContext, language: str) -> list[tuple[str, str]]:
    """(source, target) language pairs of `language` with its partner hubs, both directions."""
    pairs = []
    for hub in context.partners(language):
        pairs += [(language, hub), (hub, language)]
    return pairs


def _slot_order(rng: random.Random, lines: int, pairs: list) -> Iterator[tuple[int, object]]:
    for index in rng.sample(range(lines * len(pairs)), lines * len(pairs)):
        yield index // len(pairs), pairs[index % len(pairs)]


def _pool(context: CrossLingualContext, language: str, task: str, size: int, draw) -> Pool:
    return Pool(context.source, context.group, language, task, size, draw)


# --- translation -----------------------------------------------------------------------------------


def _translation_pool(context: CrossLingualContext, language: str) -> Pool:
    pairs = _directed_slots(context, language)

    def draw(rng: random.Random) -> Iterator[Example]:
        for line, (source, target) in _slot_order(rng, len(context.corpus), pairs):
            example = _translation_example(context, rng, language, line, source, target)
            if example is not None:
                yield example

    return _pool(context, language, "translation", len(context.corpus) * len(pairs), draw)


def _translation_example(context, rng, language, line, source, target) -> Example | None:
    source_text, target_text = context.text(source, line), context.text(target, line)
    if not source_text or not target_text:
        return None
    wordings = rng.choice(context.instruction_choices(source, "translate"))
    prompt = _fill(rng, wordings, "translate", source=source, target=target, text=source_text)
    messages = (("user", prompt), ("assistant", target_text))
    return Example(messages, language, "translation", context.group, context.source)


def _fill(rng: random.Random, wordings: Wordings, kind: str, *, source: str, target: str, **fields: str) -> str:
    template = rng.choice(wordings.templates[kind])
    return template.format(
        source=wordings.name_of(resolve(source)), target=wordings.name_of(resolve(target)), **fields
    )


# --- interactive translation -----------------------------------------------------------------------


def _interactive_pool(context: CrossLingualContext, language: str) -> Pool:
    pairs = _directed_slots(context, language)

    def draw(rng: random.Random) -> Iterator[Example]:
        for line, (source, target) in _slot_order(rng, len(context.corpus), pairs):
            example = _interactive_example(context, rng, language, line, source, target)
            if example is not None:
                yield example

    return _pool(context, language, "interactive", len(context.corpus) * len(pairs), draw)


def _interactive_example(context, rng, language, line, source, target) -> Example | None:
    source_text, target_text = context.text(source, line), context.text(target, line)
    if not source_text or not target_text:
        return None
    choices = [w for w in context.instruction_choices(source, "translate") if _follow_up_kinds(context, w, line, source, target)]
    if not choices:
        return None
    wordings = rng.choice(choices)
    first = _fill(rng, wordings, "translate", source=source, target=target, text=source_text)
    kind = rng.choice(_follow_up_kinds(context, wordings, line, source, target))
    follow_up, answer = _follow_up(context, rng, wordings, kind, line, source, target)
    messages = (("user", first), ("assistant", target_text), ("user", follow_up), ("assistant", answer))
    return Example(messages, language, "interactive", context.group, context.source)


def _follow_up_kinds(context, wordings: Wordings, line: int, source: str, target: str) -> list[str]:
    possible = {
        "retarget": bool(_third_languages(context, line, source, target)),
        "extend": line + 1 < len(context.corpus)
        and bool(context.text(source, line + 1)) and bool(context.text(target, line + 1)),
        "back": True,
    }
    return [kind for kind in FOLLOW_UP_KINDS if possible[kind] and wordings.has(kind)]


def _third_languages(context, line: int, source: str, target: str) -> list[str]:
    return [code for code in context.corpus.languages if code not in (source, target) and context.text(code, line)]


def _follow_up(context, rng, wordings: Wordings, kind: str, line: int, source: str, target: str) -> tuple[str, str]:
    if kind == "retarget":
        third = rng.choice(_third_languages(context, line, source, target))
        return _fill(rng, wordings, kind, source=source, target=third), context.text(third, line)
    if kind == "extend":
        request = _fill(rng, wordings, kind, source=source, target=target, text=context.text(source, line + 1))
        return request, join_sentences(target, context.text(target, line), context.text(target, line + 1))
    return _fill(rng, wordings, kind, source=target, target=source), context.text(source, line)


def join_sentences(language: str, first: str, second: str) -> str:
    """Two consecutive sentences as one text, with a space only where the script uses them."""
    separator = "" if resolve(language).script in UNSPACED_SCRIPTS else " "
    return first + separator + second


# --- pivot: instruction in a hub language, translation between two other languages ----------------


def _pivot_pool(context: CrossLingualContext, language: str) -> Pool:
    others = context.others()
    if language in context.hubs or len(others) < 2:
        return _pool(context, language, "pivot", 0, lambda rng: iter(()))

    def draw(rng: random.Random) -> Iterator[Example]:
        for line in rng.sample(range(len(context.corpus)), len(context.corpus)):
            target = rng.choice([code for code in others if code != language])
            example = _pivot_example(context, rng, language, line, target)
            if example is not None:
                yield example

    return _pool(context, language, "pivot", len(context.corpus), draw)


def _pivot_example(context, rng, language, line, target) -> Example | None:
    source_text, target_text = context.text(language, line), context.text(target, line)
    if not source_text or not target_text:
        return None
    wordings = rng.choice([w for w in context.always if w.has("translate")])
    prompt = _fill(rng, wordings, "translate", source=language, target=target, text=source_text)
    return Example((("user", prompt), ("assistant", target_text)), language, "pivot", context.group, context.source)


# --- choice: pick the translation among sentences of the target language ---------------------------


def _choice_pool(context: CrossLingualContext, language: str) -> Pool:
    pairs = _directed_slots(context, language)
    if len(context.corpus) < CHOICE_OPTIONS:
        return _pool(context, language, "choice", 0, lambda rng: iter(()))

    def draw(rng: random.Random) -> Iterator[Example]:
        for line, (source, target) in _slot_order(rng, len(context.corpus), pairs):
            example = _choice_example(context, rng, language, line, source, target)
            if example is not None:
                yield example

    return _pool(context, language, "choice", len(context.corpus) * len(pairs), draw)


def _choice_example(context, rng, language, line, source, target) -> Example | None:
    source_text, answer = context.text(source, line), context.text(target, line)
    distractors = _distractors(context, rng, target, line, answer)
    choices = context.instruction_choices(source, "choice")
    if not source_text or not answer or distractors is None or not choices:
        return None
    options = [answer, *distractors]
    rng.shuffle(options)
    letter = CHOICE_LETTERS[options.index(answer)]
    listed = "\n".join(f"{CHOICE_LETTERS[i]}. {option}" for i, option in enumerate(options))
    prompt = _fill(rng, rng.choice(choices), "choice", source=source, target=target, text=source_text, options=listed)
    messages = (("user", prompt), ("assistant", f"{letter}. {answer}"))
    return Example(messages, language, "choice", context.group, context.source)


def _distractors(context, rng, language: str, line: int, answer: str) -> list[str] | None:
    """Three other sentences of `language`, distinct from the answer and each other (None if too few)."""
    seen, found = {answer}, []
    for candidate in rng.sample(range(len(context.corpus)), min(len(context.corpus), 4 * CHOICE_OPTIONS)):
        text = context.text(language, candidate)
        if candidate != line and text and text not in seen:
            seen.add(text)
            found.append(text)
        if len(found) == CHOICE_OPTIONS - 1:
            return found
    return None
