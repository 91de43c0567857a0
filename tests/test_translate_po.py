"""gettext PO through the real bundled model: msgctxt, plurals by the target's Plural-Forms, comments and
flags kept, format specifiers exact, fuzzy marking, and broken answers flagged instead of written."""

from __future__ import annotations

import polib
import pytest

from bayling_local.languages import resolve
from bayling_local.translate.batch import BatchOptions, translate_file
from bayling_local.translate.placeholders import format_placeholders
from tests.conftest import run_cli
from tests.test_translate_formats import bundled_model
from tests.test_translate_xliff import CountingModel, FixedAnswerModel, copy_fixture

FR, RU = resolve("fr"), resolve("ru")


@pytest.fixture
def model():
    return bundled_model()


def unchanged_parts(entry: polib.POEntry) -> tuple:
    flags = tuple(f for f in entry.flags if f != "fuzzy")
    return (entry.msgctxt, entry.msgid, entry.msgid_plural, entry.comment, entry.occurrences, flags, entry.obsolete)


def specifiers(entry: polib.POEntry, text: str) -> list[str]:
    printf = "python-format" in entry.flags or "c-format" in entry.flags
    brace = "python-format" in entry.flags or "python-brace-format" in entry.flags
    return sorted(p.token for p in format_placeholders(text, printf, brace))


def test_po_two_targets_plurals_contexts_and_specifiers(model, tmp_path):
    path = copy_fixture("shop.po", tmp_path)
    report = translate_file(model, path, [FR, RU], options=BatchOptions(max_tokens=40, memory=tmp_path / "tm.sqlite"))
    assert report.completed and report.segments == 7
    original = polib.pofile(str(path))
    for code, language, nplurals in (("fra_Latn", "fr", 2), ("rus_Cyrl", "ru", 3)):
        output = polib.pofile(str(tmp_path / f"shop.{code}.po"))  # the format's own library reads it
        assert output.metadata["Language"] == language
        assert output.metadata["Plural-Forms"].startswith(f"nplurals={nplurals};")
        assert [unchanged_parts(e) for e in output] == [unchanged_parts(e) for e in original]
        done = {(e.msgctxt, e.msgid): e for e in output}
        assert done[(None, "Thank you for shopping with us.")].msgstr == "Merci d'avoir fait vos achats chez nous."
        assert "fuzzy" not in done[(None, "Thank you for shopping with us.")].flags
        plural = done[(None, "%d item in your cart")]
        assert sorted(plural.msgstr_plural) == list(range(nplurals))
        for entry in output:
            if entry.msgid == "Thank you for shopping with us." or entry.obsolete:
                continue
            assert "fuzzy" in entry.flags
            texts = list(entry.msgstr_plural.values()) if entry.msgid_plural else [entry.msgstr]
            for text in texts:
                assert text == "" or specifiers(entry, text) == specifiers(entry, entry.msgid), (entry.msgid, text)
            if not any(texts):  # rejected twice: left empty, with the reason for the reviewer
                assert "machine translation rejected" in entry.tcomment
        assert output.obsolete_entries()[0].msgid == "Old unused string"


def test_no_fuzzy_and_rerun_from_memory(model, tmp_path):
    path = copy_fixture("shop.po", tmp_path)
    options = BatchOptions(max_tokens=40, memory=tmp_path / "tm.sqlite", mark_fuzzy=False)
    first = CountingModel(model)
    translate_file(first, path, [FR], options=options)
    written = (tmp_path / "shop.fra_Latn.po").read_bytes()
    second = CountingModel(model)
    report = translate_file(second, path, [FR], options=options)
    assert first.calls >= 7 and second.calls == 0 and report.tm_exact == 7
    assert (tmp_path / "shop.fra_Latn.po").read_bytes() == written
    translated = [e for e in polib.pofile(written.decode()) if e.msgstr and not e.tcomment]
    assert translated and all("fuzzy" not in e.flags for e in translated)


def test_answer_that_drops_a_specifier_is_flagged_and_left_empty(model, tmp_path):
    path = copy_fixture("shop.po", tmp_path)
    bad = FixedAnswerModel(model, "Bonjour, votre commande est prête.")
    report = translate_file(bad, path, [FR], options=BatchOptions(max_tokens=40))
    assert len(report.flagged) == 5 and bad.calls == 7 + 5
    entries = {(e.msgctxt, e.msgid): e for e in polib.pofile(str(tmp_path / "shop.fra_Latn.po"))}
    hello = entries[(None, "Hello %(name)s, your order is ready.")]
    assert hello.msgstr == "" and "fuzzy" in hello.flags and "%(name)s missing" in hello.tcomment
    assert entries[("menu", "Open")].msgstr == "Bonjour, votre commande est prête."


def test_specifier_order_rule():
    from bayling_local.translate.placeholders import problems

    found = format_placeholders("Saved %s in %d seconds.", True, False)
    assert problems(found, "En %d secondes, %s enregistré.") and not problems(found, "%s enregistré en %d s.")
    named = format_placeholders("%(a)s and %(b)s", True, False)
    assert not problems(named, "%(b)s et %(a)s") and problems(named, "%(b)s et %(b)s")


def test_po_syntax_error_is_one_line_and_writes_nothing(tmp_path):
    path = copy_fixture("syntax-error.po", tmp_path)
    result = run_cli("translate", "-i", str(path), "--to", "fr", "--no-tm")
    stderr = result.stderr.decode()
    assert result.returncode == 2 and len(stderr.strip().splitlines()) == 1
    assert "not a valid PO file" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syntax-error.po"]
