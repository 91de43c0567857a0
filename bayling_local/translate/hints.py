"""What a translator's file adds to the translation prompt: context, notes, memory examples, and the
placeholder rule (restated, with what went wrong, when a first answer broke it)."""

from __future__ import annotations

from collections.abc import Sequence

from bayling_local.languages import Language
from bayling_local.prompts import Message
from bayling_local.translate import translation_messages
from bayling_local.translate.memory import FuzzyMatch
from bayling_local.translate.placeholders import Placeholder, rule


def hinted_messages(
    text: str,
    target: Language,
    *,
    glossary: Sequence[str] = (),
    context: str = "",
    notes: str = "",
    placeholders: Sequence[Placeholder] = (),
    examples: Sequence[FuzzyMatch] = (),
    retry: str = "",
) -> list[Message]:
    """BayLing's translation messages, with the hints appended as glossary hints are (plain runs: unchanged)."""
    messages = translation_messages(text, target, glossary=glossary)
    hints = [f"Context: {context}"] if context else []
    hints += [f"Notes: {notes}"] if notes else []
    if examples:
        hints.append(
            "Earlier translations of similar text:\n" + "\n".join(f"{e.source} => {e.target}" for e in examples)
        )
    if placeholders:
        hints.append(rule(placeholders))
    if retry:
        hints.append(f"Your previous answer was wrong: {retry}. Answer again, following the rule above.")
    if hints:
        messages[-1] = {**messages[-1], "content": messages[-1]["content"] + "\n\n" + "\n".join(hints)}
    return messages
