"""HTML through lxml.html: each block's text (a paragraph, a heading, a list item, a table cell, the title) is a
segment, with its inline elements (links, emphasis, spans, images, line breaks) as codes the model carries
(see `inline`); the alt, title and placeholder attributes are segments of their own.

script, style, code, pre, textarea, kbd, samp, svg and math, and anything marked `translate="no"` or
`class="notranslate"`, are copied untouched (lxml writes script and style text back byte for byte). The
encoding is kept: a byte-order mark, else a declared `<meta charset>`, else UTF-8, which is required then.
The doctype is kept and `<html lang>` becomes the target (with `dir` following its script). Whitespace inside
a translated block is collapsed, as a browser shows it; a file without `<html>`/`<body>` is written back as
a fragment, without the wrapper lxml adds. Written by hand: the block/inline walk and the charset prescan.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from bayling_local.errors import InputTextError
from bayling_local.languages import Language, resolve
from bayling_local.translate.document import Document, ReadOptions, Segment
from bayling_local.translate.inline import Inline, Mark, Span, flatten, has_letters, unflatten
from bayling_local.translate.placeholders import problems

INLINE_TAGS = frozenset(
    {
        *("a", "abbr", "acronym", "b", "bdi", "bdo", "big", "br", "button", "cite", "code", "data", "del", "dfn"),
        *("em", "font", "i", "img", "input", "ins", "kbd", "label", "mark", "meter", "nobr", "object", "output"),
        *("progress", "q", "rp", "rt", "ruby", "s", "samp", "small", "span", "strike", "strong", "sub", "sup"),
        *("svg", "math", "script", "style", "template", "textarea", "time", "tt", "u", "var", "wbr"),
    }
)
"""Elements that sit within a line of text (HTML's phrasing content); any other element starts a new segment."""
PROTECTED_TAGS = frozenset({"script", "style", "code", "pre", "textarea", "kbd", "samp", "svg", "math", "template"})
TRANSLATED_ATTRIBUTES = ("alt", "title", "placeholder")
RTL_SCRIPTS = frozenset({"Arab", "Hebr", "Thaa", "Syrc", "Nkoo", "Adlm"})
BLANKS = re.compile(r"[ \t\n\r\f]+")
"""HTML's collapsible whitespace (a no-break space is not)."""
DOCUMENT = re.compile(r"<(?:!doctype|html|head|body)[\s>]", re.IGNORECASE)
DOCTYPE = re.compile(r"<!doctype[^>]*>", re.IGNORECASE)
CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.IGNORECASE)
BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
PRESCAN_BYTES = 1024
"""How far the HTML standard's encoding prescan looks for a `<meta charset>`."""


@dataclass
class HtmlLayout:
    text: str
    encoding: str
    bom: bytes
    whole_document: bool


@dataclass(frozen=True)
class Group:
    """Text and inline elements between two blocks: `parent`'s text (no `anchor`) or `anchor`'s tail onwards."""

    parent: object
    anchor: object | None
    children: tuple


@dataclass(frozen=True)
class AttributeSlot:
    element: object
    name: str


# --- bytes <-> tree ---------------------------------------------------------------------------------------


def decode_html(data: bytes, name: str) -> HtmlLayout:
    """The file's text and how to encode it back; a one-line error for what cannot be decoded."""
    bom, encoding = next(((b, e) for b, e in BOMS if data.startswith(b)), (b"", None))
    declared = CHARSET.search(data[:PRESCAN_BYTES])
    encoding = encoding or (declared.group(1).decode("ascii").lower() if declared else "utf-8")
    try:
        text = data[len(bom) :].decode(encoding)
    except LookupError:
        raise InputTextError(f"{name} declares an unknown charset {encoding!r}; fix its <meta charset>") from None
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        said = "declares" if declared else "declares no charset, so it must be"
        raise InputTextError(
            f"{name} {said} {encoding} but byte 0x{data[error.start]:02x} on line {line} is not; declare its "
            "charset (<meta charset=...>) or convert it to UTF-8"
        ) from None
    if not text.strip():
        raise InputTextError(f"{name} is empty; give an HTML file")
    return HtmlLayout(text, encoding, bom, bool(DOCUMENT.search(text)))


def parse_html(layout: HtmlLayout, name: str):
    """The document's root (`<html>`), or for a fragment a `<div>` holding it."""
    import lxml.html
    from lxml import etree

    try:
        if layout.whole_document:
            return lxml.html.document_fromstring(layout.text)
        return lxml.html.fragment_fromstring(layout.text, create_parent="div")
    except (etree.ParserError, etree.XMLSyntaxError, ValueError) as error:
        problem = " ".join(str(error).split()) or type(error).__name__
        raise InputTextError(f"{name} is not HTML that lxml can read ({problem}); fix the file") from None


def serialize_html(root, layout: HtmlLayout) -> bytes:
    from lxml import etree

    def markup(node) -> str:
        return etree.tostring(node, method="html", encoding="unicode")

    if layout.whole_document:
        # Element by element: serializing the whole tree, libxml2 drops a `<meta http-equiv=Content-Type>` and
        # invents an HTML 4 doctype for a file without one. The file's own doctype is copied as it was.
        doctype = DOCTYPE.search(layout.text)
        nodes = [*reversed(list(root.itersiblings(preceding=True))), root, *root.itersiblings()]
        text = "\n".join(([doctype.group(0)] if doctype else []) + [markup(node) for node in nodes])
    else:
        text = (root.text or "") + "".join(markup(child) for child in root)
    if layout.text.endswith("\n") and not text.endswith("\n"):
        text += "\n"
    # A character the file's charset lacks becomes a character reference, which HTML reads back the same.
    return layout.bom + text.encode(layout.encoding, errors="xmlcharrefreplace")


# --- the format -------------------------------------------------------------------------------------------


def read_html(data: bytes, options: ReadOptions) -> Document:
    layout = decode_html(data, options.name)
    document = Document([], layout)
    for slot in segment_slots(parse_html(layout, options.name)):
        if isinstance(slot, AttributeSlot):
            text = slot.element.get(slot.name)
            document.segments.append(Segment(text, slot.element.sourceline or 0))
        else:
            flat = flatten(group_inlines(slot))
            document.segments.append(Segment(flat.text, _line_of(slot), placeholders=flat.placeholders))
    return document


def write_html(
    document: Document, translations: Mapping[str, Sequence[str]], flags: Mapping[str, Mapping[int, str]] = {}
) -> bytes:
    ((code, translated),) = translations.items()
    layout: HtmlLayout = document.layout
    root = parse_html(layout, "the input")
    slots = list(segment_slots(root))  # listed before any changes
    rejected = flags.get(code, {})
    for index, slot in enumerate(slots):
        segment, translation = document.segments[index], translated[index]
        if index in rejected or translation == segment.text or problems(segment.placeholders, translation):
            continue  # a rejected translation leaves the source as it was (the report says so)
        if isinstance(slot, AttributeSlot):
            slot.element.set(slot.name, translation)
        else:
            rebuild_group(slot, translation)
    if layout.whole_document:
        set_language(root, resolve(code))
    output = serialize_html(root, layout)
    parse_html(decode_html(output, "the HTML written"), "the HTML written")  # never write what lxml cannot read
    return output


def set_language(root, language: Language) -> None:
    """`<html lang>` (and `xml:lang` where the file has it) to the target; `dir` where the direction changes."""
    if root.tag != "html":
        return
    tag = language_tag(language)
    root.set("lang", tag)
    if root.get("xml:lang") is not None:
        root.set("xml:lang", tag)
    if language.script in RTL_SCRIPTS:
        root.set("dir", "rtl")
    elif root.get("dir") == "rtl":
        root.set("dir", "ltr")


def language_tag(language: Language) -> str:
    """BCP 47: the shortest ISO 639 code, with the script when it is not the language's usual one (zh-Hant)."""
    primary = language.iso639_1 or language.iso639_3
    usual = resolve(language.iso639_3)
    return primary if usual.code == language.code else f"{primary}-{language.script}"


# --- the walk: blocks, groups and attributes --------------------------------------------------------------


def segment_slots(root) -> Iterator[Group | AttributeSlot]:
    """What is translated, in document order: groups with letters, then their inline elements' attributes."""
    block_ancestry = _elements_holding_blocks(root)
    yield from _block_slots(root, block_ancestry)


def _elements_holding_blocks(root) -> set:
    """Elements with a block element somewhere inside (outside protected content): these are blocks too."""
    holding: set = set()
    for element in root.iter():
        if _is_element(element) and element.tag not in INLINE_TAGS and not _protected(element):
            holding.update(a for a in element.iterancestors())
    return holding


def _block_slots(block, holding: set) -> Iterator[Group | AttributeSlot]:
    yield from _attribute_slots(block)
    anchor, children = None, []
    for child in block:
        if _is_block(child, holding):
            yield from _group_slots(Group(block, anchor, tuple(children)))
            if not _protected(child):
                yield from _block_slots(child, holding)
            anchor, children = child, []
        else:
            children.append(child)
    yield from _group_slots(Group(block, anchor, tuple(children)))


def _group_slots(group: Group) -> Iterator[Group | AttributeSlot]:
    if has_letters(group_inlines(group)):
        yield group
    for child in group.children:
        if _is_element(child) and not _protected(child):
            for element in child.iter():
                if not _protected(element) and not any(_protected(a) for a in _ancestors_within(element, child)):
                    yield from _attribute_slots(element)


def _ancestors_within(element, top) -> Iterator:
    while element is not top:
        element = element.getparent()
        yield element


def _attribute_slots(element) -> Iterator[AttributeSlot]:
    for name in TRANSLATED_ATTRIBUTES:
        if has_letters([element.get(name) or ""]):
            yield AttributeSlot(element, name)


def _is_element(node) -> bool:
    return isinstance(node.tag, str)


def _is_block(node, holding: set) -> bool:
    return _is_element(node) and (node.tag not in INLINE_TAGS or node in holding)


def _protected(element) -> bool:
    if not _is_element(element):
        return True  # comments and processing instructions: copied as they are
    classes = (element.get("class") or "").split()
    return element.tag in PROTECTED_TAGS or element.get("translate") == "no" or "notranslate" in classes


def _line_of(group: Group) -> int:
    first = next((c for c in group.children if _is_element(c)), None)
    return (first.sourceline if first is not None else None) or group.parent.sourceline or 0


# --- groups <-> inline items ------------------------------------------------------------------------------


def group_inlines(group: Group) -> list[Inline]:
    start = group.anchor.tail if group.anchor is not None else group.parent.text
    items: list[Inline] = [start] if start else []
    for child in group.children:
        items.append(_inline(child))
        if child.tail:
            items.append(child.tail)
    return _collapsed(items)


def _inline(element) -> Inline:
    if _protected(element):
        return Mark(element)
    children: list[Inline] = [element.text] if element.text else []
    for child in element:
        children.append(_inline(child))
        if child.tail:
            children.append(child.tail)
    return Span(element, children)


def _collapsed(items: list[Inline]) -> list[Inline]:
    """Blank runs inside the group as one space; the blanks at its very start and end kept as they are."""
    squeezed = [_squeezed(item) for item in items]
    if items and isinstance(items[0], str):
        lead = items[0][: len(items[0]) - len(items[0].lstrip(" \t\n\r\f"))]
        squeezed[0] = lead + squeezed[0].lstrip(" ")
    if items and isinstance(items[-1], str):
        trail = items[-1][len(items[-1].rstrip(" \t\n\r\f")) :]
        squeezed[-1] = squeezed[-1].rstrip(" ") + trail
    return squeezed


def _squeezed(item: Inline) -> Inline:
    if isinstance(item, str):
        return BLANKS.sub(" ", item)
    if isinstance(item, Span):
        return Span(item.payload, [_squeezed(child) for child in item.children])
    return item


def rebuild_group(group: Group, translation: str) -> None:
    translated = unflatten(translation, flatten(group_inlines(group)))
    parent = group.parent
    for child in group.children:
        parent.remove(child)
    if group.anchor is None:
        parent.text = None
        cursor = _Cursor(parent, None, 0)
    else:
        group.anchor.tail = None
        cursor = _Cursor(parent, group.anchor, parent.index(group.anchor) + 1)
    _render(translated, cursor)


@dataclass
class _Cursor:
    """Where the next text or element goes: after `last` (or at the start of `parent`), at `index`."""

    parent: object
    last: object | None
    index: int

    def add_text(self, text: str) -> None:
        if self.last is None:
            self.parent.text = (self.parent.text or "") + text
        else:
            self.last.tail = (self.last.tail or "") + text

    def add_element(self, element) -> None:
        element.tail = None
        self.parent.insert(self.index, element)
        self.index += 1
        self.last = element


def _render(items: Sequence[Inline], cursor: _Cursor) -> None:
    for item in items:
        if isinstance(item, str):
            cursor.add_text(item)
        elif isinstance(item, Mark):
            cursor.add_element(item.payload)
        else:
            element = item.payload
            element.text = None
            for child in list(element):
                element.remove(child)
            cursor.add_element(element)
            _render(item.children, _Cursor(element, None, 0))
