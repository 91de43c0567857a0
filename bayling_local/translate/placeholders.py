"""Placeholders the model must carry through a translation, and the integrity check of its answer.

A format's reader turns inline markup (XLIFF `<g>`, `<x/>`, `<pc>`...) into short tokens (`<1>`, `</1>`,
`<2/>`) and lists them, with printf/brace format specifiers (`%s`, `%(name)s`, `{0}`), as `Placeholder`s.
A translation is sound when every placeholder appears exactly as often as in the source, paired tokens
open before they close and nest, and positional specifiers (`%s`, `{}`) keep their order, since their
arguments are bound by position.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

OPEN, CLOSE, STANDALONE = "open", "close", "standalone"
MARKUP_TOKEN = re.compile(r"<(/?)(\d+)(/?)>")
"""`<1>`, `</1>`, `<2/>`: inline codes as the model sees them (short, so small models copy them)."""
PRINTF = re.compile(
    r"%(?:\([^)\s]+\)|\d+\$)?[-#0 +']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t)?[diouxXeEfFgGcrsaps%]"
)
BRACE = re.compile(r"\{[A-Za-z_0-9.\[\]]*(?:![rsa])?(?::[^{}]*)?\}")


@dataclass(frozen=True)
class Placeholder:
    token: str
    """The exact text the translation must contain."""
    kind: str = STANDALONE
    """open / close (a pair sharing `pair`) or standalone."""
    pair: str = ""
    positional: bool = False
    """Bound by position (`%s`, `{}`): positional placeholders keep their source order."""


def markup_token(number: int, kind: str) -> str:
    return {OPEN: f"<{number}>", CLOSE: f"</{number}>", STANDALONE: f"<{number}/>"}[kind]


def format_placeholders(text: str, printf: bool, brace: bool) -> tuple[Placeholder, ...]:
    """The printf and/or brace specifiers of `text`, in order (`%%` and `{{` are literal text, not placeholders)."""
    found: list[tuple[int, Placeholder]] = []
    if printf:
        for match in PRINTF.finditer(text):
            token = match.group(0)
            if token != "%%":
                positional = "(" not in token and "$" not in token
                found.append((match.start(), Placeholder(token, positional=positional)))
    if brace:
        for match in BRACE.finditer(text.replace("{{", "\0\0").replace("}}", "\0\0")):
            token = match.group(0)
            found.append((match.start(), Placeholder(token, positional=token in ("{}",) or token.startswith("{:"))))
    return tuple(placeholder for _, placeholder in sorted(found, key=lambda pair: pair[0]))


def problems(placeholders: Sequence[Placeholder], translation: str) -> list[str]:
    """What is wrong with `translation` (empty: sound): missing, repeated or invented tokens, bad order."""
    if not placeholders:
        return []
    wanted = Counter(p.token for p in placeholders)
    found = Counter(_tokens_in(translation, placeholders))
    issues = [f"{token} missing" for token in wanted if found[token] < wanted[token]]
    issues += [f"{token} repeated" for token in wanted if found[token] > wanted[token]]
    issues += [f"{token} is not in the source" for token in found if token not in wanted]
    if not issues:
        issues += _order_problems(placeholders, translation)
    return issues


def _tokens_in(text: str, placeholders: Sequence[Placeholder]) -> list[str]:
    markup = [m.group(0) for m in MARKUP_TOKEN.finditer(text)]
    printf = any(PRINTF.fullmatch(p.token) for p in placeholders)
    brace = any(BRACE.fullmatch(p.token) for p in placeholders)
    formats = [p.token for p in format_placeholders(text, printf, brace)]
    return markup + formats


def _order_problems(placeholders: Sequence[Placeholder], translation: str) -> list[str]:
    by_token = {p.token: p for p in placeholders}
    positions = sorted((translation.find(token), p) for token, p in by_token.items() if token in translation)
    ordered = [p for _, p in positions]
    issues = _nesting_problems(ordered)
    source_positional = [p.token for p in placeholders if p.positional]
    if source_positional and len(set(source_positional)) > 1:
        translated = [t for t in _tokens_in(translation, placeholders) if by_token.get(t, Placeholder(t)).positional]
        if translated != source_positional:
            issues.append(f"positional placeholders must stay in the order {' '.join(source_positional)}")
    return issues


def _nesting_problems(ordered: Iterable[Placeholder]) -> list[str]:
    stack: list[Placeholder] = []
    for placeholder in ordered:
        if placeholder.kind == OPEN:
            stack.append(placeholder)
        elif placeholder.kind == CLOSE:
            if not stack or stack[-1].pair != placeholder.pair:
                return [f"{placeholder.token} closes a tag that is not the last one opened"]
            stack.pop()
    return []


def rule(placeholders: Sequence[Placeholder]) -> str:
    """The instruction that asks the model to carry `placeholders` (also restated on a retry)."""
    tokens = " ".join(dict.fromkeys(p.token for p in placeholders))
    return (
        f"Copy each of these codes into the translation exactly as written, each exactly as many times as in the "
        f"text, keeping tag pairs around the words they mark: {tokens}"
    )
