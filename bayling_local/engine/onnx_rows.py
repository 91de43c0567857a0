"""Continuous batching over the ONNX Runtime backend: `parallel` preallocated KV cache rows, one request
per row; a row a request leaves is refilled by the next queued one while the other rows keep decoding.

Why each new row's prompt runs on its own, not in one mixed run as in llama.cpp's batch: the exported
graph (`convert/onnx.py`) takes input_ids [batch, sequence] with one `sequence` for every row, and its
GroupQueryAttention puts a row's new tokens after (mask sum - sequence) cached ones, so every input token
of a row is real to it: a decoding row cannot be padded to a prompt's length. A step is therefore the
prompt runs of rows that joined (each alone in its row, bound by pointer offset like the backend's own
prefill; a prompt longer than `step_tokens` in chunks over several steps, so it does not stall the
decoders), then one run that decodes a token for every row up to the highest one in use. A row in that
range with nothing to decode is fed padding at the position its next prompt token overwrites.

A prompt that starts with the kept shared prefix (`prefix.py`) gets that prefix's keys and values copied
into its row (`CacheRows.keep_prefix`/`copy_prefix`) and runs only the rest, as a later chunk would.

A request's prompt thus runs exactly as it does alone. Its decode runs beside other rows: with an fp32
export the logits are bit-identical to a lone run's; int4/int8 exports (MatMulNBits, int8 activations)
take another kernel path for several rows, so near-ties flip (SmolLM2 int4, FLORES en->sw: the arg-max
differs at 6% of decode steps, at the same KL to fp32 as alone, 0.43). One thread at a time owns the
cache and runs the step loop; `submit` only enqueues (and starts that thread when none runs: it ends
whenever the engine is idle, `queueing.py`).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from collections.abc import Sequence as Ids
from dataclasses import dataclass, field

import numpy as np

from bayling_local.backends.base import Completion, GenerationConfig
from bayling_local.backends.decoding import TextAssembler, stop_token_set
from bayling_local.backends.sampling import Sampler
from bayling_local.engine.prefix import PrefixPolicy
from bayling_local.engine.queueing import Next, RequestQueue
from bayling_local.engine.requests import EngineStats, RequestHandle
from bayling_local.errors import UsageError

STEP_TOKENS = 512
"""Prompt tokens run per step at most; a longer prompt is prefilled in chunks over several steps."""


@dataclass
class RowRequest:
    """One request while it holds a cache row: its prompt goes in (in chunks), then a token per step."""

    handle: RequestHandle
    row: int
    budget: int
    """Most tokens to generate (max_tokens, cut to the room left in the row)."""
    sampler: Sampler
    assembler: TextAssembler
    stop_ids: frozenset[int]
    history: list[int]
    """Prompt and generated tokens: what the repeat penalty looks back over."""
    prefilled: int = 0
    """Prompt tokens in the row so far."""
    generated: list[int] = field(default_factory=list)
    pending: int | None = None
    """The token sampled last: the next decode run feeds it."""
    finish: str | None = None

    @property
    def prompt(self) -> list[int]:
        return self.handle.prompt_ids

    @property
    def prefilling(self) -> bool:
        return self.prefilled < len(self.prompt)

    @property
    def held_tokens(self) -> int:
        """Tokens in the row once `pending` has run: the prompt and everything generated."""
        return len(self.prompt) + len(self.generated)

    def take(self, token: int, detokenize: Callable[[list[int]], str]) -> None:
        """A sampled token: a stop token ends the request (and is not part of its text); any other joins
        the text, which may then end at a stop string or at the budget."""
        if token in self.stop_ids:
            self.finish = "stop"
            return
        self.generated.append(token)
        self.history.append(token)
        self.handle.emit(self.assembler.update(detokenize(self.generated)))
        if self.assembler.stopped:
            self.finish = "stop"
        elif len(self.generated) >= self.budget:
            self.finish = "length"
        else:
            self.pending = token

    def complete(self, reason: str | None, detokenize: Callable[[list[int]], str]) -> None:
        """End the request (with `reason`, or the one it finished with) and hand over its Completion."""
        self.finish = reason or self.finish or "length"
        if self.generated:
            self.handle.emit(self.assembler.finish(detokenize(self.generated)))
        self.handle.finish(Completion(self.assembler.text, list(self.generated), len(self.prompt), self.finish))


class OnnxRowsEngine:
    """Serves requests for a loaded `OnnxRuntimeBackend` with `parallel` cache rows of `capacity` tokens
    (default: the backend's context length, so a request has the room it would have alone).

    `stats.steps` counts steps: the prompt runs of a step and its one decode run. Prefix reuse needs the
    cache in host memory (CPU, CoreML); on CUDA every prompt runs whole."""

    def __init__(
        self,
        backend,
        parallel: int,
        *,
        capacity: int | None = None,
        step_tokens: int = STEP_TOKENS,
        prefix_reuse: bool = True,
    ):
        if parallel < 1:
            raise UsageError(f"--parallel must be at least 1 (got {parallel})")
        self.backend = backend
        self.stats = EngineStats(slots=parallel)
        self.capacity = min(capacity or backend.info.context_length, backend.info.context_length)
        self.step_tokens = max(1, step_tokens)
        self._cache = backend.cache_rows(parallel, self.capacity)
        self._prefix = PrefixPolicy() if prefix_reuse and self._cache.keeps_prefixes else None
        self._free_rows = list(range(parallel))  # a heap: the lowest free row first keeps decode runs short
        self._running: list[RowRequest] = []
        self._queue = RequestQueue(self.stats, self.capacity, backend.info.vocab_size, self._run, "onnx-engine")

    # --- the Engine protocol -----------------------------------------------------------------------

    def submit(
        self, prompt_ids: Ids[int], config: GenerationConfig, cancel: threading.Event | None = None
    ) -> RequestHandle:
        """Queue a request; `cancel` (optional) is an event the caller already holds, shared or not."""
        return self._queue.submit(prompt_ids, config, cancel)

    def close(self) -> None:
        self._queue.close()
        self._cache = None

    # --- the step loop (the engine's thread) --------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except Exception as error:  # noqa: BLE001 - a failed run ends every request with the error, not a hang
            self._fail_all(error)

    def _step(self) -> bool:
        step = self._queue.next_step(busy=bool(self._running))
        if step is Next.CLOSED:
            self._cancel_all()
        if step is not Next.STEP:
            return False
        for r in [r for r in self._running if r.handle.cancelled]:
            self._end(r, "cancelled")
        for handle in self._queue.take(len(self._free_rows)):
            self._start(handle)
        if self._running:
            self._prefill_step()
            self._end_finished()  # a request may end at its first token: its row then idles this step
            self._decode_step()
            self.stats.steps += 1
            self._end_finished()
        return True

    def _start(self, handle: RequestHandle) -> None:
        config = handle.config
        r = RowRequest(
            handle,
            heapq.heappop(self._free_rows),
            max(0, min(config.max_tokens, self.capacity - len(handle.prompt_ids))),
            Sampler(config),
            TextAssembler(config.stop),
            stop_token_set(self.backend.info, config),
            list(handle.prompt_ids),
        )
        handle.admitted_step = self.stats.steps
        self._running.append(r)
        self.stats.active = len(self._running)
        if r.budget <= 0:
            self._end(r, "length")
            return
        self._reuse_prefix(r)

    def _prefill_step(self) -> None:
        """Run prompts of rows that joined, in admission order, up to `step_tokens` tokens. A prompt that
        fits in one step runs whole (exactly as alone); one that would only fit in part waits for the next
        step, unless it is longer than a step, and then it goes in chunks of `step_tokens`."""
        room = self.step_tokens
        for r in [r for r in self._running if r.prefilling]:
            left = len(r.prompt) - r.prefilled
            count = left if left <= room else room if room == self.step_tokens else 0
            if not count:
                break
            logits = self._cache.prefill(r.row, r.prompt[r.prefilled : r.prefilled + count], start=r.prefilled)
            r.prefilled += count
            room -= count
            self.stats.prefill_tokens += count
            if not r.prefilling:
                self._learn_prefix(r)
                self._sample(r, logits)

    def _decode_step(self) -> None:
        """One run feeds every pending token; rows below the highest decoding one that have nothing to
        decode are fed padding where their next prompt token will overwrite it."""
        decoding = [r for r in self._running if r.pending is not None]
        if not decoding:
            return
        rows = max(r.row for r in decoding) + 1
        tokens: list[int | None] = [None] * rows
        lengths = [1] * rows  # a free row: padding at position 0
        for r in self._running:
            if r.row < rows and r.pending is None:
                lengths[r.row] = r.prefilled + 1  # mid-prompt: just past what it holds
        for r in decoding:
            tokens[r.row], lengths[r.row] = r.pending, r.held_tokens
        logits = self._cache.decode(tokens, lengths)
        for r in decoding:
            r.pending = None
            self._sample(r, logits[r.row])

    def _sample(self, r: RowRequest, logits: np.ndarray) -> None:
        """One token per row and pass (no drafts here): tokens per pass is 1."""
        r.take(r.sampler.pick(logits, r.history), self.backend.detokenize)
        self.stats.sampling_passes += 1
        self.stats.generated_tokens += 1

    def _end_finished(self) -> None:
        for r in [r for r in self._running if r.finish is not None]:
            self._end(r)

    def _end(self, r: RowRequest, reason: str | None = None) -> None:
        self._running.remove(r)
        heapq.heappush(self._free_rows, r.row)
        self.stats.active = len(self._running)
        self.stats.finished += 1
        r.handle.finished_step = self.stats.steps
        r.complete(reason, self.backend.detokenize)

    # --- prefix reuse ------------------------------------------------------------------------------

    def _reuse_prefix(self, r: RowRequest) -> None:
        if self._prefix is None:
            return
        length = self._prefix.reusable(r.prompt)
        if length:
            self._cache.copy_prefix(r.row, length)
            r.prefilled = length
            self.stats.prefill_tokens_saved += length

    def _learn_prefix(self, r: RowRequest) -> None:
        """With `r`'s whole prompt in its row: keep the start it shares with the prompt before it, when
        that is a new prefix. (No race to wait out as in llama.cpp: the copy is done when this returns.)"""
        if self._prefix is None:
            return
        length = self._prefix.learn(r.prompt)
        if length:
            self._cache.keep_prefix(r.row, length)
            self._prefix.keep(r.prompt[:length])

    # --- ending everything -------------------------------------------------------------------------

    def _cancel_all(self) -> None:
        for r in list(self._running):
            self._end(r, "cancelled")
        self._queue.cancel_all()

    def _fail_all(self, error: BaseException) -> None:
        handles, self._running = [r.handle for r in self._running], []
        self.stats.active = 0
        self._queue.fail_all(error, handles)
