"""Snapshots of every TUI screen at 80x24 and 120x40 (pytest-textual-snapshot).

Deterministic by construction: no model is loaded (nothing a model writes is shown), the history and
the results log are seeded with fixed texts and timestamps, and each test has its own BAYLING_HOME.
Update the SVGs with `pytest tests/test_tui_snapshots.py --snapshot-update` and look at them.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bayling_local.bench.results import RunRecord, append_record
from bayling_local.tui.app import BaylingApp
from bayling_local.tui.history import History

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
FIXED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
ANSWER = """Three long rivers of Africa:

- **Nile**, through eleven countries
- **Congo**, the deepest river in the world
- **Niger**, in a great arc through West Africa

Ask me about any of them."""


@pytest.fixture
def app(tmp_path, monkeypatch) -> BaylingApp:
    monkeypatch.setenv("BAYLING_HOME", str(tmp_path))
    history = History(tmp_path / "tui.sqlite3", clock=lambda: FIXED)
    history.create("Swahili greetings", model=None, system="Answer in Swahili.", temperature=0.2, max_tokens=128)
    rivers = history.create(
        "Rivers of Africa", model="smollm2-135m-instruct", system=None, temperature=0.7, max_tokens=512
    )
    history.add_messages(
        rivers.id, [("user", "Name three rivers in Africa.", None), ("assistant", ANSWER, "smollm2-135m-instruct")]
    )
    for model, quant, tps, hour in (("smollm2-135m-instruct", "Q4_1", 61.5, 9), ("bayling-3-8b", "Q4_K_M", 9.25, 10)):
        append_record(
            RunRecord(
                kind="speed",
                model=model,
                quant=quant,
                backend="llama.cpp",
                hardware={},
                settings={},
                results={"generation_tps": {"mean": tps}, "prompt_tps": {"mean": tps * 8}, "ttft_s": {"mean": 0.25}},
                run_id="fixed",
                timestamp=f"2026-01-02T{hour:02d}:00:00+00:00",
            )
        )
    app = BaylingApp(load_on_start=False, history=history)
    app.animation_level = "none"  # no tab underline caught mid-slide
    yield app
    app.close_resources()


async def steady(pilot) -> None:
    """Cursors that do not blink, so a busy machine cannot catch one switched off."""
    for widget in pilot.app.screen.query("Input, TextArea"):
        widget.cursor_blink = False
    await pilot.pause()


def pressing(*keys: str):
    async def run_before(pilot) -> None:
        await pilot.press(*keys)
        await steady(pilot)

    return run_before


async def open_first_conversation(pilot) -> None:
    sidebar = pilot.app.screen.query_one("ConversationList")
    sidebar.focus()
    sidebar.highlighted = 0
    await pilot.press("enter")
    await steady(pilot)


async def type_source_text(pilot) -> None:
    await pilot.press("f2")
    pilot.app.screen.query_one("#source").text = "Good morning! The market opens at eight."
    await steady(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_chat_screen(snap_compare, app, size):
    assert snap_compare(app, terminal_size=SIZES[size], run_before=open_first_conversation)


@pytest.mark.parametrize("size", SIZES)
def test_translate_screen(snap_compare, app, size):
    assert snap_compare(app, terminal_size=SIZES[size], run_before=type_source_text)


async def fill_in_the_file_form(pilot) -> None:
    await pilot.press("f2")
    pilot.app.screen.query_one("TabbedContent").active = "file-mode"
    pilot.app.screen.query_one("#file-input").value = "shop.po"  # relative: the planned output reads the same anywhere
    await steady(pilot)


def test_translate_file_mode(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZES["80x24"], run_before=fill_in_the_file_form)


@pytest.mark.parametrize("size", SIZES)
def test_bench_screen(snap_compare, app, size):
    assert snap_compare(app, terminal_size=SIZES[size], run_before=pressing("f3"))


def test_bench_results_tab(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZES["80x24"], run_before=pressing("f3", "ctrl+l"))


@pytest.mark.parametrize("size", SIZES)
def test_models_screen(snap_compare, app, size):
    assert snap_compare(app, terminal_size=SIZES[size], run_before=pressing("f4"))


def test_chat_screen_in_the_light_theme(snap_compare, app):
    async def light_theme(pilot) -> None:
        await open_first_conversation(pilot)
        await pressing("ctrl+t")(pilot)

    assert snap_compare(app, terminal_size=SIZES["80x24"], run_before=light_theme)
