"""Continuous batching over llama.cpp: a fixed number of slots, one llama_decode per step.

Each step decodes one token of every running sequence together with prompt chunks of sequences that
joined since (up to `step_tokens`). A sequence that ends frees its slot and KV cells at once, and the
next queued request is prefilled in the following step while the others keep decoding. A prompt that
starts with the kept shared prefix (`prefix.py`) gets that KV copied instead of prefilled. With
speculative decoding (`speculation.py`) a sequence decodes its pending token and a draft in one step
and keeps the drafted tokens its own sampler chooses (`_verify`).

One thread at a time owns the llama context and runs the step loop; `submit` only enqueues (and starts
the thread when none runs: it ends whenever the engine is idle, see `queueing.py`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence as Ids

from bayling_local.backends.base import GenerationConfig, SpeculationOptions
from bayling_local.backends.decoding import TextAssembler, stop_token_set
from bayling_local.engine.llamacpp import ContextShape, LlamaContext, SamplerChain, TokenBatch, padded_cells
from bayling_local.engine.prefix import PrefixPolicy
from bayling_local.engine.queueing import Next, RequestQueue
from bayling_local.engine.requests import EngineStats, RequestHandle
from bayling_local.engine.scheduler import plan_step
from bayling_local.engine.slots import Sequence, SlotPool
from bayling_local.engine.speculation import Speculator
from bayling_local.errors import UsageError

STEP_TOKENS = 512
"""Tokens per llama_decode: one per decoding sequence, the rest prompt chunks."""


class ContinuousEngine:
    """Serves requests for a loaded `LlamaCppBackend` with `parallel` slots of `cells_per_slot` tokens
    (default: the backend's context length, so a request has the room it would have alone)."""

    def __init__(
        self,
        backend,
        parallel: int,
        *,
        cells_per_slot: int | None = None,
        step_tokens: int = STEP_TOKENS,
        prefix_reuse: bool = True,
        speculation: SpeculationOptions | None = None,
        draft_llm=None,
    ):
        """`speculation` and `draft_llm` default to the backend's (`--draft-model`, `--lookup-ngram`);
        pass `SpeculationOptions()` to decode plainly."""
        if parallel < 1:
            raise UsageError(f"--parallel must be at least 1 (got {parallel})")
        self.backend = backend
        self.stats = EngineStats(slots=parallel)
        self.cells_per_slot = padded_cells(cells_per_slot or backend.info.context_length)
        self.step_tokens = step_tokens
        self._context = LlamaContext(backend.llm, ContextShape(parallel + 1, self.cells_per_slot, step_tokens))
        self._batch = TokenBatch(step_tokens)
        self._prefix = PrefixPolicy() if prefix_reuse else None
        self._prefix_sequence = parallel  # the reserved sequence id: one past the slots
        self._prefix_step = -1
        self._slots = SlotPool(parallel)
        self._speculator = self._make_speculator(speculation, draft_llm, parallel)
        self._running: list[Sequence] = []
        prompt_limit = min(backend.info.context_length, self.cells_per_slot)
        self._queue = RequestQueue(self.stats, prompt_limit, backend.info.vocab_size, self._run, "llama-engine")

    # --- the Engine protocol -----------------------------------------------------------------------

    def submit(
        self, prompt_ids: Ids[int], config: GenerationConfig, cancel: threading.Event | None = None
    ) -> RequestHandle:
        """Queue a request; `cancel` (optional) is an event the caller already holds, shared or not."""
        return self._queue.submit(prompt_ids, config, cancel)

    def close(self) -> None:
        self._queue.close()
        self._batch.close()
        self._context.close()
        if self._speculator is not None:
            self._speculator.close()

    def _make_speculator(self, options: SpeculationOptions | None, draft_llm, parallel: int) -> Speculator | None:
        if options is None:
            options, draft_llm = getattr(self.backend, "speculation", None), getattr(self.backend, "draft_llm", None)
        if options is None or not (options.enabled or draft_llm is not None):
            return None
        if draft_llm is None:
            return Speculator(options)
        from bayling_local.engine.draft_model import CONFIDENCE, DraftModel

        shape = ContextShape(parallel, self.cells_per_slot, self.step_tokens)
        # A fixed length drafts every token asked for, sure or not (benchmarks compare the two).
        return Speculator(options, DraftModel(draft_llm, shape, confidence=0.0 if options.fixed else CONFIDENCE))

    # --- the step loop (the engine's thread) --------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except Exception as error:  # noqa: BLE001 - a failed decode ends every request with the error, not a hang
            self._fail_all(error)

    def _step(self) -> bool:
        step = self._queue.next_step(busy=bool(self._running))
        if step is Next.CLOSED:
            self._cancel_all()
        if step is not Next.STEP:
            return False
        for s in [s for s in self._running if s.handle.cancelled]:
            self._end(s, "cancelled")
        for handle in self._queue.take(self._slots.free):
            self._start(handle)
        if self._running:
            self._decode_step()
        return True

    def _start(self, handle: RequestHandle) -> None:
        config, info = handle.config, self.backend.info
        room = min(info.context_length, self.cells_per_slot) - len(handle.prompt_ids)
        seed = config.seed if config.seed is not None else random.randrange(2**31)
        s = Sequence(
            handle,
            self._slots.take(),
            max(0, min(config.max_tokens, room)),
            SamplerChain(config, seed, info.vocab_size),
            TextAssembler(config.stop),
            stop_token_set(info, config),
        )
        handle.admitted_step = self.stats.steps
        if self._speculator is not None:
            self._speculator.start(s)
        self._running.append(s)
        self.stats.active = len(self._running)
        if s.budget <= 0:
            self._end(s, "length")
            return
        self._reuse_prefix(s)

    def _decode_step(self) -> None:
        if self._speculator is not None:
            decoding = [s for s in self._running if s.pending is not None]
            self._speculator.propose(decoding, room=self.step_tokens - len(decoding))
        plan = plan_step(self._running, self.step_tokens)
        self._batch.fill(plan.rows)
        self._context.decode(self._batch)
        self.stats.steps += 1
        for s, count in plan.prefilled:
            s.prefilled += count
            self.stats.prefill_tokens += count
        captured = False
        for row, s in plan.samplers:
            if not s.generated and s.pending is None:  # its prompt is in: a prefix to keep?
                captured = self._learn_prefix(s, may_capture=not captured) or captured
            self._verify(s, row)
        for s in [s for s in self._running if s.finish is not None]:
            self._end(s)

    def _verify(self, s: Sequence, row: int) -> None:
        """Sample from `row`, then from each drafted row after it while the sampled token is the
        drafted one: every token taken is the model's own choice given the tokens before it, so
        greedy output is plain decoding's and sampled output keeps the model's distribution. The KV
        of drafted tokens not kept is removed.

        "Plain decoding's" holds bit for bit where llama.cpp computes a row of several tokens exactly
        as a row of one: quantized Q8_0 weights (integer dot products) on the CPUs measured. Float
        weights (f32/f16: ggml_vec_dot for one token, llamafile's sgemm for several; logits differ by up
        to 0.004 on the bundled model in f32) and repacked Q4_0 (up to 0.4) round differently, so a
        greedy near-tie can go the other way (measured in tests/test_speculative.py)."""
        draft, s.draft, s.pending = s.draft, [], None
        taken: list[int] = []
        for offset in range(len(draft) + 1):
            token = s.sampler.sample(self._context, row + offset)
            s.accept(token, self._ends(s, token), self.backend.token_bytes(token))
            taken.append(token)
            if s.finish is not None or offset == len(draft) or token != draft[offset]:
                break
        accepted = sum(1 for a, b in zip(taken, draft) if a == b)
        self.stats.sampling_passes += 1
        self.stats.generated_tokens += len(taken)
        self.stats.drafted_tokens += len(draft)
        self.stats.accepted_tokens += accepted
        if self._speculator is not None:
            self._speculator.record(s, len(draft), accepted, taken)
        if s.finish is None and accepted < len(draft):
            self._context.remove(s.slot, s.next_position)  # from the pending token's cell: drafts not kept

    def _ends(self, s: Sequence, token: int) -> bool:
        import llama_cpp

        if token in s.stop_ids:
            return True
        return not s.handle.config.ignore_eos and bool(llama_cpp.llama_vocab_is_eog(self.backend.vocab, token))

    def _end(self, s: Sequence, reason: str | None = None) -> None:
        self._running.remove(s)
        self._context.remove(s.slot)
        if self._speculator is not None:
            self._speculator.forget(s)
        self._slots.give_back(s.slot)
        s.sampler.close()
        self.stats.active = len(self._running)
        self.stats.finished += 1
        s.handle.finished_step = self.stats.steps
        s.complete(reason)

    # --- prefix reuse ------------------------------------------------------------------------------

    def _reuse_prefix(self, s: Sequence) -> None:
        # A prefix captured after the last decode is still a pending copy inside llama.cpp: wait a step.
        if self._prefix is None or self.stats.steps <= self._prefix_step:
            return
        length = self._prefix.reusable(s.prompt)
        if length:
            self._context.copy(self._prefix_sequence, s.slot)
            self._context.remove(s.slot, length)
            s.prefilled = length
            self.stats.prefill_tokens_saved += length

    def _learn_prefix(self, s: Sequence, may_capture: bool) -> bool:
        """Keep the start `s` shares with the prompt before it as the prefix; True when it did. One
        capture per step: two copies into the reserved sequence would race inside llama.cpp."""
        if self._prefix is None:
            return False
        length = self._prefix.learn(s.prompt)
        if not length or not may_capture:
            return False
        self._context.copy(s.slot, self._prefix_sequence)
        self._context.remove(self._prefix_sequence, length)
        self._prefix.keep(s.prompt[:length])
        self._prefix_step = self.stats.steps
        return True

    # --- ending everything -------------------------------------------------------------------------

    def _cancel_all(self) -> None:
        for s in list(self._running):
            self._end(s, "cancelled")
        self._queue.cancel_all()

    def _fail_all(self, error: BaseException) -> None:
        handles, self._running = [s.handle for s in self._running], []
        self.stats.active = 0
        self._queue.fail_all(error, handles)
