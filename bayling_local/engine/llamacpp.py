"""The llama.cpp calls the engine makes, as small wrappers over llama-cpp-python's public C bindings
(`llama_cpp.llama_cpp`): a context with one KV stream per sequence, a token batch, a sampler chain.

Only the engine's thread touches these objects; nothing here is thread-safe on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bayling_local.backends.base import GenerationConfig
from bayling_local.errors import BackendUnavailableError

KV_PAD = 256
"""llama.cpp pads a KV stream to a multiple of this many cells."""
PENALTY_LAST_N = 64
"""Tokens the repeat penalty looks back over: llama-cpp-python's default (`last_n_tokens_size`)."""


@dataclass(frozen=True)
class ContextShape:
    """How big a context the engine asks llama.cpp for."""

    sequences: int
    """KV streams: the slots plus the one that keeps a shared prefix."""
    cells_per_sequence: int
    step_tokens: int
    """Most tokens in one llama_decode (prefill chunks plus one token per decoding sequence)."""


def padded_cells(cells: int) -> int:
    return -(-max(1, cells) // KV_PAD) * KV_PAD


class LlamaContext:
    """A llama context of the backend's model, made for several sequences."""

    def __init__(self, llm, shape: ContextShape):
        import llama_cpp

        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        # A KV stream per sequence (not one unified cache): each sequence's attention then runs over its
        # own cells laid out as in single generation, so greedy results match it. A prefix moves between
        # streams as a whole-buffer copy (llama_memory_seq_cp across streams).
        params.n_seq_max, params.kv_unified = shape.sequences, False
        params.n_ctx = shape.cells_per_sequence * shape.sequences
        params.n_batch = params.n_ubatch = shape.step_tokens
        # llama.cpp uses the batch thread count for any decode of more than one token; most steps are a
        # handful of decode tokens, latency-bound like single decoding, so give them its threads (more
        # threads than cores spin and collapse when the machine is busy).
        params.n_threads_batch = params.n_threads
        self._ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if self._ctx is None:
            raise BackendUnavailableError(
                f"llama.cpp could not make a context for {shape.sequences} sequences of "
                f"{shape.cells_per_sequence} tokens (out of memory? lower --parallel or --context)"
            )
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self.shape = shape

    @property
    def pointer(self):
        return self._ctx

    def decode(self, batch: TokenBatch) -> None:
        import llama_cpp

        status = llama_cpp.llama_decode(self._ctx, batch.struct)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} on {batch.struct.n_tokens} tokens")

    def logits(self, row: int, vocab_size: int):
        """The last decode's logits for batch row `row` (a view into llama.cpp's buffer: read it before
        the next decode)."""
        import llama_cpp
        import numpy as np

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, row), shape=(vocab_size,))

    def remove(self, sequence: int, start: int = -1) -> None:
        """Free the sequence's cells from position `start` on (all of them by default)."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._memory, sequence, start, -1)

    def copy(self, source: int, destination: int) -> None:
        """Give `destination` every cell of `source` (whole streams: llama.cpp copies across streams
        only whole, so the caller trims the destination afterwards)."""
        import llama_cpp

        llama_cpp.llama_memory_seq_cp(self._memory, source, destination, -1, -1)

    def clear(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(self._memory, True)

    def close(self) -> None:
        import llama_cpp

        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None


class TokenBatch:
    """A llama_batch of up to `capacity` tokens, each in one sequence."""

    def __init__(self, capacity: int):
        import llama_cpp

        self.capacity = capacity
        self.struct = llama_cpp.llama_batch_init(capacity, 0, 1)

    def fill(self, rows: Sequence[tuple[int, int, int, bool]]) -> None:
        """Rows of (token, position, sequence, wants_logits)."""
        batch = self.struct
        batch.n_tokens = len(rows)
        for row, (token, position, sequence, wants_logits) in enumerate(rows):
            batch.token[row] = token
            batch.pos[row] = position
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = sequence
            batch.logits[row] = wants_logits

    def close(self) -> None:
        import llama_cpp

        if self.struct is not None:
            llama_cpp.llama_batch_free(self.struct)
            self.struct = None


class SamplerChain:
    """One sequence's llama.cpp sampler chain: the chain llama-cpp-python builds for single generation
    (its `Llama.generate`), so the same seed samples the same way; it runs in C, token by token."""

    def __init__(self, config: GenerationConfig, seed: int, vocab_size: int):
        import llama_cpp

        self._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        for sampler in _samplers(config, seed, vocab_size):
            llama_cpp.llama_sampler_chain_add(self._chain, sampler)

    def sample(self, context: LlamaContext, row: int) -> int:
        """The token for batch row `row` (which asked for logits); the chain records it (penalties)."""
        import llama_cpp

        return int(llama_cpp.llama_sampler_sample(self._chain, context.pointer, row))

    def close(self) -> None:
        import llama_cpp

        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)  # frees the samplers added to it too
            self._chain = None


def _samplers(config: GenerationConfig, seed: int, vocab_size: int) -> list:
    import llama_cpp

    samplers = []
    if config.repeat_penalty != 1.0:  # a penalty of 1 changes nothing
        samplers.append(
            llama_cpp.llama_sampler_init_penalties(vocab_size, PENALTY_LAST_N, config.repeat_penalty, 0.0, 0.0)
        )
    if config.temperature <= 0.0:
        return [*samplers, llama_cpp.llama_sampler_init_greedy()]
    # min_p is off (as in `sampling_arguments`), typical_p is 1: both would change nothing.
    return [
        *samplers,
        llama_cpp.llama_sampler_init_top_k(config.top_k),
        llama_cpp.llama_sampler_init_top_p(config.top_p, 1),
        llama_cpp.llama_sampler_init_temp(config.temperature),
        llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF),
    ]
