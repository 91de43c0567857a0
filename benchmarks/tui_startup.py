"""TUI figures: first paint, and opening and scrolling a conversation of 1,000 stored messages.

Usage: python benchmarks/tui_startup.py [--runs N] [--messages N]
In-process figures run the app headless (Textual's test driver) against a throw-away BAYLING_HOME
with no model loaded, so they measure the UI alone. With tmux installed, the first paint is also
timed as a user sees it: `bayling-local tui` started in a real terminal until its first screen shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="bayling-tui-bench-"))
os.environ["BAYLING_HOME"] = str(HOME)
SIZE = (120, 40)


def seed_conversation(messages: int) -> int:
    from bayling_local.tui.history import History

    history = History()
    conversation = history.create(
        "A long conversation", model="smollm2-135m-instruct", system=None, temperature=0.7, max_tokens=512
    )
    rows = [
        ("user", f"Question {i}: what is river number {i}?", None)
        if i % 2 == 0
        else ("assistant", f"Answer {i}: the **river {i}** flows\n\n- north\n- then east\n\n`code {i}`", "smollm2")
        for i in range(messages)
    ]
    history.add_messages(conversation.id, rows)
    history.close()
    return conversation.id


class Stalls:
    worst = 0.0


@contextlib.contextmanager
def StallProbe():
    """The longest the event loop was late waking from 5 ms sleeps: the longest the UI could not react."""
    stalls = Stalls()

    async def probe() -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            stalls.worst = max(stalls.worst, time.perf_counter() - start - 0.005)

    task = asyncio.get_running_loop().create_task(probe())
    try:
        yield stalls
    finally:
        task.cancel()


async def in_process(conversation_id: int) -> dict[str, float | list[float]]:
    """Seconds: import, first frame, opening the conversation, PageUps, showing 40 earlier messages."""
    started = time.perf_counter()
    from bayling_local.tui.app import BaylingApp
    from bayling_local.tui.widgets.message_list import MessageList

    imported = time.perf_counter()
    ready: list[float] = []

    class TimedApp(BaylingApp):
        def on_ready(self) -> None:
            ready.append(time.perf_counter())

    app = TimedApp(load_on_start=False)
    figures: dict[str, float | list[float]] = {"import": imported - started}
    async with app.run_test(size=SIZE) as pilot:
        while not ready:
            await pilot.pause(0.001)
        figures["first_frame"] = ready[0] - imported
        screen = app.screen
        with StallProbe() as probe:
            start = time.perf_counter()
            await screen.open_conversation(conversation_id)
            await pilot.pause()
            figures["open"], figures["open_stall"] = time.perf_counter() - start, probe.worst
        screen.query_one(MessageList).focus()
        with StallProbe() as probe:  # smooth scrolling on, as a user sees it
            await pilot.press(*["pageup"] * 10)
            await pilot.pause()
            figures["scroll_stall"] = probe.worst
        app.animation_level = "none"  # the press itself, without the scroll animation
        pages = []
        for _ in range(10):
            start = time.perf_counter()
            await pilot.press("pageup")
            pages.append(time.perf_counter() - start)
        figures["pageup"] = pages
        with StallProbe() as probe:
            start = time.perf_counter()
            await screen.action_show_earlier()
            await pilot.pause()
            figures["earlier"], figures["earlier_stall"] = time.perf_counter() - start, probe.worst
    app.close_resources()
    return figures


def terminal_first_paint(timeout: float = 60.0) -> float | None:
    """Seconds from starting `bayling-local tui` in tmux until its first screen is on the terminal.

    A tmux server of its own (a socket under the throw-away BAYLING_HOME), so the app sees that home.
    """
    if shutil.which("tmux") is None:
        return None
    tmux = ["tmux", "-S", str(HOME / f"tmux-{time.monotonic_ns()}.sock"), "-f", "/dev/null"]
    command = f"{sys.executable} -m bayling_local tui --model no-model-needed"
    start = time.perf_counter()
    subprocess.run([*tmux, "new-session", "-d", "-s", "bench", "-x", "120", "-y", "40", command], check=True)
    try:
        while time.perf_counter() - start < timeout:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "bench"], capture_output=True, text=True, check=False
            ).stdout
            if "F1 Chat" in screen and "Conversations" in screen:
                return time.perf_counter() - start
            time.sleep(0.01)
        return None
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)


def report(label: str, values: list[float]) -> None:
    print(
        f"{label:<52} median {statistics.median(values) * 1000:8.1f} ms   max {max(values) * 1000:8.1f} ms   (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()
    from bayling_local.bench.hardware import detect_hardware

    print(f"hardware: {detect_hardware().describe()}")
    conversation_id = seed_conversation(args.messages)
    runs = [asyncio.run(in_process(conversation_id)) for _ in range(args.runs)]
    report("import bayling_local.tui.app (cold, first run)", [runs[0]["import"]])
    report("app start -> first frame (headless, 120x40)", [r["first_frame"] for r in runs])
    report(f"open a conversation of {args.messages} messages", [r["open"] for r in runs])
    report("  longest UI stall while opening it", [r["open_stall"] for r in runs])
    report("  longest UI stall over 10 animated PageUps", [r["scroll_stall"] for r in runs])
    report("  one PageUp, animation off (key to screen)", [p for r in runs for p in r["pageup"]])
    report("show 40 earlier messages", [r["earlier"] for r in runs])
    report("  longest UI stall while showing them", [r["earlier_stall"] for r in runs])
    paints = [terminal_first_paint() for _ in range(args.runs)]
    if all(p is not None for p in paints):
        report("bayling-local tui -> first screen (tmux, whole process)", paints)
    else:
        print("terminal first paint: skipped (tmux missing or no screen within 60 s)")
    shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
