"""llama.cpp work runs on threads that end with it (`backends/compute_threads.py`): the helpers pass items,
return values and errors through, close the work when the reader stops, and with the real bundled model a
plain stream or a scoring call leaves no thread (and no OpenMP team) behind in the process."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from bayling_local.backends.compute_threads import call_on_own_thread, stream_on_own_thread
from tests.processes import run_captured


def names_then_result(count: int):
    for _ in range(count):
        yield threading.current_thread().name
    return "finished"


def test_a_stream_runs_on_its_own_thread_and_returns_what_the_generator_returns():
    stream = stream_on_own_thread(names_then_result(3), "worker-x")
    seen = []
    with pytest.raises(StopIteration) as end:
        while True:
            seen.append(next(stream))
    assert seen == ["worker-x"] * 3 and end.value.value == "finished"


def test_an_error_on_the_thread_is_raised_to_the_reader():
    def failing():
        yield 1
        raise ValueError("broken model")

    with pytest.raises(ValueError, match="broken model"):
        list(stream_on_own_thread(failing(), "worker-x"))


def test_a_reader_that_stops_early_closes_the_work_on_its_thread_and_the_thread_ends():
    closed_on = []

    def endless():
        try:
            while True:
                yield 0
        finally:
            closed_on.append(threading.current_thread().name)

    stream = stream_on_own_thread(endless(), "worker-y")
    next(stream)
    stream.close()
    assert closed_on == ["worker-y"]
    assert not [t for t in threading.enumerate() if t.name == "worker-y"]


def test_a_call_returns_its_result_or_raises_its_error():
    assert call_on_own_thread(lambda: threading.current_thread().name, "worker-z") == "worker-z"
    with pytest.raises(KeyError):
        call_on_own_thread(lambda: {}["missing"], "worker-z")


CHILD = """
import json, os, sys, time
from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.model import open_model

def os_threads():
    return len(os.listdir("/proc/self/task"))

def settled(before):
    for _ in range(500):
        if os_threads() <= before:
            break
        time.sleep(0.02)
    return os_threads()

model = open_model(None, options=LoadOptions(device="cpu", threads=2, context_length=512))
prompt = model.prompt_ids([{"role": "user", "content": "Name a fruit."}])
config = model.chat_config(GenerationConfig(max_tokens=8))
before = os_threads()
model.backend.stream(prompt, config).collect()
after_stream = settled(before)
scores = model.backend.score(prompt, [" Apple", " Car"])
after_score = settled(before)
print(json.dumps({"before": before, "after_stream": after_stream, "after_score": after_score, "scores": len(scores)}))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux /proc")
def test_plain_streams_and_scoring_on_the_real_model_leave_no_thread_behind():
    """In a fresh process (as a user's): a thread that has decoded keeps a libgomp team until it ends, and
    two such threads in a process made every decode about 3x slower on a 2-core AMX Xeon (libgomp stops
    spin-waiting). With two llama.cpp threads, a stream or a scoring call on the caller's thread would
    leave its OpenMP worker behind."""
    result = run_captured([sys.executable, "-c", CHILD], timeout=600)
    printed = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, printed[-2000:]
    counts = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert counts["scores"] == 2
    assert counts["after_stream"] == counts["before"], counts
    assert counts["after_score"] == counts["before"], counts
