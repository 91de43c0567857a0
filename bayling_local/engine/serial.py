"""An engine that serves one request at a time over any backend's `stream`.

The fallback for backends without continuous batching (transformers, remote servers) and the
reference the continuous engine is compared with: requests wait in a queue and run in order on one
worker thread, each streaming its pieces and ending with its own Completion.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

from bayling_local.backends.base import Backend, Completion, GenerationConfig
from bayling_local.engine.requests import EngineStats, RequestHandle

_STOP = object()


class SerialEngine:
    """Requests run one after another on a worker thread; `submit` returns at once."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.stats = EngineStats(slots=1)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._running: RequestHandle | None = None
        self._worker = threading.Thread(target=self._serve, name="serial-engine", daemon=True)
        self._worker.start()

    def submit(self, prompt_ids: Sequence[int], config: GenerationConfig) -> RequestHandle:
        handle = RequestHandle(list(prompt_ids), config)
        with self._lock:
            if self._closed:
                handle.finish(Completion("", [], len(handle.prompt_ids), "cancelled"))
                return handle
            self.stats.submitted += 1
            self.stats.queued += 1
            self._queue.put(handle)
        return handle

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            running = self._running
        if running is not None:
            running.cancel()
        self._cancel_queued()
        self._queue.put(_STOP)
        self._worker.join(timeout=60)

    def _cancel_queued(self) -> None:
        while True:
            try:
                handle = self._queue.get_nowait()
            except queue.Empty:
                return
            if handle is not _STOP:
                self._count_start()
                self._finish_cancelled(handle)

    def _serve(self) -> None:
        while True:
            handle = self._queue.get()
            if handle is _STOP:
                return
            self._count_start(handle)
            if handle.cancelled:
                self._finish_cancelled(handle)
            else:
                self._run(handle)

    def _count_start(self, handle: RequestHandle | None = None) -> None:
        with self._lock:
            self.stats.queued -= 1
            self.stats.active = 1 if handle is not None else self.stats.active
            self._running = handle

    def _run(self, handle: RequestHandle) -> None:
        try:
            stream = self.backend.stream(handle.prompt_ids, handle.config, handle.cancel_event)
            for piece in stream:
                handle.emit(piece)
            completion = stream.completion
            self._count_end(len(handle.prompt_ids), passes=1 + len(completion.token_ids))
            handle.finish(completion)
        except Exception as error:  # noqa: BLE001 - the request fails; the engine keeps serving the others
            self._count_end(0)
            handle.fail(error)

    def _finish_cancelled(self, handle: RequestHandle) -> None:
        self._count_end(0)
        handle.finish(Completion("", [], len(handle.prompt_ids), "cancelled"))

    def _count_end(self, prefilled: int, passes: int = 0) -> None:
        """`passes`: the prompt's pass and one per generated token (`stats.steps`)."""
        with self._lock:
            self.stats.steps += passes
            self.stats.active = 0
            self.stats.finished += 1
            self.stats.prefill_tokens += prefilled
            self._running = None
