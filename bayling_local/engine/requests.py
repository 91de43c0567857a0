"""What the engine serves: a request (prompt ids, settings, stops, cancel) and its handle (streamed text
pieces, then one Completion), plus the engine protocol every implementation follows.

Front ends (translate batches, `chat_batch`, the TUI, `serve`) submit requests at any time and read each
handle on its own; how requests share a model (continuous batching, or one at a time) is the engine's.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bayling_local.backends.base import Completion, GenerationConfig

_END = object()


@dataclass
class EngineStats:
    """Counters an engine keeps; tests and benchmarks read these instead of timing anything."""

    slots: int = 1
    """Sequences decoded together at most (`--parallel`)."""
    active: int = 0
    """Requests holding a slot now."""
    queued: int = 0
    """Requests waiting for a slot."""
    steps: int = 0
    """Model passes (llama_decode calls or equivalent) so far."""
    submitted: int = 0
    finished: int = 0
    prefill_tokens: int = 0
    """Prompt tokens actually run through the model."""
    prefill_tokens_saved: int = 0
    """Prompt tokens not run because their KV was copied from a shared prefix."""
    generated_tokens: int = 0
    """Tokens sampled for requests (those that ended them included)."""
    sampling_passes: int = 0
    """Sequence-steps that sampled: one per sequence per step, however many drafted rows it verified,
    so generated_tokens / sampling_passes is the tokens each pass of the model gave."""
    drafted_tokens: int = 0
    """Tokens proposed by speculative decoding (a draft model or prompt lookup)."""
    accepted_tokens: int = 0
    """Drafted tokens the model kept (they were what it chose itself)."""

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else None

    @property
    def tokens_per_pass(self) -> float | None:
        return self.generated_tokens / self.sampling_passes if self.sampling_passes else None


@dataclass
class RequestHandle:
    """One submitted request: iterate it for text pieces; `completion` is set once it ends.

    `cancel()` ends it at the next step with finish_reason "cancelled" (also while still queued).
    Pieces arrive from the engine's thread through a queue, so any thread may read them.
    """

    prompt_ids: list[int]
    config: GenerationConfig
    cancel_event: threading.Event = field(default_factory=threading.Event)
    completion: Completion | None = None
    admitted_step: int | None = None
    """EngineStats.steps when the request got a slot (None until then, or with an engine that does
    not count steps); tests prove scheduling with these, not with time."""
    finished_step: int | None = None
    """EngineStats.steps when the request ended."""
    _pieces: queue.Queue = field(default_factory=queue.Queue, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def __iter__(self) -> Iterator[str]:
        while True:
            piece = self._pieces.get()
            if piece is _END:
                return
            if isinstance(piece, BaseException):
                raise piece
            yield piece

    def result(self, timeout: float | None = None) -> Completion:
        """Wait for the end (draining pieces nobody read) and return the Completion."""
        if not self._done.wait(timeout):
            raise TimeoutError("the request has not finished")
        if isinstance(self.completion, BaseException):
            raise self.completion
        return self.completion

    # --- called by engines -----------------------------------------------------------------------

    def emit(self, piece: str) -> None:
        if piece:
            self._pieces.put(piece)

    def finish(self, completion: Completion) -> None:
        self.completion = completion
        self._pieces.put(_END)
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self.completion = error  # type: ignore[assignment]  (result() raises it)
        self._pieces.put(error)
        self._pieces.put(_END)
        self._done.set()


class Engine(Protocol):
    """Serves requests for one loaded model; `submit` never blocks on generation."""

    stats: EngineStats

    def submit(self, prompt_ids: Sequence[int], config: GenerationConfig) -> RequestHandle:
        """Queue a request (prompt ids already fitted to the context; `config` with every stop)."""
        ...

    def close(self) -> None:
        """Cancel what is queued or running, and stop the engine's thread."""
        ...
