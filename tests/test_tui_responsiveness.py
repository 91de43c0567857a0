"""A conversation of 1,000 stored messages opens as a window of the newest messages, and earlier ones
are mounted a window at a time on request.

Mounting every message at once, or a Markdown widget tree per stored message, is what stalls the UI;
this test proves the structure that prevents it (how many views are mounted, which ones). How long
opening and scrolling take on a given machine is a benchmark figure: `benchmarks/tui_startup.py`.
"""

from __future__ import annotations

import asyncio

import pytest

from bayling_local.tui.app import BaylingApp
from bayling_local.tui.history import History
from bayling_local.tui.widgets.message import MessageView
from bayling_local.tui.widgets.message_list import WINDOW, MessageList

MESSAGES = 1000


def seed(home) -> int:
    history = History(home / "tui.sqlite3")
    conversation = history.create("Long", model="m", system=None, temperature=0.7, max_tokens=64)
    history.add_messages(
        conversation.id,
        [
            ("user", f"question {i}", None)
            if i % 2 == 0
            else ("assistant", f"**answer {i}**\n\n- a\n- b\n\n`x = {i}`", "m")
            for i in range(MESSAGES)
        ],
    )
    history.close()
    return conversation.id


async def wait_until(pilot, condition, what: str, attempts: int = 3000) -> None:
    """Let the app run until `condition()` holds; fails after `attempts` pauses (a hang, not a slow machine)."""
    for _ in range(attempts):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"never saw {what}")


async def scenario() -> dict:
    app = BaylingApp(load_on_start=False)
    figures = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        sidebar = screen.query_one("ConversationList")
        sidebar.focus()
        sidebar.highlighted = 0
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.query(MessageView)) >= WINDOW, "the newest window")
        await pilot.pause()
        views = list(screen.query(MessageView))
        figures["mounted_on_open"] = len(views)
        figures["first_shown"], figures["last_shown"] = views[0].text, views[-1].text
        figures["button"] = [str(button.label) for button in screen.query("#earlier")]
        screen.query_one(MessageList).focus()
        await pilot.press(*["pageup"] * 15, "end", *["pageup"] * 3, "home")
        await pilot.pause()
        figures["mounted_after_scrolling"] = len(screen.query(MessageView))
        if figures["button"]:
            await pilot.click("#earlier")
            await wait_until(pilot, lambda: len(screen.query(MessageView)) >= 2 * WINDOW, "the earlier window")
            await pilot.pause()
        figures["mounted_after_earlier"] = len(screen.query(MessageView))
        figures["first_after_earlier"] = next(iter(screen.query(MessageView))).text
    app.close_resources()
    return figures


@pytest.mark.slow
def test_a_thousand_message_conversation_mounts_a_window_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYLING_HOME", str(tmp_path))
    seed(tmp_path)
    figures = asyncio.run(scenario())
    assert figures["mounted_on_open"] == WINDOW < MESSAGES, figures  # a window, not the whole history
    assert figures["mounted_after_scrolling"] == WINDOW, figures  # scrolling mounts nothing more
    assert figures["mounted_after_earlier"] == 2 * WINDOW, figures
    assert figures["first_after_earlier"] == f"question {MESSAGES - 2 * WINDOW}"
    assert figures["first_shown"] == f"question {MESSAGES - WINDOW}"
    assert figures["last_shown"].startswith(f"**answer {MESSAGES - 1}**")
    assert figures["button"] == [f"▲ {WINDOW} earlier of {MESSAGES - WINDOW} hidden messages"]
