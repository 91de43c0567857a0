"""DOCX through python-docx: every paragraph with letters is one segment (the body, tables at any depth, text
boxes, headers, footers, footnotes and endnotes); its run formatting, links, fields and note references are
codes the model carries (see `inline`), rebuilt into runs with the original run properties.

python-docx opens and saves the package and parses the parts it knows (document, headers, footers). It has no
footnotes or endnotes API, so those two parts are registered as plain `XmlPart`s, python-docx's generic parsed
XML part, and read as OOXML with lxml like the rest. Paragraph content is rebuilt at the OOXML level too:
python-docx's Run API cannot move a field, a drawing or a note reference between runs.

Within a paragraph, consecutive text runs with the same properties are one piece of text; the properties
most of the paragraph's text has are its plain text, any others a code pair (`<1>bold</1>`). Links
(`w:hyperlink`), simple fields (`w:fldSimple`), smart tags and insertions are code pairs around their runs;
a complex field's instructions (`w:fldChar` begin … separate) and its end are a pair around its result. Tabs,
breaks, drawings, note references, bookmarks and deletions are standalone codes, moved unchanged. Spelling
marks (`w:proofErr`), soft hyphens and Word's last-rendered page breaks describe the source text only and
are dropped from a translated paragraph; everything outside translated paragraphs is saved as it was.
A segment's "line" in reports is its paragraph's number: body first, then headers, footers, footnotes, endnotes.
"""

from __future__ import annotations

import copy
import io
import re
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bayling_local.errors import InputTextError
from bayling_local.translate.document import Document, ReadOptions, Segment
from bayling_local.translate.inline import Inline, Mark, Span, flatten, has_letters, unflatten
from bayling_local.translate.placeholders import problems

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
STORY_TYPES = tuple(
    f"application/vnd.openxmlformats-officedocument.wordprocessingml.{kind}+xml"
    for kind in ("document.main", "header", "footer", "footnotes", "endnotes")
)
"""The parts whose paragraphs are translated, in the order their segments are numbered."""
CONTAINERS = frozenset({"hyperlink", "fldSimple", "smartTag", "customXml", "ins", "moveTo", "dir", "bdo"})
"""Paragraph-level elements that wrap runs: a code pair around their text."""
DROPPED = frozenset({"proofErr", "lastRenderedPageBreak", "softHyphen", "rPr"})
"""What a rebuilt paragraph leaves out: facts about the source text (run properties are copied separately)."""
TEXT = f"{{{W}}}t"
XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"


@dataclass(frozen=True, eq=False)
class RunPiece:
    """One child of a run (text, tab, break, field character, drawing, note reference) and the run's properties."""

    properties: object | None
    element: object
    run: object
    """The run it came from: pieces of one run go back into one run, with its attributes."""


@dataclass(eq=False)
class Formatting:
    properties: object | None


@dataclass(eq=False)
class Container:
    element: object
    base: object | None
    """The run properties of most of the container's text."""


@dataclass(eq=False)
class Field:
    instructions: list
    """The pieces from `w:fldChar begin` to `separate`, moved unchanged."""
    base: object | None
    end: list = field(default_factory=list)


@dataclass
class DocxLayout:
    data: bytes
    places: list[int]
    """Segment index -> position of its paragraph among `paragraphs()`."""


def open_docx(data: bytes, name: str):
    """`data` opened by python-docx, or a one-line error (an empty file, a renamed text file, a broken zip)."""
    if not data:
        raise InputTextError(f"{name} is empty; give a .docx saved by Word or LibreOffice")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise InputTextError(
            f"{name} is not a DOCX file (not a zip package; a renamed text file?); save it as .docx from a word processor"
        )
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from lxml import etree

    _register_note_parts()
    try:
        return docx.Document(io.BytesIO(data))
    except (KeyError, ValueError, zipfile.BadZipFile, etree.XMLSyntaxError, PackageNotFoundError) as error:
        problem = " ".join(str(error).split()) or type(error).__name__
        raise InputTextError(
            f"{name} is not a readable DOCX file ({problem}); open and save it again as .docx"
        ) from None


def _register_note_parts() -> None:
    # python-docx loads part types it does not know as opaque blobs; as XmlParts (its own generic class) the
    # footnotes and endnotes are parsed once and saved from their element like the document itself.
    from docx.opc.part import PartFactory, XmlPart

    for content_type in STORY_TYPES[3:]:
        PartFactory.part_type_for.setdefault(content_type, XmlPart)


def paragraphs(document) -> list:
    """Every `w:p` of the translated parts (nested ones included), in segment order."""
    parts = [p for p in document.part.package.iter_parts() if p.content_type in STORY_TYPES]
    parts.sort(key=lambda part: (STORY_TYPES.index(part.content_type), _natural(str(part.partname))))
    return [p for part in parts for p in part.element.iter(f"{{{W}}}p")]


def _natural(name: str) -> list:
    return [int(digits) if digits else text for text, digits in re.findall(r"(\D*)(\d*)", name)]


def read_docx(data: bytes, options: ReadOptions) -> Document:
    document = Document([], DocxLayout(data, []))
    for position, paragraph in enumerate(paragraphs(open_docx(data, options.name))):
        items, _ = paragraph_inlines(paragraph)
        if not has_letters(items):
            continue
        flat = flatten(items)
        document.layout.places.append(position)
        document.segments.append(Segment(flat.text, position + 1, placeholders=flat.placeholders))
    return document


def write_docx(
    document: Document, translations: Mapping[str, Sequence[str]], flags: Mapping[str, Mapping[int, str]] = {}
) -> bytes:
    ((code, translated),) = translations.items()
    layout: DocxLayout = document.layout
    docx_document = open_docx(layout.data, "the input")
    every_paragraph = paragraphs(docx_document)  # listed before any changes: text boxes nest paragraphs
    rejected = flags.get(code, {})
    for index, position in enumerate(layout.places):
        segment, translation = document.segments[index], translated[index]
        if index in rejected or translation == segment.text or problems(segment.placeholders, translation):
            continue  # a rejected translation leaves the paragraph as it was (the report says so)
        rebuild_paragraph(every_paragraph[position], translation)
    buffer = io.BytesIO()
    docx_document.save(buffer)
    output = dated_like(buffer.getvalue(), layout.data)
    open_docx(output, "the DOCX written")  # never write a file python-docx cannot open again
    return output


def dated_like(output: bytes, source: bytes) -> bytes:
    """`output` with each member dated as in `source` (a new member: the zip epoch). python-docx dates every
    member "now", so two runs over the same input would not give the same file."""
    with zipfile.ZipFile(io.BytesIO(source)) as original:
        dates = {info.filename: info.date_time for info in original.infolist()}
    rewritten = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(output)) as saved, zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as out:
        for info in saved.infolist():
            member = zipfile.ZipInfo(info.filename, dates.get(info.filename, (1980, 1, 1, 0, 0, 0)))
            member.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(member, saved.read(info))
    return rewritten.getvalue()


def rebuild_paragraph(paragraph, translation: str) -> None:
    items, base = paragraph_inlines(paragraph)
    translated = unflatten(translation, flatten(items))
    _render(translated, _emptied(paragraph), base)


# --- OOXML -> inline items --------------------------------------------------------------------------------


def paragraph_inlines(paragraph) -> tuple[list[Inline], object | None]:
    """The paragraph's content as inline items, and the run properties its plain text has."""
    return _level(paragraph)


def _level(element) -> tuple[list[Inline], object | None]:
    """The items inside a paragraph or a container (its own properties element, `w:pPr`, `w:smartTagPr`…, aside)."""
    return _formatted_level(_paired_fields(_fields(_units(c for c in element if not _local(c).endswith("Pr")))))


def _units(children) -> list:
    """Run pieces, containers and other elements, in order."""
    units: list = []
    for child in children:
        name = _local(child)
        if name == "r":
            units += [RunPiece(child.find(f"{{{W}}}rPr"), c, child) for c in child if _local(c) not in DROPPED]
        elif name not in DROPPED:
            units.append(child)
    return units


@dataclass(eq=False)
class _FieldStart:
    pieces: list


@dataclass(eq=False)
class _FieldEnd:
    pieces: list


def _fields(units: list) -> list:
    """Complex fields' instructions grouped: begin…separate is a `_FieldStart`, a field with no result one `Mark`."""
    grouped: list = []
    instructions: list | None = None
    depth = 0
    for unit in units:
        char = _field_char(unit)
        if instructions is not None:
            instructions.append(unit)
            depth += {"begin": 1, "end": -1}.get(char, 0)
            if depth == 0:
                grouped.append(Mark(instructions))
                instructions = None
            elif char == "separate" and depth == 1:
                grouped.append(_FieldStart(instructions))
                instructions = None
        elif char == "begin":
            instructions, depth = [unit], 1
        elif char == "end":
            grouped.append(_FieldEnd([unit]))
        else:
            grouped.append(unit)
    if instructions is not None:  # instructions going on into the next paragraph: kept as they are
        grouped.append(Mark(instructions))
    return grouped


def _paired_fields(units: list) -> list:
    """A field's result nested in a `Field` span; a start or end whose partner is in another paragraph is a mark."""
    root: list = []
    stack: list[tuple[list, Span | None]] = [(root, None)]
    for unit in units:
        if isinstance(unit, _FieldStart):
            span = Span(Field(unit.pieces, None))
            stack[-1][0].append(span)
            stack.append((span.children, span))
        elif isinstance(unit, _FieldEnd) and len(stack) > 1:
            _, span = stack.pop()
            span.payload.end = unit.pieces
        elif isinstance(unit, _FieldEnd):
            root.append(Mark(unit.pieces))
        else:
            stack[-1][0].append(unit)
    while len(stack) > 1:  # a result that goes on into the next paragraph (a table of contents)
        children, span = stack.pop()
        level = stack[-1][0]
        at = level.index(span)
        level[at : at + 1] = [Mark(span.payload.instructions), *children]
    return root


def _base_properties(units: list):
    """The run properties with the most text at this level (the paragraph's, a link's, a field result's)."""
    lengths: Counter = Counter()
    first: dict[bytes, object] = {}
    for unit in units:
        if _is_text(unit):
            key = _key(unit.properties)
            lengths[key] += len(unit.element.text or "")
            first.setdefault(key, unit.properties)
    return first[lengths.most_common(1)[0][0]] if lengths else None


def _formatted(units: list, base) -> list[Inline]:
    items: list[Inline] = []
    base_key = _key(base)
    for unit in units:
        if _is_text(unit):
            _add_text(items, unit, base_key)
        elif isinstance(unit, Span):  # a field: its result is a level of its own
            children, result_base = _formatted_level(unit.children)
            unit.payload.base = result_base
            items.append(Span(unit.payload, children))
        elif isinstance(unit, Mark):
            _add_mark(items, unit.payload)
        elif isinstance(unit, RunPiece) or _local(unit) not in CONTAINERS:
            _add_mark(items, [unit])
        else:
            children, container_base = _level(unit)
            items.append(Span(Container(unit, container_base), children))
    return items


def _formatted_level(units: list) -> tuple[list[Inline], object | None]:
    base = _base_properties(units)
    return _formatted(units, base), base


def _add_text(items: list[Inline], piece: RunPiece, base_key: bytes) -> None:
    text = piece.element.text or ""
    if not text:
        return
    key = _key(piece.properties)
    if key == base_key:
        if items and isinstance(items[-1], str):
            items[-1] += text
        else:
            items.append(text)
        return
    last = items[-1] if items else None
    if isinstance(last, Span) and isinstance(last.payload, Formatting) and _key(last.payload.properties) == key:
        last.children[-1] += text
    else:
        items.append(Span(Formatting(piece.properties), [text]))


def _add_mark(items: list[Inline], pieces: list) -> None:
    if items and isinstance(items[-1], Mark):
        items[-1].payload.extend(pieces)
    else:
        items.append(Mark(list(pieces)))


def _is_text(unit) -> bool:
    return isinstance(unit, RunPiece) and unit.element.tag == TEXT


def _field_char(unit) -> str | None:
    if isinstance(unit, RunPiece) and _local(unit.element) == "fldChar":
        return unit.element.get(f"{{{W}}}fldCharType")
    return None


def _key(properties) -> bytes:
    from lxml import etree

    return b"" if properties is None else etree.tostring(properties, method="c14n")


def _local(element) -> str:
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


# --- inline items -> OOXML --------------------------------------------------------------------------------


def _render(items: Sequence[Inline], parent, base) -> None:
    for item in items:
        if isinstance(item, str):
            parent.append(_run(base, [_text_element(item)]))
        elif isinstance(item, Mark):
            _append_pieces(parent, item.payload)
        elif isinstance(item.payload, Formatting):
            _render(item.children, parent, item.payload.properties)
        elif isinstance(item.payload, Container):
            shell = _emptied(item.payload.element)
            parent.append(shell)
            _render(item.children, shell, item.payload.base)
        else:
            _append_pieces(parent, item.payload.instructions)
            _render(item.children, parent, item.payload.base)
            _append_pieces(parent, item.payload.end)


def _append_pieces(parent, pieces: list) -> None:
    """Pieces moved into new runs (one per run of the source), other elements moved as they are."""
    run, source = None, None
    for piece in pieces:
        if not isinstance(piece, RunPiece):
            parent.append(piece)
            run = None
        elif run is not None and piece.run is source:
            run.append(piece.element)
        else:
            run, source = _run(piece.properties, [piece.element], piece.run.attrib), piece.run
            parent.append(run)


def _run(properties, children: list, attributes: Mapping[str, str] = {}):
    from docx.oxml.parser import OxmlElement

    run = OxmlElement("w:r", attrs=dict(attributes))
    if properties is not None:
        run.append(copy.deepcopy(properties))
    for child in children:
        run.append(child)
    return run


def _text_element(text: str):
    from docx.oxml.parser import OxmlElement

    element = OxmlElement("w:t")
    element.text = text
    if text != text.strip():
        element.set(XML_SPACE, "preserve")
    return element


def _emptied(element):
    """A paragraph or container without its content (its own properties element, `w:pPr`, `w:smartTagPr`…, stays)."""
    for child in list(element):
        if not _local(child).endswith("Pr"):
            element.remove(child)
    return element
