"""The translate screen's file mode with translators' formats: a PO file into two languages through the
real bundled model, the translation memory's hits shown while and after a run, and the format list taken
from the registry.

Model calls are counted at the model (`CountingModel`); the output is read back with polib.
"""

from __future__ import annotations

import re

import polib
import pytest
from textual.widgets import Input, ProgressBar, Select

from bayling_local.translate.formats import FORMATS, FileFormat
from bayling_local.tui.app import BaylingApp
from bayling_local.tui.translation import FROM_EXTENSION
from bayling_local.tui.widgets.file_translation import FileTranslation
from tests.test_translate_xliff import CountingModel
from tests.test_tui_app import hold_after, running, sync, wait_for

pytestmark = pytest.mark.slow

SHOP_PO = r"""msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\n"
"Language: en\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\n"

#. Shown on the front page
msgid "Good morning."
msgstr ""

msgctxt "menu"
msgid "Open the door"
msgstr ""

#, python-format
msgid "Hello %(name)s."
msgstr ""
"""
ENTRIES = 3
TARGETS = ("fra_Latn", "swh_Latn")
HEADER_LANGUAGE = {"fra_Latn": "fr", "swh_Latn": "sw"}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A BAYLING_HOME of the test's own: the default translation memory starts empty."""
    monkeypatch.setenv("BAYLING_HOME", str(tmp_path))
    return tmp_path


MEMORY = re.compile(r"memory: (\d+) exact hits · (\d+) fuzzy-assisted · (\d+) fresh translations")


def label_text(screen, selector: str) -> str:
    return str(screen.query_one(selector).render())


def shown_memory_counts(screen) -> tuple[int, int, int]:
    found = MEMORY.search(label_text(screen, "#file-memory"))
    assert found, f"no memory counts shown: {label_text(screen, '#file-memory')!r}"
    return tuple(int(number) for number in found.groups())


async def open_file_tab(pilot, targets=TARGETS):
    await pilot.press("f2")
    screen = pilot.app.screen
    await screen.remove_target("zho_Hans")
    for code in targets:
        await screen.add_target(code)
    screen.query_one("TabbedContent").active = "file-mode"
    await pilot.pause()
    return screen


async def run_file(pilot, screen) -> None:
    widget = screen.query_one(FileTranslation)
    widget.report = None
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: widget.report is not None, timeout=300, what="the file run to finish")
    await wait_for(pilot, lambda: not screen.running, what="the screen to leave the running state")


def entries_besides_targets(po: polib.POFile) -> list[tuple]:
    return [(e.msgctxt, e.msgid, e.comment, [f for f in e.flags if f != "fuzzy"]) for e in po]


@sync
async def test_a_po_file_into_two_languages_shows_memory_hits_and_a_rerun_makes_no_model_call(smollm2, home):
    source = home / "shop.po"
    source.write_text(SHOP_PO, encoding="utf-8")
    outputs = {code: home / f"shop.{code}.po" for code in TARGETS}
    model = CountingModel(smollm2)
    app = BaylingApp(loaded=model)
    async with running(app) as pilot:
        screen = await open_file_tab(pilot)
        screen.query_one("#file-input", Input).value = str(source)
        await pilot.pause()
        plan = label_text(screen, "#file-plan")  # the CLI's naming, shown before the run: one file per target
        assert plan.startswith("po → ") and all(str(path) in plan for path in outputs.values()), plan

        await run_file(pilot, screen)
        first = screen.query_one(FileTranslation).report
        assert first.completed and first.segments == ENTRIES and first.pieces == ENTRIES * len(TARGETS)
        assert shown_memory_counts(screen) == (first.tm_exact, first.tm_fuzzy, first.fresh)
        assert first.tm_exact == 0 and first.translated == first.pieces and model.calls >= first.pieces
        written = {code: path.read_bytes() for code, path in outputs.items()}
        original = polib.pofile(SHOP_PO)
        for code, path in outputs.items():
            output = polib.pofile(str(path))  # the format's own library reads what the screen wrote
            assert output.metadata["Language"] == HEADER_LANGUAGE[code]
            assert entries_besides_targets(output) == entries_besides_targets(original)
            assert all(e.msgstr or "machine translation rejected" in e.tcomment for e in output)

        calls_before = model.calls
        await run_file(pilot, screen)
        second = screen.query_one(FileTranslation).report
        assert shown_memory_counts(screen) == (ENTRIES * len(TARGETS), 0, 0)
        assert (second.tm_exact, second.tm_fuzzy, second.fresh) == (ENTRIES * len(TARGETS), 0, 0)
        assert model.calls == calls_before, "the second run called the model"
        assert {code: path.read_bytes() for code, path in outputs.items()} == written
        assert screen.query_one("#file-progress", ProgressBar).progress == second.pieces


@sync
async def test_memory_hits_show_while_a_file_runs_after_one_entry_is_edited(smollm2, home, monkeypatch):
    source = home / "shop.po"
    source.write_text(SHOP_PO, encoding="utf-8")
    app = BaylingApp(loaded=smollm2)
    async with running(app) as pilot:
        screen = await open_file_tab(pilot, targets=("fra_Latn",))
        screen.query_one("#file-input", Input).value = str(source)
        await run_file(pilot, screen)
        assert screen.query_one(FileTranslation).report.tm_exact == 0

        source.write_text(SHOP_PO.replace("Good morning.", "Good evening, dear friends."), encoding="utf-8")
        started = hold_after(monkeypatch, FileTranslation, "_show_progress", lambda widget, progress: True)
        screen.query_one("#file-memory").update("")  # the first run's counts are still shown
        await pilot.press("ctrl+r")
        bar = screen.query_one("#file-progress", ProgressBar)
        await wait_for(pilot, lambda: MEMORY.search(label_text(screen, "#file-memory")), what="the first progress")
        exact, fuzzy, fresh = shown_memory_counts(screen)  # the run is held before its first batch
        assert screen.running and (exact, fuzzy + fresh) == (ENTRIES - 1, 1) and bar.progress == ENTRIES - 1
        started.set()
        await wait_for(pilot, lambda: not screen.running, timeout=300, what="the run to finish")
        report = screen.query_one(FileTranslation).report
        assert report.completed and (report.tm_exact, report.tm_fuzzy, report.fresh) == (exact, fuzzy, fresh)
        assert shown_memory_counts(screen) == (exact, fuzzy, fresh)
    assert polib.pofile(str(home / "shop.fra_Latn.po")).find("Good evening, dear friends.") is not None


@sync
async def test_the_format_picker_lists_the_registry_and_a_shared_name_for_two_targets_is_refused(
    smollm2, home, monkeypatch
):
    # A format registered after the screen was written still appears: the list is read from the registry.
    late = FileFormat("late", (".late",), "registered by a test", FORMATS["text"].read, FORMATS["text"].write, True)
    monkeypatch.setitem(FORMATS, "late", late)
    source = home / "shop.po"
    source.write_text(SHOP_PO, encoding="utf-8")
    app = BaylingApp(loaded=smollm2)
    async with running(app) as pilot:
        screen = await open_file_tab(pilot)
        picker = screen.query_one("#file-format", Select)
        assert picker.value == FROM_EXTENSION and {"xliff", "po", "late"} <= set(FORMATS)
        for name in FORMATS:
            picker.value = name  # Select refuses a value that is not one of its options
        picker.value = FROM_EXTENSION
        screen.query_one("#file-input", Input).value = str(source)
        picker.value = "xliff"  # a format chosen by hand overrides the extension, as --format does
        await pilot.pause()
        assert label_text(screen, "#file-plan").startswith("xliff → ")
        picker.value = FROM_EXTENSION
        screen.query_one("#file-output", Input).value = str(home / "shop-translated.po")
        await pilot.pause()
        assert "{lang}" in label_text(screen, "#file-plan")  # why it cannot run, before it is started
        await pilot.press("ctrl+r")
        refused = "one file per target"
        await wait_for(pilot, lambda: not screen.running and refused in label_text(screen, "#file-status"))
        status = label_text(screen, "#file-status")
        assert "\n" not in status and "Traceback" not in status
    assert sorted(p.name for p in home.iterdir() if p.name.startswith("shop")) == ["shop.po"]
