"""Subprocesses in tests: generous timeouts, and a timeout that shows what the process printed."""

from __future__ import annotations

import subprocess

import pytest


def tail_of(output: bytes | str | None, lines: int = 40) -> str:
    if output is None:
        return ""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    return "\n".join(text.splitlines()[-lines:])


def run_captured(args: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(args, capture_output=True, ...)`; a timeout fails the test with the tails of the
    process's stdout and stderr, so a slow machine and a hang can be told apart."""
    try:
        return subprocess.run(args, capture_output=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(
            f"{' '.join(map(str, args[:6]))} ... did not finish in {timeout:.0f} s\n"
            f"--- stdout (tail) ---\n{tail_of(expired.stdout)}\n--- stderr (tail) ---\n{tail_of(expired.stderr)}",
            pytrace=False,
        )


def wait_until(condition, *, what: str, timeout: float = 120.0, interval: float = 0.02) -> None:
    """Poll `condition()` until it holds. A hang detector, not a speed limit: `timeout` is far above what
    the step takes on a loaded 2-core machine, and running past it fails the test naming `what`."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)
