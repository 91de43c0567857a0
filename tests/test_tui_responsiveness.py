"""A conversation of 1,000 stored messages opens and scrolls without stalling the UI.

A probe task sleeps 5 ms at a time on the app's event loop and records how late it wakes: the longest
delay is the longest time the UI could not react. Limits are generous (shared CI cores); mounting
every message at once, or a Markdown widget tree per stored message, blows through them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from bayling_local.tui.app import BaylingApp
from bayling_local.tui.history import History
from bayling_local.tui.widgets.message import MessageView
from bayling_local.tui.widgets.message_list import WINDOW, MessageList

MESSAGES = 1000
OPEN_LIMIT_S = 2.5
STALL_LIMIT_S = 0.75


class StallProbe:
    """`worst`: the longest the loop was late for a 5 ms sleep while the probe ran."""

    def __init__(self, tick: float = 0.005):
        self.tick, self.worst = tick, 0.0

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.tick)
            self.worst = max(self.worst, time.perf_counter() - start - self.tick)


@contextlib.contextmanager
def stall_probe():
    probe = StallProbe()
    task = asyncio.get_running_loop().create_task(probe.run())
    try:
        yield probe
    finally:
        task.cancel()


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


async def scenario() -> dict:
    app = BaylingApp(load_on_start=False)
    figures = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        sidebar = screen.query_one("ConversationList")
        sidebar.focus()
        sidebar.highlighted = 0
        with stall_probe() as probe:
            start = time.perf_counter()
            await pilot.press("enter")
            while len(screen.query(MessageView)) < WINDOW:
                await pilot.pause(0.01)
            figures["open_s"], figures["open_stall_s"] = time.perf_counter() - start, probe.worst
        views = list(screen.query(MessageView))
        figures["first_shown"], figures["last_shown"] = views[0].text, views[-1].text
        figures["button"] = [str(button.label) for button in screen.query("#earlier")]
        screen.query_one(MessageList).focus()
        with stall_probe() as probe:
            await pilot.press(*["pageup"] * 15, "end", *["pageup"] * 3, "home")
            await pilot.pause()
            figures["scroll_stall_s"] = probe.worst
        with stall_probe() as probe:
            if figures["button"]:
                await pilot.click("#earlier")
                while len(screen.query(MessageView)) < 2 * WINDOW:
                    await pilot.pause(0.01)
            figures["earlier_stall_s"] = probe.worst
    app.close_resources()
    return figures


@pytest.mark.slow
def test_a_thousand_message_conversation_opens_and_scrolls_without_stalls(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYLING_HOME", str(tmp_path))
    seed(tmp_path)
    figures = asyncio.run(scenario())
    assert figures["open_s"] < OPEN_LIMIT_S, figures
    for stall in ("open_stall_s", "scroll_stall_s", "earlier_stall_s"):
        assert figures[stall] < STALL_LIMIT_S, (stall, figures)
    assert figures["first_shown"] == f"question {MESSAGES - WINDOW}"
    assert figures["last_shown"].startswith(f"**answer {MESSAGES - 1}**")
    assert figures["button"] == [f"▲ {WINDOW} earlier of {MESSAGES - WINDOW} hidden messages"]
