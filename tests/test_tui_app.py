"""The TUI driven through Textual's Pilot against the real bundled model (SmolLM2 through llama.cpp).

The session's loaded model is handed in (`loaded=`) so each test skips the load; every test gets a
BAYLING_HOME of its own, so history and results start empty.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
from contextlib import asynccontextmanager

import pytest
from textual.widgets import Input, Markdown, OptionList, ProgressBar, TextArea

from bayling_local.bench.results import read_records
from bayling_local.tui.app import BaylingApp
from bayling_local.tui.history import History
from bayling_local.tui.screens.chat_settings import ChatSettings
from bayling_local.tui.widgets.file_translation import FileTranslation
from bayling_local.tui.widgets.message import MessageView
from bayling_local.tui.widgets.translation_output import TranslationOutput

pytestmark = pytest.mark.slow
SIZE = (100, 30)


def sync(test):
    """Run an async test with asyncio.run (no async pytest plugin needed); fixtures pass through."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYLING_HOME", str(tmp_path))
    return tmp_path


@asynccontextmanager
async def running(app: BaylingApp, size=SIZE):
    try:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            yield pilot
    finally:
        app.close_resources()


async def wait_for(pilot, condition, timeout: float = 90.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.02)


def hold_after(monkeypatch, cls, name: str, ready) -> asyncio.Event:
    """Make `cls.name` (which a worker calls through call_from_thread) wait, once `ready(self, *args)`
    is true, until the returned event is set: the test then acts at a known point of the job, however
    fast the machine runs the model. The UI stays live meanwhile (the wait is on the event loop)."""
    gate, original = asyncio.Event(), getattr(cls, name)

    async def held(self, *args):
        result = original(self, *args)
        if inspect.isawaitable(result):
            await result
        if ready(self, *args) and not gate.is_set():
            await gate.wait()

    monkeypatch.setattr(cls, name, held)
    return gate


async def send(pilot, text: str) -> None:
    prompt = pilot.app.screen.query_one("#prompt", Input)
    prompt.focus()
    prompt.value = text
    await pilot.press("enter")


def chat_app(model, max_tokens: int = 32) -> BaylingApp:
    return BaylingApp(loaded=model, chat_defaults=ChatSettings(temperature=0.0, max_tokens=max_tokens))


@sync
async def test_a_streamed_answer_is_saved_and_the_conversation_reopens_and_continues_after_a_restart(
    smollm2, home, monkeypatch
):
    # Record the reply's length after every piece the worker posts: on a fast machine the whole answer
    # can finish between two polls, so watching `answering` from the test would race.
    lengths_while_answering, original_append = [], MessageView.append

    async def recording_append(view, piece):
        await original_append(view, piece)
        lengths_while_answering.append(len(view.text))

    monkeypatch.setattr(MessageView, "append", recording_append)
    app = chat_app(smollm2, max_tokens=48)
    async with running(app) as pilot:
        await send(pilot, "Name three rivers in Africa.")
        screen = app.screen
        replies = lambda: list(screen.query(MessageView).filter(".assistant"))
        await wait_for(pilot, lambda: not screen.answering and replies() and replies()[-1].text, what="the answer")
        assert len(set(lengths_while_answering)) >= 2, "the answer did not grow on screen while it was written"
        shown = replies()[-1]
        assert shown.text.strip() and shown.query_one(Markdown).source.strip() == shown.text.strip()
    saved = History(home / "tui.sqlite3")
    [conversation] = saved.conversations()
    assert conversation.title == "Name three rivers in Africa."
    assert [(m.role, m.content) for m in saved.messages(conversation.id)] == [
        ("user", "Name three rivers in Africa."),
        ("assistant", shown.text.strip()),
    ]
    saved.close()

    again = chat_app(smollm2)
    async with running(again) as pilot:
        sidebar = again.screen.query_one("ConversationList", OptionList)
        assert [sidebar.get_option_at_index(i).prompt for i in range(sidebar.option_count)] == [conversation.title]
        sidebar.focus()
        sidebar.highlighted = 0
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(again.screen.query(MessageView)) == 2, what="the reopened messages")
        assert [v.text for v in again.screen.query(MessageView)] == ["Name three rivers in Africa.", shown.text.strip()]
        await send(pilot, "Which one is the longest?")  # the reopened conversation goes on: multi-turn
        await wait_for(pilot, lambda: len(again.history.messages(conversation.id)) == 4, what="the second exchange")
        first_exchange = [
            {"role": "user", "content": "Name three rivers in Africa."},
            {"role": "assistant", "content": shown.text.strip()},
        ]
        assert again.screen.session.turns[:2] == first_exchange


@sync
async def test_escape_stops_the_answer_and_puts_the_prompt_back(smollm2, home, monkeypatch):
    first_words = hold_after(monkeypatch, MessageView, "append", lambda view, piece: bool(view.text))
    app = chat_app(smollm2, max_tokens=400)
    prompt_text = "Write a very long story about a dragon who learns to sing, in many paragraphs."
    async with running(app) as pilot:
        await send(pilot, prompt_text)
        screen = app.screen
        await wait_for(
            pilot,
            lambda: any(v.text for v in screen.query(MessageView).filter(".assistant")),
            what="the first streamed words",
        )
        await pilot.press("escape")
        first_words.set()
        await wait_for(pilot, lambda: not screen.answering, what="the answer to stop")
        await pilot.pause()
        assert screen.query_one("#prompt", Input).value == prompt_text
        assert list(screen.query(MessageView)) == []
        assert screen.session.turns == []
        assert app.history.conversations() == []


@sync
async def test_a_model_that_fails_to_load_is_an_error_notification_not_a_crash(home):
    app = BaylingApp("no-such-model")
    async with running(app) as pilot:
        await wait_for(pilot, lambda: app.model_state == "failed", what="the load to fail")
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and "no model 'no-such-model'" in errors[0].message
        await send(pilot, "Hello?")  # no model: the prompt stays and a warning says why
        assert app.screen.query_one("#prompt", Input).value == "Hello?"
        assert app.is_running


@sync
async def test_translate_a_sentence_into_two_languages(smollm2, home):
    app = BaylingApp(loaded=smollm2)
    async with running(app) as pilot:
        await pilot.press("f2")
        screen = app.screen
        await pilot.press("ctrl+l")  # add a target: the picker searches by native name
        await pilot.press(*"Français")
        await pilot.pause()
        picker = app.screen.query_one(OptionList)
        assert picker.get_option_at_index(0).id == "fra_Latn"
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: [t.code for t in screen.targets] == ["zho_Hans", "fra_Latn"], what="the new target"
        )
        screen.query_one("#source", TextArea).text = "Good morning."
        await pilot.press("ctrl+r")  # sets `running` before it returns
        await wait_for(pilot, lambda: not screen.running, what="the translation to end")
        outputs = {o.target.code: o.text for o in screen.query(TranslationOutput)}
        assert set(outputs) == {"zho_Hans", "fra_Latn"} and all(text.strip() for text in outputs.values())


@sync
async def test_file_translation_stops_on_escape_and_resumes_from_its_journal(smollm2, home, monkeypatch):
    first_batch = hold_after(monkeypatch, FileTranslation, "_show_progress", lambda widget, p: p.done >= 1)
    source = home / "lines.txt"
    source.write_text("The sun is hot.\nThe sea is blue.\nThe sky is big.\n", encoding="utf-8")
    app = BaylingApp(loaded=smollm2)
    async with running(app) as pilot:
        await pilot.press("f2")
        screen = app.screen
        await screen.remove_target("zho_Hans")
        await screen.add_target("fra_Latn")
        screen.query_one("TabbedContent").active = "file-mode"
        screen.query_one("#file-input", Input).value = str(source)
        screen.query_one("#file-batch", Input).value = "1"
        bar = screen.query_one("#file-progress", ProgressBar)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: (bar.progress or 0) >= 1, what="the first batch")
        await pilot.press("escape")
        first_batch.set()
        await wait_for(pilot, lambda: not screen.running, what="the run to stop")
        status = str(screen.query_one("#file-status").render())
        assert "stopped after" in status and not (home / "lines.fra_Latn.txt").exists()
        resumed = []
        bar.watch(bar, "progress", lambda value: resumed.append(value), init=False)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "done" in str(screen.query_one("#file-status").render()), what="the resumed run")
        assert "done: 3 pieces" in str(screen.query_one("#file-status").render())
        assert resumed[0] >= 1, "the second run started from zero instead of the journal"
    translated = (home / "lines.fra_Latn.txt").read_text("utf-8").splitlines()
    assert len(translated) == 3 and all(line.strip() for line in translated)


@sync
async def test_a_short_speed_benchmark_adds_a_result_row_and_a_bar(smollm2, home):
    app = BaylingApp(loaded=smollm2)
    async with running(app) as pilot:
        await pilot.press("f3")
        screen = app.screen
        for field, value in (("speed-prompt", "16"), ("speed-generate", "8"), ("speed-reps", "1")):
            screen.query_one(f"#{field}", Input).value = value
        await pilot.press("ctrl+r")  # sets `running` before it returns
        await wait_for(pilot, lambda: not screen.running, what="the benchmark to end")
        table = screen.query_one("#results-table")
        assert table.row_count == 1
        assert table.get_row_at(0)[1] == "smollm2-135m-instruct"
        assert len(screen.query_one("BarChart").bars) == 1
        assert app.model_state == "ready" and app.slot.model is smollm2
    [record] = read_records(home / "results.jsonl").records
    assert record.kind == "speed" and record.results["generation_tps"]["mean"] > 0


@sync
async def test_sidebar_renames_exports_and_deletes_a_conversation(smollm2, home):
    history = History(home / "tui.sqlite3")
    conversation = history.create("Old title", model=None, system=None, temperature=0.7, max_tokens=64)
    history.add_messages(conversation.id, [("user", "Hi", None), ("assistant", "Hello!", "m")])
    history.close()
    app = BaylingApp(loaded=smollm2)
    async with running(app) as pilot:
        await pilot.press("ctrl+b")
        sidebar = app.screen.query_one("ConversationList")
        sidebar.highlighted = 0
        await pilot.press("r")
        app.screen.query_one(Input).value = "New title"
        await pilot.press("enter")
        await pilot.pause()
        assert app.history.conversation(conversation.id).title == "New title"
        await pilot.press("e", "j")
        await pilot.pause()
        exported = json.loads((home / "exports" / f"{conversation.id}-new-title.json").read_text("utf-8"))
        assert [m["content"] for m in exported["messages"]] == ["Hi", "Hello!"]
        assert (home / "exports" / f"{conversation.id}-new-title.md").is_file()
        await pilot.press("d")
        await pilot.click("#yes")
        await pilot.pause()
        assert app.history.conversations() == []


@sync
async def test_the_command_palette_switches_to_the_light_theme_and_it_is_remembered(home):
    app = BaylingApp(load_on_start=False)
    async with running(app) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"Toggle light")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.theme == "textual-light", timeout=10, what="the light theme")
    again = BaylingApp(load_on_start=False)
    async with running(again):
        assert again.theme == "textual-light"


@sync
async def test_models_screen_imports_a_gguf_with_progress_and_lists_it(bundled_gguf, home):
    app = BaylingApp(load_on_start=False)
    async with running(app) as pilot:
        await pilot.press("f4")
        screen = app.screen
        screen.query_one("#import-path", Input).value = str(bundled_gguf)
        screen.query_one("#import-name", Input).value = "smol-copy"
        updates = []
        bar = screen.query_one("#import-progress", ProgressBar)
        bar.watch(bar, "progress", lambda value: updates.append(value), init=False)
        await pilot.click("#import")
        await wait_for(pilot, lambda: "smol-copy" in [m.name for m in screen.models], what="the import")
        assert len(updates) > 1 and updates[-1] == bundled_gguf.stat().st_size
        assert (home / "models" / "smol-copy" / "manifest.json").is_file()
        assert screen.query_one("DataTable").row_count == 2


@sync
async def test_models_screen_converts_a_checkpoint_to_a_gguf_quant_with_progress(smollm2_hf_checkpoint, home):
    app = BaylingApp(load_on_start=False)
    async with running(app) as pilot:
        await pilot.press("f4")
        screen = app.screen
        screen.query_one("#convert-source", Input).value = str(smollm2_hf_checkpoint)
        screen.query_one("#convert-quant", Input).value = "q8_0"
        updates = []
        bar = screen.query_one("#convert-progress", ProgressBar)
        bar.watch(bar, "progress", lambda value: updates.append(value), init=False)
        await pilot.click("#convert")
        await wait_for(pilot, lambda: any(m.manifest.quant == "Q8_0" for m in screen.models), timeout=300,
                       what="the conversion")
        assert len(updates) > 1
        assert not screen.query_one("#convert").disabled


@sync
async def test_settings_are_saved_per_conversation_bad_values_are_refused_and_a_message_copies(home):
    history = History(home / "tui.sqlite3")
    conversation = history.create("Greetings", model=None, system=None, temperature=0.7, max_tokens=512)
    history.add_messages(conversation.id, [("user", "Hi", None), ("assistant", "Hello **there**!", "m")])
    history.close()
    app = BaylingApp(load_on_start=False)
    async with running(app) as pilot:
        sidebar = app.screen.query_one("ConversationList")
        sidebar.focus()
        sidebar.highlighted = 0
        await pilot.press("enter", "ctrl+s")
        dialog = app.screen
        dialog.query_one("#temperature", Input).value = "hot"
        await pilot.click("#save")
        await pilot.pause()
        assert app.screen is dialog and "temperature must be a number" in str(dialog.query_one(".error").render())
        dialog.query_one("#temperature", Input).value = "0.3"
        dialog.query_one("#max-tokens", Input).value = "99"
        dialog.query_one("#system", TextArea).text = "Be brief."
        dialog.query_one("#max-tokens", Input).focus()
        await pilot.press("enter")  # Enter in a field saves too (a second click this soon is a double click)
        await pilot.pause()
        saved = app.history.conversation(conversation.id)
        assert (saved.system, saved.temperature, saved.max_tokens) == ("Be brief.", 0.3, 99)
        assert "temp 0.3 · max 99 · system prompt" in str(app.screen.query_one("#conversation-info").render())
        app.screen.query(MessageView).last().focus()
        await pilot.press("c")
        assert app.clipboard == "Hello **there**!"
