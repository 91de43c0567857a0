"""HTML through the real bundled model: block text and alt/title/placeholder translated, links and emphasis
kept as codes, script/style/code/pre byte for byte, doctype and charset kept, <html lang> set; reruns served
by the translation memory; broken answers flagged; undecodable or empty files refused in one line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import lxml.html
import pytest
from lxml import etree

from bayling_local.languages import resolve
from bayling_local.translate.batch import BatchOptions, translate_file
from bayling_local.translate.memory import TranslationMemory
from tests.conftest import run_cli
from tests.test_translate_formats import bundled_model
from tests.test_translate_xliff import CountingModel, FixedAnswerModel

FR, SW = resolve("fr"), resolve("sw")
SCRIPT = '\n    if (a < b && c > d) { show("<p>not a paragraph</p>"); }\n  '
STYLE = "\n    p > a { color: #a00; }  /* <b> & </b> */\n  "
PRE = "  keep   these\n     spaces &amp; &lt;tags&gt;  "
PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>City Library</title>
  <style>{STYLE}</style>
  <script>{SCRIPT}</script>
</head>
<body>
  <h1 title="Welcome page">Welcome to the library</h1>
  <p>Read the <a href="/rules" title="House rules">house rules</a> before you <b>borrow</b> a book.</p>
  <img src="logo.png" alt="The library logo">
  <input name="q" placeholder="Search the catalogue">
  <p>Run <code>make &lt;all&gt;</code> every night.</p>
  <pre>{PRE}</pre>
  <!-- built by hand -->
</body>
</html>
"""
ATTRIBUTES = ("alt", "title", "placeholder")
PLAIN = {"title": "City Library", "h1": "Welcome to the library"}
"""Blocks without codes: their text is the memory's translation."""


def write_page(folder: Path, text: str = PAGE, name: str = "library.html", encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def skeleton(data: bytes) -> tuple:
    """What a translation must leave alone, as lxml reads it: the elements and their other attributes, the
    order of the blocks, each paragraph's inline elements, the protected elements whole, the comments."""
    root = lxml.html.document_fromstring(data)

    def attributes(element) -> tuple:
        return tuple(sorted((k, v) for k, v in element.attrib.items() if k not in (*ATTRIBUTES, "lang")))

    elements = [(e.tag, attributes(e)) for e in root.iter() if isinstance(e.tag, str)]
    blocks = [e for e in elements if e[0] not in ("a", "b", "code")]
    inline = [Counter(c.tag for c in p.iter() if c is not p) for p in root.iter("p")]
    protected = [etree.tostring(e, with_tail=False) for e in root.iter("script", "style", "code", "pre")]
    comments = [c.text for c in root.iter(etree.Comment)]
    return Counter(elements), blocks, inline, protected, comments


@pytest.fixture
def model():
    return bundled_model()


def test_html_two_targets_keep_markup_and_code(model, tmp_path):
    path = write_page(tmp_path)
    memory = tmp_path / "tm.sqlite"
    report = translate_file(model, path, [FR, SW], options=BatchOptions(max_tokens=32, memory=memory))
    assert report.completed and report.segments == 8 and report.empty == []
    with TranslationMemory.open(memory) as units:
        stored = {(u.target_lang, u.source): u.target for u in units.units()}
    for code, lang in (("fra_Latn", "fr"), ("swh_Latn", "sw")):
        data = (tmp_path / f"library.{code}.html").read_bytes()
        assert skeleton(data) == skeleton(PAGE.encode()), f"{code}: more than the text changed"
        text = data.decode("utf-8")
        assert text.startswith(f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n  <meta charset="utf-8">')
        assert f"<script>{SCRIPT}</script>" in text and f"<style>{STYLE}</style>" in text  # byte for byte
        assert f"<pre>{PRE}</pre>" in text and "<code>make &lt;all&gt;</code>" in text
        root = lxml.html.document_fromstring(data)
        for tag, source in PLAIN.items():
            assert root.find(f".//{tag}").text == stored[(code, source)]
        for element, name, source in (
            (root.find(".//h1"), "title", "Welcome page"),
            (root.find(".//a"), "title", "House rules"),
            (root.find(".//img"), "alt", "The library logo"),
            (root.find(".//input"), "placeholder", "Search the catalogue"),
        ):
            assert element.get(name) == stored[(code, source)], (code, name)
        flagged = {f.line for f in report.flagged if f.target == code}
        link_paragraph = root.findall(".//p")[0]
        translated = link_paragraph.text_content() != "Read the house rules before you borrow a book."
        assert translated != (15 in flagged)
    assert path.read_text() == PAGE


def test_second_run_makes_zero_model_calls_and_identical_output(model, tmp_path):
    path = write_page(tmp_path)
    options = BatchOptions(max_tokens=32, memory=tmp_path / "tm.sqlite")
    first = CountingModel(model)
    translate_file(first, path, [FR, SW], options=options)
    written = {p.name: p.read_bytes() for p in tmp_path.glob("library.*_Latn.html")}
    second = CountingModel(model)
    report = translate_file(second, path, [FR, SW], options=options)
    assert first.calls >= 16 and second.calls == 0
    assert report.tm_exact == report.pieces == 16 and report.translated == 0
    assert {p.name: p.read_bytes() for p in tmp_path.glob("library.*_Latn.html")} == written


def test_answer_that_drops_a_code_is_flagged_and_the_block_kept(model, tmp_path):
    path = write_page(tmp_path)
    bad = FixedAnswerModel(model, "Texte traduit.")
    report = translate_file(bad, path, [FR], options=BatchOptions(max_tokens=16))
    assert bad.calls == 8 + 2  # one retry for each of the two paragraphs with codes
    assert sorted(f.line for f in report.flagged) == [15, 18]
    data = (tmp_path / "library.fra_Latn.html").read_bytes()
    assert skeleton(data) == skeleton(PAGE.encode())
    text = data.decode()
    assert (
        '<p>Read the <a href="/rules" title="Texte traduit.">house rules</a> before you <b>borrow</b> a book.</p>'
        in text
    )
    assert "<p>Run <code>make &lt;all&gt;</code> every night.</p>" in text
    assert '<h1 title="Texte traduit.">Texte traduit.</h1>' in text


def test_codes_come_back_in_the_translations_order():
    from bayling_local.translate.document import ReadOptions
    from bayling_local.translate.format_html import read_html, write_html

    document = read_html(PAGE.encode(), ReadOptions("library.html"))
    texts = [s.text for s in document.segments]
    assert texts[3] == "Read the <1>house rules</1> before you <2>borrow</2> a book."
    assert texts[7] == "Run <1/> every night."
    answers = list(texts)
    answers[3] = "Avant d'<2>emprunter</2>, lisez le <1>règlement</1>."
    output = write_html(document, {"fra_Latn": answers}).decode()
    assert '<p>Avant d\'<b>emprunter</b>, lisez le <a href="/rules" title="House rules">règlement</a>.</p>' in output


def test_declared_charset_is_read_and_written_back(model, tmp_path):
    page = PAGE.replace('<meta charset="utf-8">', '<meta charset="iso-8859-1">').replace("City Library", "Café")
    path = write_page(tmp_path, page, encoding="iso-8859-1")
    answer = FixedAnswerModel(model, "Crème brûlée")
    translate_file(answer, path, [FR], options=BatchOptions(max_tokens=16))
    data = (tmp_path / "library.fra_Latn.html").read_bytes()
    assert b'<meta charset="iso-8859-1">' in data and b"<title>Cr\xe8me br\xfbl\xe9e</title>" in data


@pytest.mark.parametrize(
    "content, expected",
    [
        ("<p>Caf\u00e9 cr\u00e8me</p>\n".encode("latin-1"), "declares no charset, so it must be utf-8"),
        (b"", "is empty"),
        (b"<!DOCTYPE html>\n", "not HTML that lxml can read"),
    ],
)
def test_bad_html_is_one_line_and_writes_nothing(tmp_path, content, expected):
    path = tmp_path / "broken.html"
    path.write_bytes(content)
    result = run_cli("translate", "-i", str(path), "--to", "fr,sw", "--no-tm")
    stderr = result.stderr.decode()
    assert result.returncode == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert expected in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.html"]
