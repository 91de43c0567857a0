"""DOCX through the real bundled model: paragraphs of the body, nested tables, the header, the footer and a
footnote translated; bold runs, a hyperlink and the footnote reference kept; everything else in the package
unchanged; reruns served by the translation memory; broken answers flagged, bad files refused."""

from __future__ import annotations

import zipfile
from pathlib import Path

import docx
import pytest
from docx.opc.constants import CONTENT_TYPE as CT
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from docx.opc.packuri import PackURI
from docx.opc.part import XmlPart
from docx.oxml.ns import nsdecls, qn
from docx.oxml.parser import OxmlElement, parse_xml
from lxml import etree

from bayling_local.languages import resolve
from bayling_local.translate.batch import BatchOptions, translate_file
from bayling_local.translate.memory import TranslationMemory
from tests.conftest import run_cli
from tests.test_translate_formats import bundled_model
from tests.test_translate_xliff import CountingModel, FixedAnswerModel

FR, SW = resolve("fr"), resolve("sw")
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
SOURCE_TEXTS = [
    "The library opens at nine o'clock every morning.",
    "Read the house rules before you borrow a book.",
    "Opening hours",
    "Closed on Sunday",
    "City Library",
    "Thank you for visiting.",
    " Children need a card.",
]
"""Every paragraph with text, in segment order: body, outer table, nested table, header, footer, footnote."""


def write_sample_docx(path: Path) -> Path:
    """Bold runs, a hyperlink, a footnote reference, a nested table, a header, a footer and the footnote itself
    (python-docx has no footnotes API: the part is added as OOXML, as Word writes it)."""
    document = docx.Document()
    first = document.add_paragraph("The library opens at ")
    first.add_run("nine o'clock").bold = True
    first.add_run(" every morning.")
    second = document.add_paragraph("Read the ")
    link = OxmlElement(
        "w:hyperlink", {qn("r:id"): document.part.relate_to("https://example.org/rules", RT.HYPERLINK, True)}
    )
    link.append(parse_xml(f'<w:r {nsdecls("w")}><w:rPr><w:u w:val="single"/></w:rPr><w:t>house rules</w:t></w:r>'))
    second._p.append(link)
    second.add_run(" before you borrow a book.")
    reference = second.add_run()
    reference.font.superscript = True
    reference._r.append(parse_xml(f'<w:footnoteReference {nsdecls("w")} w:id="1"/>'))
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Opening hours"
    table.cell(0, 1).add_table(rows=1, cols=1).cell(0, 0).text = "Closed on Sunday"
    document.sections[0].header.paragraphs[0].text = "City Library"
    document.sections[0].footer.paragraphs[0].text = "Thank you for visiting."
    footnotes = parse_xml(
        f"<w:footnotes {nsdecls('w')}>"
        '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
        '<w:footnote w:id="1"><w:p><w:r><w:rPr><w:vertAlign w:val="superscript"/></w:rPr><w:footnoteRef/></w:r>'
        '<w:r><w:t xml:space="preserve"> Children need a card.</w:t></w:r></w:p></w:footnote>'
        "</w:footnotes>"
    )
    notes = XmlPart(PackURI("/word/footnotes.xml"), CT.WML_FOOTNOTES, footnotes, document.part.package)
    document.part.relate_to(notes, RT.FOOTNOTES)
    document.save(path)
    return path


def xml_parts(path: Path) -> dict[str, etree._Element]:
    with zipfile.ZipFile(path) as package:
        return {
            name: etree.fromstring(package.read(name))
            for name in package.namelist()
            if name.endswith((".xml", ".rels"))
        }


def paragraph_texts(path: Path) -> list[str]:
    """Every paragraph's text in segment order: python-docx for the body, the tables, the header and the footer;
    lxml for the footnotes, which python-docx does not read."""
    document = docx.Document(str(path))
    table, section = document.tables[0], document.sections[0]
    inner = table.cell(0, 1).tables[0]
    stories = [document.paragraphs, table.cell(0, 0).paragraphs, inner.cell(0, 0).paragraphs]
    stories += [section.header.paragraphs, section.footer.paragraphs]
    texts = [p.text for story in stories for p in story]
    notes = xml_parts(path)["word/footnotes.xml"]
    texts += ["".join(t.text for t in note.iter(f"{W}t")) for note in notes.iter(f"{W}footnote")]
    return [text for text in texts if text.strip()]


def skeleton(path: Path) -> dict[str, bytes]:
    """The package with what a translation may change taken out: the text of the runs and how it is cut into
    runs. Of each paragraph stay its properties, the sorted non-text content (links, note references,
    fields, each with its run properties) and the set of run properties its text had."""
    with zipfile.ZipFile(path) as package:
        parts = {name: package.read(name) for name in package.namelist()}
    for name, root in xml_parts(path).items():
        for paragraph in root.iter(f"{W}p"):
            _strip_text(paragraph)
        parts[name] = etree.tostring(root, method="c14n")
    return parts


def _strip_text(paragraph) -> None:
    text_properties = set()
    for text in list(paragraph.iter(f"{W}t")):
        run = text.getparent()
        properties = run.find(f"{W}rPr")
        text_properties.add(etree.tostring(properties, method="c14n") if properties is not None else b"")
        run.remove(text)
        if all(child.tag == f"{W}rPr" for child in run):
            run.getparent().remove(run)
    content = sorted((etree.tostring(child, method="c14n") for child in paragraph if child.tag != f"{W}pPr"), key=bytes)
    for child in [c for c in paragraph if c.tag != f"{W}pPr"]:
        paragraph.remove(child)
    summary = etree.SubElement(paragraph, "summary")
    summary.text = repr((content, sorted(text_properties)))


@pytest.fixture
def model():
    return bundled_model()


def test_docx_two_targets_keep_everything_but_the_text(model, tmp_path):
    path = write_sample_docx(tmp_path / "library.docx")
    original = path.read_bytes()
    assert paragraph_texts(path) == SOURCE_TEXTS
    memory = tmp_path / "tm.sqlite"
    report = translate_file(model, path, [FR, SW], options=BatchOptions(max_tokens=32, memory=memory))
    assert report.completed and report.segments == len(SOURCE_TEXTS) and report.empty == []
    with TranslationMemory.open(memory) as units:
        stored = {(u.target_lang, u.source): u.target for u in units.units()}
    for code in ("fra_Latn", "swh_Latn"):
        output = tmp_path / f"library.{code}.docx"
        assert skeleton(output) == skeleton(path), f"{code}: more than the text changed"
        texts = paragraph_texts(output)  # python-docx (and lxml for the footnotes) read it
        assert len(texts) == len(SOURCE_TEXTS)
        for source, text in zip(SOURCE_TEXTS[2:], texts[2:]):  # plain paragraphs: the memory's translation
            assert text.strip() == stored[(code, source.strip())], (code, source)
        flagged = {f.line for f in report.flagged if f.target == code}
        for line in (1, 2):  # paragraphs with codes: translated, or flagged and left as they were
            assert (texts[line - 1] == SOURCE_TEXTS[line - 1]) == (line in flagged), (code, texts[line - 1])
        assert sum(t.strip() != s.strip() for t, s in zip(texts, SOURCE_TEXTS)) >= 4, f"{code}: hardly translated"
    assert path.read_bytes() == original


def test_second_run_makes_zero_model_calls_and_identical_output(model, tmp_path):
    path = write_sample_docx(tmp_path / "library.docx")
    options = BatchOptions(max_tokens=32, memory=tmp_path / "tm.sqlite")
    first = CountingModel(model)
    translate_file(first, path, [FR, SW], options=options)
    written = {p.name: p.read_bytes() for p in tmp_path.glob("library.*_Latn.docx")}
    second = CountingModel(model)
    report = translate_file(second, path, [FR, SW], options=options)
    assert first.calls >= 2 * len(SOURCE_TEXTS) and second.calls == 0
    assert report.tm_exact == report.pieces == 2 * len(SOURCE_TEXTS) and report.translated == 0
    assert {p.name: p.read_bytes() for p in tmp_path.glob("library.*_Latn.docx")} == written


def test_answer_that_drops_a_code_is_flagged_and_the_paragraph_kept(model, tmp_path):
    path = write_sample_docx(tmp_path / "library.docx")
    bad = FixedAnswerModel(model, "Texte traduit.")
    report = translate_file(bad, path, [FR], options=BatchOptions(max_tokens=16))
    assert bad.calls == len(SOURCE_TEXTS) + 2  # one retry for each of the two paragraphs with codes
    assert sorted((f.line, f.target) for f in report.flagged) == [(1, "fra_Latn"), (2, "fra_Latn")]
    assert all("missing" in f.problem for f in report.flagged)
    output = tmp_path / "library.fra_Latn.docx"
    assert skeleton(output) == skeleton(path)
    texts = paragraph_texts(output)
    assert texts[:2] == SOURCE_TEXTS[:2] and {t.strip() for t in texts[2:]} == {"Texte traduit."}
    bold = [run.text for run in docx.Document(str(output)).paragraphs[0].runs if run.bold]
    assert bold == ["nine o'clock"]


def test_codes_come_back_in_the_translations_order(tmp_path):
    from bayling_local.translate.document import ReadOptions
    from bayling_local.translate.format_docx import read_docx, write_docx

    path = write_sample_docx(tmp_path / "library.docx")
    document = read_docx(path.read_bytes(), ReadOptions(path.name))
    assert [s.text for s in document.segments[:2]] == [
        "The library opens at <1>nine o'clock</1> every morning.",
        "Read the <1>house rules</1> before you borrow a book.",  # the footnote reference stays at the end
    ]
    answers = ["<1>À neuf heures</1>, la bibliothèque ouvre.", "Lisez le <1>règlement</1> avant.", *"cdefg"]
    output = tmp_path / "out.docx"
    output.write_bytes(write_docx(document, {"fra_Latn": answers}))
    first, second = docx.Document(str(output)).paragraphs[:2]
    assert [(r.text, bool(r.bold)) for r in first.runs] == [
        ("À neuf heures", True),
        (", la bibliothèque ouvre.", False),
    ]
    links = second._p.findall(qn("w:hyperlink"))
    assert len(links) == 1 and "".join(t.text for t in links[0].iter(qn("w:t"))) == "règlement"
    assert second.text == "Lisez le règlement avant." and second._p[-1].find(qn("w:footnoteReference")) is not None


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"Just some words, renamed to .docx\n", "not a DOCX file (not a zip package"),
        (b"", "is empty"),
        ("zip", "not a readable DOCX file"),
    ],
)
def test_bad_docx_is_one_line_and_writes_nothing(tmp_path, content, expected):
    path = tmp_path / "broken.docx"
    if content == "zip":  # a zip package, but not a word-processing one
        with zipfile.ZipFile(path, "w") as package:
            package.writestr("notes.txt", "hello")
    else:
        path.write_bytes(content)
    result = run_cli("translate", "-i", str(path), "--to", "fr,sw", "-o", str(tmp_path / "out.{lang}.docx"), "--no-tm")
    stderr = result.stderr.decode()
    assert result.returncode == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert expected in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.docx"]


def test_skeleton_sees_a_lost_link(tmp_path):
    """The round-trip check can fail: a paragraph without its hyperlink differs."""
    from bayling_local.translate.format_docx import open_docx, paragraphs

    path = write_sample_docx(tmp_path / "library.docx")
    document = open_docx(path.read_bytes(), path.name)
    second = paragraphs(document)[1]
    second.remove(second.find(qn("w:hyperlink")))
    broken = tmp_path / "broken.docx"
    document.save(str(broken))
    assert skeleton(broken)["word/document.xml"] != skeleton(path)["word/document.xml"]
