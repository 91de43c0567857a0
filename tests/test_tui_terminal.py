"""`bayling-local tui` in a real terminal (tmux): type, read the screen, quit with Ctrl-Q.

The app runs in its own tmux server (`-S`, a socket in the test's folder), started from this process so
it inherits BAYLING_HOME; the shell around the app writes its exit status to a file once it is gone.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"),
]


class Terminal:
    def __init__(self, socket: str):
        self.socket = socket

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-S", self.socket, "-f", "/dev/null", *args], capture_output=True, text=True, check=check
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "app", check=False).stdout

    def wait_for(self, condition, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if condition(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; the screen was:\n{self.screen()}")


def answer_lines(screen: str) -> list[str]:
    """The lines under the last `Assistant ·` heading, up to the prompt box."""
    lines = screen.splitlines()
    starts = [i for i, line in enumerate(lines) if "Assistant ·" in line]
    if not starts:
        return []
    body = []
    for line in lines[starts[-1] + 1 :]:
        text = line.split("▕", 1)[-1].strip()
        if "▔" in text or "Message (Enter" in text:
            break
        body.append(text)
    return [line for line in body if line]


def children(pid: int) -> list[int]:
    """Child process ids (Linux /proc, else `ps`)."""
    proc = Path(f"/proc/{pid}/task/{pid}/children")
    text = (
        proc.read_text()
        if proc.exists()
        else subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
        ).stdout
    )
    return [int(child) for child in text.split()]


def sidebar(screen: str) -> str:
    return "\n".join(line.split("▕", 1)[0] for line in screen.splitlines() if "▕" in line)


def test_tui_in_a_terminal_streams_an_answer_and_exits_cleanly_on_ctrl_q(tmp_path: Path):
    exit_file = tmp_path / "exit-status"
    app = f"{shlex.quote(sys.executable)} -m bayling_local tui --max-tokens 300 --temperature 0 --context 2048"
    terminal = Terminal(str(tmp_path / "tmux.sock"))
    env = {**os.environ, "BAYLING_HOME": str(tmp_path), "TERM": "xterm-256color"}
    subprocess.run(
        [
            "tmux",
            "-S",
            terminal.socket,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "app",
            "-x",
            "100",
            "-y",
            "30",
            f"sh -c '{app}; echo $? > {exit_file}'",
        ],
        env=env,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        shell = terminal.tmux("display-message", "-p", "-t", "app", "#{pane_pid}").stdout.strip()
        terminal.wait_for(
            lambda s: "F1 Chat" in s and "smollm2-135m-instruct" in s and "loading" not in s, 60, "the model to load"
        )
        [app_pid] = children(int(shell))
        terminal.tmux("send-keys", "-t", "app", "Tell a long story.", "Enter")
        # Streamed: words are on the screen while the footer still offers "esc Stop" (answer in flight).
        terminal.wait_for(lambda s: answer_lines(s) and "esc Stop" in s, 90, "the first streamed words")
        screen = terminal.wait_for(lambda s: "Tell a long story." in sidebar(s), 90, "the answer to end and be saved")
        assert answer_lines(screen), "no answer text on the screen"
        terminal.tmux("send-keys", "-t", "app", "C-q")
        deadline = time.monotonic() + 30
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exit_file.read_text().strip() == "0"
        with pytest.raises(ProcessLookupError):
            os.kill(app_pid, 0)  # the shell has reaped it: the app process is gone
    finally:
        terminal.tmux("kill-server", check=False)
