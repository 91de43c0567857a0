"""XLIFF 1.2 and 2.x: each unit's source becomes one segment, its translation the unit's target.

Written on lxml rather than translate-toolkit's `xlifffile`: the toolkit has no XLIFF 2.x, and its rich-text
API re-serializes inline codes, whereas here everything outside the targets is copied node for node.
Inline codes become tokens (`<1>…</1>`, `<2/>`, see `placeholders`) and come back as the source's own
elements. Units marked final / signed-off (1.2 `approved="yes"`, state final/signed-off; 2.x state
final/reviewed) are left alone unless `overwrite_final`. Machine output gets state `translated`
(1.2 with `state-qualifier="mt-suggestion"`); a rejected translation leaves the source copied with a
review state and a note, never a target that lost its codes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from bayling_local.errors import InputTextError
from bayling_local.translate.document import Document, ReadOptions, Segment
from bayling_local.translate.placeholders import CLOSE, MARKUP_TOKEN, OPEN, STANDALONE, Placeholder, markup_token

FLAG_NOTE = "bayling-local: machine translation rejected"


@dataclass(frozen=True)
class Dialect:
    """What differs between XLIFF 1.2 and 2.x, as data."""

    version: str
    containers: frozenset[str]
    """Inline elements that wrap text: one token pair, content inside."""
    pair_starts: Mapping[str, str]
    """Empty elements opening a pair -> the attribute naming the pair."""
    pair_ends: Mapping[str, str]
    final_states: frozenset[str]
    machine_state: str
    rejected_state: str


V1 = Dialect(
    "1.2",
    frozenset({"g", "mrk"}),
    {"bpt": "id"},
    {"ept": "id"},
    frozenset({"final", "signed-off"}),
    "translated",
    "needs-review-translation",
)
V2 = Dialect(
    "2",
    frozenset({"pc", "mrk"}),
    {"sc": "id"},
    {"ec": "startRef"},
    frozenset({"final", "reviewed"}),
    "translated",
    "initial",
)


@dataclass(frozen=True)
class Code:
    element: object
    container: bool


@dataclass
class XliffLayout:
    text: str
    places: list[int]
    """Segment index -> position of its unit among `_units`."""


def parse_xliff(text: str, name: str):
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False)
    try:
        root = etree.fromstring(text.encode("utf-8"), parser)
    except etree.XMLSyntaxError as error:
        raise InputTextError(f"{name} is not well-formed XML ({error}); fix the file") from None
    if local_name(root) != "xliff":
        raise InputTextError(f"{name} is not XLIFF (its root element is <{local_name(root)}>)")
    return root


def dialect_of(root) -> Dialect:
    return V2 if (root.get("version") or "1.2").startswith("2") else V1


def read_xliff(text: str, options: ReadOptions) -> Document:
    root = parse_xliff(text, options.name)
    dialect = dialect_of(root)
    document = Document([], XliffLayout(text, []))
    for position, (unit, holder) in enumerate(translatable_units(root, dialect)):
        source = child_named(holder, "source")
        if source is None or (is_final(holder, dialect) and not options.overwrite_final):
            continue
        flat, placeholders, _ = flatten(source, dialect)
        if not flat.strip():
            continue
        document.layout.places.append(position)
        document.segments.append(Segment(flat, source.sourceline or 0, "", _notes(unit, holder), placeholders))
    return document


def translatable_units(root, dialect: Dialect) -> Iterator[tuple[object, object]]:
    """(unit, the element holding source/target/state): the trans-unit twice in 1.2, unit and segment in 2.x."""
    for unit in root.iter():
        name = local_name(unit)
        if name == "trans-unit" and dialect is V1 and unit.get("translate") != "no":
            yield unit, unit
        elif name == "unit" and dialect is V2 and unit.get("translate") != "no":
            for segment in unit:
                if local_name(segment) == "segment":
                    yield unit, segment


def is_final(holder, dialect: Dialect) -> bool:
    """A unit a person marked done (1.2 approved or a final state; 2.x final/reviewed): translate leaves
    it alone, and the memory imports it as a human translation."""
    target = child_named(holder, "target")
    if dialect is V1:
        state = target.get("state") if target is not None else None
        return holder.get("approved") == "yes" or state in dialect.final_states
    return holder.get("state") in dialect.final_states


def _notes(unit, holder) -> str:
    notes = [n for n in unit.iter() if local_name(n) == "note" and (n.text or "").strip()]
    context = [f"id {unit.get('resname') or unit.get('name')}"] if unit.get("resname") or unit.get("name") else []
    return "\n".join(context + [" ".join(n.text.split()) for n in notes])


def flatten(source, dialect: Dialect) -> tuple[str, tuple[Placeholder, ...], dict[str, Code]]:
    """The source's text with tokens for its inline codes, the tokens in order, and token -> element."""
    parts: list[str] = []
    placeholders: list[Placeholder] = []
    codes: dict[str, Code] = {}
    starts: dict[str, int] = {}
    """The pair attribute of an opening empty element (bpt, sc) -> its number."""
    counter = [0]

    def add(number: int, kind: str, element, container: bool) -> None:
        token = markup_token(number, kind)
        parts.append(token)
        placeholders.append(Placeholder(token, kind, str(number)))
        codes[token] = Code(element, container)

    def walk(element) -> None:
        parts.append(element.text or "")
        for child in element:
            if not isinstance(child.tag, str):  # comments and processing instructions are not text
                parts.append(child.tail or "")
                continue
            counter[0] += 1
            number, name = counter[0], local_name(child)
            if name in dialect.containers:
                add(number, OPEN, child, True)
                walk(child)
                add(number, CLOSE, child, True)
            elif name in dialect.pair_starts:
                starts[child.get(dialect.pair_starts[name], "")] = number
                add(number, OPEN, child, False)
            elif name in dialect.pair_ends and child.get(dialect.pair_ends[name]) in starts:
                add(starts.pop(child.get(dialect.pair_ends[name])), CLOSE, child, False)
            else:
                add(number, STANDALONE, child, False)
            parts.append(child.tail or "")

    walk(source)
    return "".join(parts), tuple(placeholders), codes


def write_xliff(
    document: Document, translations: Mapping[str, Sequence[str]], flags: Mapping[str, Mapping[int, str]] = {}
) -> str:
    from lxml import etree

    ((code, translated),) = translations.items()
    layout: XliffLayout = document.layout
    root = parse_xliff(layout.text, "the input")
    dialect = dialect_of(root)
    _set_target_language(root, dialect, code)
    units = list(translatable_units(root, dialect))
    rejected = flags.get(code, {})
    for index, position in enumerate(layout.places):
        unit, holder = units[position]
        _write_unit(unit, holder, dialect, translated[index], rejected.get(index))
    output = etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8").decode("utf-8") + "\n"
    parse_xliff(output, "the XLIFF written")  # never write a file that does not parse back
    return output


def _set_target_language(root, dialect: Dialect, code: str) -> None:
    from bayling_local.translate.format_po import header_language

    language = header_language(code)
    if dialect is V2:
        root.set("trgLang", language)
    else:
        for file in root.iter():
            if local_name(file) == "file":
                file.set("target-language", language)


def _write_unit(unit, holder, dialect: Dialect, translation: str, problem: str | None) -> None:
    source = child_named(holder, "source")
    _, _, codes = flatten(source, dialect)
    target = _target_of(holder, source)
    if problem is None:
        _rebuild(target, translation, codes)
    else:  # the source's own content: valid markup, plainly untranslated, with a note saying why
        target.text = source.text
        target.extend(copy.deepcopy(child) for child in source)
    state = dialect.machine_state if problem is None else dialect.rejected_state
    if dialect is V1:
        target.set("state", state)
        if problem is None:
            target.set("state-qualifier", "mt-suggestion")
        else:
            target.attrib.pop("state-qualifier", None)
    else:
        holder.set("state", state)
    if problem is not None:
        _add_note(unit, dialect, f"{FLAG_NOTE}: {problem}; the source was copied")


def _target_of(holder, source):
    from lxml import etree

    target = child_named(holder, "target")
    if target is None:
        target = etree.Element(source.tag.replace("source", "target"))
        target.tail = source.tail
        source.addnext(target)
    else:
        tail = target.tail
        for child in list(target):
            target.remove(child)
        target.text, target.tail = None, tail
    return target


def _rebuild(target, translation: str, codes: dict[str, Code]) -> None:
    """`translation`'s tokens back as the source's inline elements (the integrity check passed)."""
    from lxml import etree

    stack, position = [target], 0
    for match in MARKUP_TOKEN.finditer(translation):
        _append_text(stack[-1], translation[position : match.start()])
        position = match.end()
        code = codes[match.group(0)]
        if code.container and match.group(1):  # a closing token of a wrapping element
            stack.pop()
        elif code.container:
            element = etree.SubElement(stack[-1], code.element.tag, dict(code.element.attrib))
            stack.append(element)
        else:
            element = copy.deepcopy(code.element)
            element.tail = None
            stack[-1].append(element)
    _append_text(stack[-1], translation[position:])


def _append_text(element, text: str) -> None:
    if not text:
        return
    if len(element):
        element[-1].tail = (element[-1].tail or "") + text
    else:
        element.text = (element.text or "") + text


def _add_note(unit, dialect: Dialect, text: str) -> None:
    from lxml import etree

    namespace = unit.tag[: unit.tag.index("}") + 1] if unit.tag.startswith("{") else ""
    if dialect is V1:
        note = etree.SubElement(unit, f"{namespace}note", {"from": "bayling-local"})
    else:
        notes = child_named(unit, "notes")
        if notes is None:
            notes = etree.Element(f"{namespace}notes")
            unit.insert(0, notes)
        note = etree.SubElement(notes, f"{namespace}note", {"category": "bayling-local"})
    note.text = text


def child_named(element, name: str):
    return next((c for c in element if isinstance(c.tag, str) and local_name(c) == name), None)


def local_name(element) -> str:
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""
