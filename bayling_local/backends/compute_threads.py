"""llama.cpp work on threads that end with it, so no idle thread keeps an OpenMP team.

llama.cpp's CPU backend runs each graph with OpenMP. libgomp gives every host thread that starts a
parallel region a team of worker threads, kept until that host thread ends. Once the teams of a process
hold more threads than the machine has cores, libgomp throttles spin-waiting for all of them, and every
graph run then waits on futexes: on a 2-core AMX Xeon the bundled model decoded at 32 tok/s instead of
95 once a second thread had decoded in the process (the caller's and an engine's; 1.6x slower on a
2-core EPYC). So plain generation and scoring run here on a thread of their own, and the engine's step
loop on a thread that ends when it is idle (`engine/queueing.py`): no thread that is not computing keeps
a team.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_ITEM, _DONE, _FAILED = "item", "done", "failed"


def stream_on_own_thread(generator: Generator[Item, None, Result], name: str) -> Generator[Item, None, Result]:
    """Run `generator` on a new thread that ends with it: yields what it yields and returns what it
    returns, and re-raises what it raises. When the reader stops early (or is interrupted), the
    generator is closed on its thread after the item in progress, and the thread is joined."""
    handoff: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def run() -> None:
        try:
            while not stop.is_set():
                try:
                    item = next(generator)
                except StopIteration as end:
                    handoff.put((_DONE, end.value))
                    return
                handoff.put((_ITEM, item))
            generator.close()  # the reader stopped: end the work on this thread
            handoff.put((_DONE, None))
        except BaseException as error:  # noqa: BLE001 - passed to the reader, who raises it
            handoff.put((_FAILED, error))

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == _ITEM:
                yield value
            elif kind == _DONE:
                return value
            else:
                raise value
    finally:
        stop.set()
        worker.join()


def call_on_own_thread(work: Callable[[], Result], name: str) -> Result:
    """`work()` on a new thread that ends with it; its result, or what it raised."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as error:  # noqa: BLE001 - re-raised on the caller's thread
            outcome.append((False, error))

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join()
    ok, value = outcome[0]
    if ok:
        return value
    raise value
