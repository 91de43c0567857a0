"""`bayling-local serve` as a user runs it: refuses an exposed bind without a key, serves, stops on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

pytest.importorskip("fastapi")

from tests.serve_harness import post, wait_healthy


def test_binding_beyond_loopback_without_a_key_is_refused_in_one_line(cli):
    done = cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "--api-key" in lines[0]


def test_serve_answers_then_exits_cleanly_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "bayling_local", "serve", "--port", "0", "--context", "512", "--threads", "2"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        announced = process.stderr.readline().decode()
        port = re.search(r":(\d+)/v1", announced)
        assert port, announced
        root = f"http://127.0.0.1:{port.group(1)}"
        wait_healthy(root, timeout=240)
        chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        status, _, body = post(f"{root}/v1/chat/completions", chat)
        assert status == 200 and body["usage"]["completion_tokens"] >= 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
