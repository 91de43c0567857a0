"""TMX 1.4 files for the translation memory: units of one language pair out (`write_tmx`) and in (`read_tmx`).

Written on lxml rather than translate-toolkit's `tmxfile`: the toolkit reads and writes a `<seg>` as plain text
(inline codes lost or escaped) and keeps no per-unit origin. Inline codes, stored in the memory as tokens
(`<1>…</1>`, `<2/>`, see `placeholders`), are written as TMX inline elements: a pair as `<bpt i="N" x="N">` /
`<ept i="N">`, a lone code as `<ph x="N">`, half of a pair whose other half is not in the segment as
`<it pos="begin|end" x="N">`; each element's content is the token itself, the only native code we know.
Reading maps them back (and `<hi>` to a pair), numbered by `x` (or `i`), so our own files round-trip exactly.
Origin, model and context travel as `<prop type="x-bayling-origin|x-bayling-model|x-context">`; a unit with
no origin prop was made by a person, so it is imported as human.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bayling_local.errors import InputTextError, UnknownLanguageError
from bayling_local.languages import Language, resolve
from bayling_local.translate.memory import HUMAN, MemoryUnit
from bayling_local.translate.placeholders import CLOSE, MARKUP_TOKEN, OPEN, STANDALONE, Placeholder, problems

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ORIGIN_PROP, MODEL_PROP, CONTEXT_PROP = "x-bayling-origin", "x-bayling-model", "x-context"
ALL_LANGUAGES = "*all*"
REGION = re.compile(r"^(?:[A-Za-z]{2}|\d{3})$")
"""A BCP 47 region subtag (`US`, `419`): dropped when a tag names no language of ours with it."""


@dataclass(frozen=True)
class ReadUnits:
    """What a file gave the memory: the units to store, and how many were left out and why."""

    units: list[MemoryUnit]
    skipped: dict[str, int]


def language_tag(code: str) -> str:
    """The shortest BCP 47 tag that resolves back to FLORES `code`: `en`, `zh`, `zh-Hant`, `ks-Deva`."""
    language = resolve(code)
    short = language.iso639_1 or language.iso639_3
    for tag in (short, f"{short}-{language.code.partition('_')[2]}"):
        if getattr(language_of_tag(tag), "code", None) == language.code:
            return tag
    return language.code


def language_of_tag(tag: str) -> Language | None:
    """The language a BCP 47 / gettext tag names (`en-US`, `pt_BR`, `zh-Hant-TW`), or None."""
    parts = [p for p in re.split(r"[-_@.]", tag.strip()) if p]
    for candidate in (parts, parts[:1] + [p for p in parts[1:] if not REGION.match(p)], parts[:1]):
        try:
            return resolve("-".join(candidate)) if candidate else None
        except UnknownLanguageError:
            continue
    return None


def write_tmx(units: Sequence[MemoryUnit], source: str, target: str, tool_version: str) -> str:
    """TMX 1.4 text holding `units` (all of the pair `source` -> `target`, FLORES codes)."""
    from lxml import etree

    root = etree.Element("tmx", version="1.4")
    etree.SubElement(
        root,
        "header",
        creationtool="bayling-local",
        creationtoolversion=tool_version,
        segtype="sentence",
        adminlang="en",
        srclang=language_tag(source),
        datatype="plaintext",
        **{"o-tmf": "bayling-local"},
    )
    body = etree.SubElement(root, "body")
    for unit in units:
        _add_tu(body, unit, language_tag(source), language_tag(target))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True).decode("utf-8")


def _add_tu(body, unit: MemoryUnit, source_tag: str, target_tag: str) -> None:
    from lxml import etree

    tu = etree.SubElement(body, "tu")
    props = ((ORIGIN_PROP, unit.origin), (MODEL_PROP, unit.model), (CONTEXT_PROP, unit.context))
    for kind, value in props:
        if value:
            etree.SubElement(tu, "prop", type=kind).text = value
    for tag, text in ((source_tag, unit.source), (target_tag, unit.target)):
        tuv = etree.SubElement(tu, "tuv", {XML_LANG: tag})
        _fill_seg(etree.SubElement(tuv, "seg"), text)


def _fill_seg(seg, text: str) -> None:
    """`text` into `seg`, its tokens as inline elements."""
    from lxml import etree

    tokens = list(MARKUP_TOKEN.finditer(text))
    opened = {m.group(2) for m in tokens if not m.group(1) and not m.group(3)}
    closed = {m.group(2) for m in tokens if m.group(1)}
    seg.text, last, position = "", None, 0
    for match in tokens:
        _append(seg, last, text[position : match.start()])
        position, number = match.end(), match.group(2)
        if match.group(3):
            last = etree.SubElement(seg, "ph", x=number)
        elif match.group(1):
            attributes = {"i": number} if number in opened else {"pos": "end", "x": number}
            last = etree.SubElement(seg, "ept" if number in opened else "it", attributes)
        else:
            attributes = {"i": number, "x": number} if number in closed else {"pos": "begin", "x": number}
            last = etree.SubElement(seg, "bpt" if number in closed else "it", attributes)
        last.text = match.group(0)
    _append(seg, last, text[position:])


def _append(seg, last, text: str) -> None:
    if last is None:
        seg.text += text
    else:
        last.tail = (last.tail or "") + text


def read_tmx(text: str, name: str, source: Language, target: Language) -> ReadUnits:
    """The `source` -> `target` units of a TMX; a one-line error when its languages are not that pair or its
    header's srclang is missing from a unit (nothing is stored then: the caller stores only what this returns)."""
    root = _parse(text, name)
    header = _child(root, "header")
    srclang = header.get("srclang", "") if header is not None else ""
    if not srclang:
        raise InputTextError(f"{name} has no <header srclang=...>; it is not a TMX 1.4 file")
    if srclang != ALL_LANGUAGES:
        _check_language(srclang, source, name, "its header's srclang")
    body = _child(root, "body")
    units, skipped, seen = [], {}, set()
    for tu in body if body is not None else ():
        if isinstance(tu.tag, str) and tu.tag == "tu":
            unit = _read_tu(tu, name, source, target, tu.get("srclang", srclang), seen)
            if isinstance(unit, str):
                skipped[unit] = skipped.get(unit, 0) + 1
            else:
                units.append(unit)
    if not units and not skipped.get("inline codes differ"):
        found = ", ".join(sorted(seen - {source.code})) or "none"
        raise InputTextError(f"{name} has no unit in {target.code} (its other languages: {found}); check --to")
    return ReadUnits(units, skipped)


def _parse(text: str, name: str):
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(text.encode("utf-8"), parser)
    except etree.XMLSyntaxError as error:
        raise InputTextError(f"{name} is not well-formed XML ({error}); fix the file") from None
    if root.tag != "tmx":
        raise InputTextError(f"{name} is not TMX (its root element is <{root.tag}>)")
    return root


def _check_language(tag: str, wanted: Language, name: str, what: str, line: int | None = None) -> Language:
    language = language_of_tag(tag)
    where = f" (line {line})" if line else ""
    if language is None:
        raise InputTextError(f"{name}: {what} {tag!r}{where} is no language we know")
    if language.code != wanted.code:
        raise InputTextError(
            f"{name}: {what} is {tag!r} ({language.code}){where}, not {wanted.code}; pass the file's languages "
            "with --from/--to"
        )
    return language


def _read_tu(tu, name: str, source: Language, target: Language, srclang: str, seen: set[str]):
    """A MemoryUnit, or the reason the unit was left out."""
    segs = {}
    for tuv in tu:
        if isinstance(tuv.tag, str) and tuv.tag == "tuv":
            tag = tuv.get(XML_LANG) or tuv.get("lang", "")
            language = language_of_tag(tag)
            if language is None:
                raise InputTextError(f"{name}: the <tuv xml:lang={tag!r}> on line {tuv.sourceline} is no language")
            seen.add(language.code)
            segs[language.code] = _child(tuv, "seg")
    if srclang != ALL_LANGUAGES and _check_language(srclang, source, name, "a unit's srclang", tu.sourceline).code not in segs:
        raise InputTextError(
            f"{name}: the unit on line {tu.sourceline} has no <tuv> in its srclang {srclang!r} (it has "
            f"{', '.join(sorted(segs)) or 'none'}); the header's srclang disagrees with its units"
        )
    if source.code not in segs or target.code not in segs:
        return f"no {target.code} text" if source.code in segs else f"no {source.code} text"
    return _unit_of(tu, segs[source.code], segs[target.code], source, target)


def _unit_of(tu, source_seg, target_seg, source: Language, target: Language):
    source_text, target_text = seg_text(source_seg), seg_text(target_seg)
    if not source_text.strip() or not target_text.strip():
        return "empty text"
    if problems(token_placeholders(source_text), target_text):
        return "inline codes differ"
    props = {p.get("type"): p.text or "" for p in tu if isinstance(p.tag, str) and p.tag == "prop"}
    origin = props.get(ORIGIN_PROP) or HUMAN
    return MemoryUnit(
        source_text, target_text, source.code, target.code, props.get(CONTEXT_PROP, ""), origin, props.get(MODEL_PROP, "")
    )


def seg_text(seg) -> str:
    """A `<seg>`'s text with its inline elements as tokens (`<bpt>`/`<ept>`/`<hi>` pairs, `<ph>`/`<it>`...)."""
    if seg is None:
        return ""
    numbers: dict[str, str] = {}
    """bpt `i` -> the number its ept closes."""
    used = {e.get("x") or e.get("i") for e in seg.iter() if e is not seg}
    free = iter(str(n) for n in range(1, 10_000) if str(n) not in used)
    parts: list[str] = []
    _walk_seg(seg, parts, numbers, free)
    return "".join(parts)


def _walk_seg(element, parts: list[str], numbers: dict[str, str], free) -> None:
    parts.append(element.text or "")
    for child in element:
        if isinstance(child.tag, str):
            parts.extend(_inline_tokens(child, parts, numbers, free))
        parts.append(child.tail or "")


def _inline_tokens(child, parts: list[str], numbers: dict[str, str], free) -> list[str]:
    number = child.get("x") or child.get("i") or next(free)
    if child.tag == "bpt":
        numbers[child.get("i", "")] = number
        return [f"<{number}>"]
    if child.tag == "ept":
        return [f"</{numbers.get(child.get('i', ''), number)}>"]
    if child.tag == "it":
        return [f"</{number}>" if child.get("pos") == "end" else f"<{number}>"]
    if child.tag == "hi":
        parts.append(f"<{number}>")
        _walk_seg(child, parts, numbers, free)
        return [f"</{number}>"]
    return [f"<{number}/>"]  # ph, ut: a code with no text of its own


def token_placeholders(text: str) -> tuple[Placeholder, ...]:
    """The inline-code tokens of a stored text as placeholders, for the integrity check of its target."""
    found = []
    for match in MARKUP_TOKEN.finditer(text):
        kind = STANDALONE if match.group(3) else CLOSE if match.group(1) else OPEN
        found.append(Placeholder(match.group(0), kind, match.group(2)))
    return tuple(found)


def _child(element, name: str):
    return next((c for c in element if isinstance(c.tag, str) and c.tag == name), None)


def pair_units(units: Iterable[MemoryUnit], source: str, target: str) -> list[MemoryUnit]:
    return [u for u in units if u.source_lang == source and u.target_lang == target]
