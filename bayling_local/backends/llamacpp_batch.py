"""Batched decoding for llama.cpp: several prompts share one context, one `llama_decode` per step.

Each prompt is its own sequence (seq_id) in a second llama context made for batches. Every sequence
samples with the same sampler chain llama-cpp-python builds for single generation, so greedy output
is the same as one prompt at a time, only faster in aggregate.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from bayling_local.backends.base import Completion, GenerationConfig
from bayling_local.backends.decoding import TextAssembler, stop_token_set

MAX_SEQUENCES = 16
"""Prompts decoded together; longer lists go in groups of this size."""
BATCH_TOKENS = 512
"""Tokens per llama_decode call (prefill chunks)."""


@dataclass
class _Sequence:
    """One prompt's progress through the batch."""

    index: int
    prompt: list[int]
    budget: int
    sampler: object
    assembler: TextAssembler
    generated: list[int] = field(default_factory=list)
    pending: int | None = None
    """The token sampled last, not yet checked or decoded."""
    finish: str | None = None

    @property
    def position(self) -> int:
        return len(self.prompt) + len(self.generated) - 1


class BatchDecoder:
    """A llama context with room for several sequences, kept while it is big enough."""

    def __init__(self, backend):
        self._backend = backend
        self._context = None
        self._batch = None
        self._cells = self._sequences = 0
        self._lock = threading.Lock()

    def generate(
        self, prompts: list[list[int]], config: GenerationConfig, cancel: threading.Event | None
    ) -> list[Completion]:
        results: list[Completion] = []
        with self._lock:
            for start in range(0, len(prompts), MAX_SEQUENCES):
                results += self._generate_group(prompts[start : start + MAX_SEQUENCES], config, cancel)
        return results

    def close(self) -> None:
        for resource in (self._batch, self._context):
            if resource is not None:
                resource.close()
        self._context = self._batch = None

    # --- one group --------------------------------------------------------------------------

    def _generate_group(
        self, prompts: list[list[int]], config: GenerationConfig, cancel: threading.Event | None
    ) -> list[Completion]:
        context_length = self._backend.info.context_length
        budgets = [max(0, min(config.max_tokens, context_length - len(p))) for p in prompts]
        self._ensure_context(len(prompts), max(len(p) + b for p, b in zip(prompts, budgets)))
        sequences = [
            _Sequence(i, p, b, self._sampler(config, i), TextAssembler(config.stop))
            for i, (p, b) in enumerate(zip(prompts, budgets))
        ]
        try:
            self._prefill(sequences)
            self._decode_until_done(sequences, config, cancel)
        finally:
            self._clear_memory()
        return [self._completion(s) for s in sequences]

    def _prefill(self, sequences: list[_Sequence]) -> None:
        entries = [
            (token, position, s.index, position == len(s.prompt) - 1)
            for s in sequences
            if s.budget > 0
            for position, token in enumerate(s.prompt)
        ]
        for s in sequences:
            if s.budget <= 0:
                s.finish = "length"
        for start in range(0, len(entries), BATCH_TOKENS):
            chunk = entries[start : start + BATCH_TOKENS]
            self._decode(chunk)
            for row, (_, _, seq, wants_logits) in enumerate(chunk):
                if wants_logits:
                    sequences[seq].pending = sequences[seq].sampler.sample(self._context, row)

    def _decode_until_done(
        self, sequences: list[_Sequence], config: GenerationConfig, cancel: threading.Event | None
    ) -> None:
        stop_ids = stop_token_set(self._backend.info, config)
        while True:
            if cancel is not None and cancel.is_set():
                for s in sequences:
                    s.finish = s.finish or "cancelled"
                return
            active = [s for s in sequences if s.finish is None and self._accept(s, stop_ids, config.ignore_eos)]
            if not active:
                return
            self._decode([(s.generated[-1], s.position, s.index, True) for s in active])
            for row, s in enumerate(active):
                s.pending = s.sampler.sample(self._context, row)

    def _accept(self, s: _Sequence, stop_ids: frozenset[int], ignore_eos: bool) -> bool:
        """Take the sequence's sampled token; False when the sequence has finished."""
        import llama_cpp

        token, s.pending = s.pending, None
        if token in stop_ids or (not ignore_eos and llama_cpp.llama_vocab_is_eog(self._backend.vocab, token)):
            s.finish = "stop"
            return False
        s.generated.append(token)
        s.assembler.feed(self._backend.token_bytes(token))
        if s.assembler.stopped:
            s.finish = "stop"
        elif len(s.generated) >= s.budget:
            s.finish = "length"
        return s.finish is None

    def _completion(self, s: _Sequence) -> Completion:
        s.assembler.finish()
        return Completion(s.assembler.text, s.generated, len(s.prompt), s.finish or "length")

    # --- llama.cpp plumbing -------------------------------------------------------------------

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        batch = self._batch.batch
        batch.n_tokens = len(entries)
        for row, (token, position, seq, wants_logits) in enumerate(entries):
            batch.token[row] = token
            batch.pos[row] = position
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = seq
            batch.logits[row] = wants_logits
        self._context.decode(self._batch)

    def _sampler(self, config: GenerationConfig, index: int):
        from bayling_local.backends.llamacpp import sampling_arguments

        llm = self._backend.llm
        # The same chain llama-cpp-python builds for one prompt; each sequence its own seed.
        seed = config.seed if config.seed is not None else random.randrange(2**31)
        llm.set_seed(seed + index)
        return llm._init_sampler(**sampling_arguments(config))

    def _ensure_context(self, n_sequences: int, cells_per_sequence: int) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext

        cells = -(-cells_per_sequence // 256) * 256  # llama.cpp pads the KV cache to 256 cells
        if self._context is not None and cells <= self._cells and n_sequences <= self._sequences:
            return
        # Room for the next power of two of sequences, so a smaller last batch reuses the context.
        n_sequences = min(MAX_SEQUENCES, 1 << (n_sequences - 1).bit_length())
        cells = max(cells, self._cells)
        self.close()
        llm = self._backend.llm
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        # A KV stream per sequence (not one unified cache): each sequence's attention then runs over
        # its own cells exactly as in single generation, so greedy results match it.
        params.n_ctx, params.n_seq_max, params.kv_unified = cells * n_sequences, n_sequences, False
        params.n_batch = params.n_ubatch = BATCH_TOKENS
        # llama.cpp uses the batch thread count for any decode of more than one token; batched decode
        # steps are a handful of tokens, latency-bound like single decoding, so give them its threads
        # (more threads than cores spin and collapse when the machine is busy).
        params.n_threads_batch = params.n_threads
        self._context = LlamaContext(model=llm._model, params=params, verbose=False)
        self._batch = LlamaBatch(n_tokens=BATCH_TOKENS, embd=0, n_seq_max=1, verbose=False)
        self._cells, self._sequences = cells, n_sequences

    def _clear_memory(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(self._context.memory, True)
