"""`generate_batch` over the continuous engine: a list of prompts in, their Completions out in order.

The engine it uses is sized to the batch (slots for the prompts, KV cells for the longest prompt and
its token budget) and kept between calls while it is big enough, with its learnt prefix.
"""

from __future__ import annotations

import contextlib
import random
import threading
from dataclasses import replace

from bayling_local.backends.base import Completion, GenerationConfig
from bayling_local.engine.continuous import ContinuousEngine
from bayling_local.engine.llamacpp import padded_cells

MAX_SEQUENCES = 16
"""Slots at most; longer prompt lists queue in the engine and take slots as others finish."""


class BatchGenerator:
    """The engine behind one backend's `generate_batch`."""

    def __init__(self, backend):
        self._backend = backend
        self._engine: ContinuousEngine | None = None
        self._lock = threading.Lock()  # one batch at a time may resize the engine

    def generate(
        self, prompts: list[list[int]], config: GenerationConfig, cancel: threading.Event | None = None
    ) -> list[Completion]:
        # Each prompt samples with its own seed (one apart), as separate calls would.
        seed = config.seed if config.seed is not None else random.randrange(2**31)
        with self._lock:
            engine = self._engine_for(prompts, config)
            handles = [engine.submit(p, replace(config, seed=seed + i), cancel) for i, p in enumerate(prompts)]
            try:
                return [handle.result() for handle in handles]
            except BaseException:
                _cancel_and_drain(handles)
                raise


    def stream(self, prompt: list[int], config: GenerationConfig, cancel: threading.Event | None = None):
        """One request's pieces as they come; returns its Completion (the backend's `stream` when it
        decodes speculatively, which only the engine does)."""
        with self._lock:
            handle = self._engine_for([prompt], config).submit(prompt, config, cancel)
            try:
                yield from handle
                return handle.result()
            finally:
                if handle.completion is None:  # the reader stopped early, or Ctrl-C
                    _cancel_and_drain([handle])

    @property
    def stats(self):
        """The current engine's counters (None before the first batch)."""
        return self._engine.stats if self._engine is not None else None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def _engine_for(self, prompts: list[list[int]], config: GenerationConfig) -> ContinuousEngine:
        context_length = self._backend.info.context_length
        cells = padded_cells(max(min(context_length, len(p) + config.max_tokens) for p in prompts))
        # The next power of two of slots, so a smaller last batch reuses the engine.
        slots = min(MAX_SEQUENCES, 1 << (len(prompts) - 1).bit_length())
        engine = self._engine
        if engine is not None and cells <= engine.cells_per_slot and slots <= engine.stats.slots:
            return engine
        if engine is not None:
            cells, slots = max(cells, engine.cells_per_slot), max(slots, engine.stats.slots)
            engine.close()
        self._engine = ContinuousEngine(self._backend, slots, cells_per_slot=cells)
        return self._engine


def _cancel_and_drain(handles) -> None:
    """On Ctrl-C (or any error) in the caller: stop every request and wait until the engine's thread has
    let go of them, so nothing is decoding while the interpreter exits and frees llama.cpp's model (a
    KeyboardInterrupt mid-batch crashed the process with SIGSEGV before)."""
    for handle in handles:
        handle.cancel()
    for handle in handles:
        with contextlib.suppress(Exception):  # draining: the caller's exception is the one that matters
            handle.result(timeout=60)
