"""The queue in front of a batching engine: requests checked and queued from any thread, handed to the
engine's thread as slots free up, and ended (cancelled, failed) when they never get one.

Both continuous engines (`continuous.py` over llama.cpp, `onnx_rows.py` over ONNX Runtime cache rows)
own one; the slots and what runs in them stay theirs. The queue also owns the engine's thread: started
by the first request, it ends as soon as nothing runs or waits, and the next request starts another.
An idle thread that once ran llama.cpp keeps a libgomp team alive, and more teams than cores slow every
decode in the process (`backends/compute_threads.py`, where plain streams get threads of their own for
the same reason). A thread that ends frees its team.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence as Ids

from bayling_local.backends.base import Completion, GenerationConfig
from bayling_local.engine.requests import EngineStats, RequestHandle
from bayling_local.errors import ContextOverflowError, InputTextError


def checked_prompt(prompt_ids: Ids[int], limit: int, vocab_size: int) -> list[int]:
    """The prompt as plain ints, or a one-line error: empty, a token the model does not have (llama.cpp
    would fail the whole batch on it, every other request with it), or no room left to generate."""
    ids = [int(token) for token in prompt_ids]
    if not ids:
        raise InputTextError("the prompt is empty")
    bad = [token for token in ids if not 0 <= token < vocab_size]
    if bad:
        raise InputTextError(f"token id {bad[0]} is outside this model's vocabulary (0..{vocab_size - 1})")
    if len(ids) >= limit:
        raise ContextOverflowError(
            f"the input is {len(ids)} tokens; an engine slot holds {limit} (shorten the input or raise --context)"
        )
    return ids


def end_cancelled(handle: RequestHandle, stats: EngineStats) -> None:
    """End a request that never got a slot. It counts as finished, as in `SerialEngine`: once an engine
    is drained, submitted == finished."""
    stats.finished += 1
    handle.finished_step = stats.steps
    handle.finish(Completion("", [], len(handle.prompt_ids), "cancelled"))


class Next(enum.Enum):
    """What the engine's thread does after `RequestQueue.next_step`."""

    STEP = "step"
    IDLE = "idle"
    """Nothing runs or waits: the thread ends; the next request starts another."""
    CLOSED = "closed"
    """The engine is closing: cancel what runs, then end."""


class RequestQueue:
    """Requests waiting for a slot, in order, and the engine's thread that serves them (`serve`, the
    engine's step loop, run while `next_step` says STEP). `submit` and `close` run on any thread;
    `next_step`, `take`, `cancel_all` and `fail_all` on the engine's. Keeps `stats.submitted`,
    `stats.queued`, and `stats.finished` for requests that end here."""

    def __init__(self, stats: EngineStats, prompt_limit: int, vocab_size: int, serve: Callable[[], None], name: str):
        self.stats = stats
        self.prompt_limit = prompt_limit
        """Prompt tokens a slot takes at most, room for one generated token left."""
        self.vocab_size = vocab_size
        self._serve = serve
        self._name = name
        self._waiting: deque[RequestHandle] = deque()
        self._lock = threading.Lock()
        self._closing = False
        self._error: BaseException | None = None
        self._worker: threading.Thread | None = None
        self._serving = False
        """True from a thread's start until it takes IDLE or CLOSED: at most one serves at a time."""

    def submit(
        self, prompt_ids: Ids[int], config: GenerationConfig, cancel: threading.Event | None = None
    ) -> RequestHandle:
        """Queue a request; `cancel` (optional) is an event the caller already holds, shared or not. After
        `close` the request ends cancelled at once; after `fail_all`, with the engine's error."""
        ids = checked_prompt(prompt_ids, self.prompt_limit, self.vocab_size)
        handle = RequestHandle(ids, config, cancel_event=cancel or threading.Event())
        with self._lock:
            if self._error is not None:
                handle.fail(self._error)
            elif self._closing:
                handle.finish(Completion("", [], len(ids), "cancelled"))
            else:
                self.stats.submitted += 1
                self._waiting.append(handle)
                self.stats.queued = len(self._waiting)
                if not self._serving:
                    self._serving = True
                    self._worker = threading.Thread(target=self._start_serving, name=self._name, daemon=True)
                    self._worker.start()
        return handle

    def _start_serving(self) -> None:
        # Thread.start() hands the new thread the GIL; give it back at once so the submitter can queue
        # the rest of a burst (a batch's prompts) and the first step admits them together.
        time.sleep(0)
        self._serve()

    def close(self) -> None:
        """Refuse new requests and wait for the engine's thread, which cancels what runs."""
        with self._lock:
            self._closing = True
            worker = self._worker
        if worker is not None:
            worker.join()

    def next_step(self, busy: bool) -> Next:
        """STEP while requests run (`busy`) or wait; otherwise this thread ends (IDLE), or the engine
        is closing (CLOSED). Decided under the lock `submit` takes, so a request queued as the thread
        ends starts the next one."""
        with self._lock:
            if self._closing:
                self._serving = False
                return Next.CLOSED
            if busy or self._waiting:
                return Next.STEP
            self._serving = False
            return Next.IDLE

    def take(self, free: int) -> list[RequestHandle]:
        """Up to `free` waiting requests, oldest first, for free slots; a cancelled one ends where it waits."""
        with self._lock:
            waiting = [h for h in self._waiting if not h.cancelled]
            cancelled = [h for h in self._waiting if h.cancelled]
            starting = waiting[:free]
            self._waiting = deque(waiting[len(starting) :])
            self.stats.queued = len(self._waiting)
        for handle in cancelled:
            end_cancelled(handle, self.stats)
        return starting

    def cancel_all(self) -> None:
        """End every waiting request as cancelled (the engine is closing)."""
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque()
            self.stats.queued = 0
        for handle in waiting:
            end_cancelled(handle, self.stats)

    def fail_all(self, error: BaseException, running: list[RequestHandle]) -> None:
        """Fail the engine's `running` requests and every waiting one with `error`, and any submitted later."""
        with self._lock:
            self._error = error
            self._serving = False  # the thread ends with the error; later requests fail at once
            handles = running + list(self._waiting)
            self._waiting = deque()
            self.stats.queued = 0
        for handle in handles:
            handle.fail(error)
