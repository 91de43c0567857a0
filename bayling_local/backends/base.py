"""The one protocol every backend (llama.cpp, ONNX Runtime, transformers) implements.

Backends work on raw prompts and token ids; chat formats, context fitting and translation live above
them (`bayling_local.model`), so a new backend is one module that implements `Backend`.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Device = Literal["auto", "cpu", "cuda", "metal", "coreml"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "metal", "coreml")


@dataclass(frozen=True)
class SpeculationOptions:
    """Speculative decoding: cheap drafts that the model verifies several tokens at a time.

    Greedy output is token-for-token what plain decoding gives; sampled output keeps the model's
    distribution (a drafted token is kept when the model's own sample equals it). llama.cpp only."""

    draft_model: str | None = None
    """A smaller model with the same vocabulary that drafts tokens (store name or GGUF path)."""
    draft_path: str | None = None
    """The draft model's GGUF file, once `draft_model` is resolved (set by `open_model`)."""
    draft_tokens: int = 8
    """Most tokens drafted ahead; adaptive (it shrinks while drafts are rejected) unless `fixed`."""
    lookup_ngram: int = 0
    """Draft from the prompt and the text so far: continue the latest earlier match of the last
    2..N tokens (0: off). Needs no second model; pays off where text is copied (markup, names)."""
    fixed: bool = False
    """Always draft `draft_tokens` (benchmarks compare it with the adaptive length)."""

    @property
    def enabled(self) -> bool:
        return bool(self.draft_model or self.draft_path or self.lookup_ngram)


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model."""

    device: str = "auto"
    """`auto` uses the best accelerator this build has, `cpu` none; `cuda`, `metal`, `coreml` demand one."""
    threads: int | None = None
    """CPU threads for generation; None lets the backend choose (one per physical core in the process's
    CPU affinity for llama.cpp, as llama.cpp itself does; ONNX Runtime's own default, also physical cores)."""
    huge_pages: bool = True
    """ONNX Runtime on the CPU: put the weights it loaded into 2 MiB pages (Linux, `madvise(MADV_COLLAPSE)`)
    for fewer TLB misses per token; False leaves them in 4 KiB pages (config file key `huge_pages`)."""
    context_length: int | None = None
    """Context window in tokens; None takes the model's trained length, capped at 8192."""
    allow_pickle: bool = False
    """Allow loading pickled (`.bin`/`.pt`) weights; off by default because pickle runs code."""
    trust_remote_code: bool = False
    """Allow model code shipped with a checkpoint; off unless the user asks."""
    extra_buffers: bool | None = None
    """llama.cpp's extra CPU buffer types (weights repacked for its fastest kernels: CPU_REPACK, AMX).
    None decides: on, as in a stock llama.cpp, except for weights of a type llama.cpp has AMX kernels
    for (Q4_0, Q4_1, Q8_0, K-quants) on a build with AMX (those kernels crash); True or False forces it. Other backends ignore it."""
    speculation: SpeculationOptions | None = None
    """Speculative decoding (llama.cpp backend); None or not `enabled`: plain decoding."""


DEFAULT_CONTEXT_CAP = 8192


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling and stopping settings; the same meaning on every backend."""

    max_tokens: int = 512
    """Most tokens to generate."""
    temperature: float = 0.0
    """0 means greedy decoding (deterministic)."""
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0
    seed: int | None = None
    """Sampling seed; None picks a fresh one each call."""
    stop: tuple[str, ...] = ()
    """Stop strings: generation ends before the first one, which is not returned."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end generation (in addition to the model's own end-of-generation tokens)."""
    ignore_eos: bool = False
    """Generate through the model's end-of-generation tokens, to `max_tokens` (speed benchmarks);
    `stop` and `stop_token_ids` still end it."""


FinishReason = Literal["stop", "length", "cancelled"]


@dataclass
class Completion:
    """The full result of one generation."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: FinishReason = "stop"


@dataclass(frozen=True)
class ContinuationScore:
    """Log-probability of one continuation given a prompt (natural log)."""

    continuation: str
    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]

    @property
    def logprob(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(1, len(self.token_logprobs))


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model says about itself (read from the artifact)."""

    architecture: str
    context_length: int
    """The context window in use (not necessarily the trained one)."""
    trained_context_length: int
    vocab_size: int
    bos_token: str | None
    eos_token: str | None
    add_bos: bool
    chat_template: str | None
    end_of_generation_ids: frozenset[int]
    device: str
    """The device actually in use, e.g. `cpu` or `cuda`."""


Prompt = str | Sequence[int]


@runtime_checkable
class Backend(Protocol):
    """A loaded model that can tokenize, generate and score.

    Prompts are raw text (special tokens such as `<|eot_id|>` are parsed) or token ids. `cancel` is
    checked between tokens; a set event ends generation with finish_reason "cancelled".

    Optional methods, looked up with `getattr` by benchmarks and reports (not part of the isinstance
    check): `build_info() -> dict[str, str]` (library versions, build features) and
    `runtime_settings() -> dict[str, str]` (what this load runs with: threads, kernels, cache types,
    device placement), so a figure always says what produced it.
    """

    name: str
    info: ModelInfo

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Ids of `text`; `special=False` keeps special-token texts (`<|eot_id|>`) as plain text."""
        ...

    def detokenize(self, token_ids: Sequence[int]) -> str: ...

    def stream(
        self, prompt: Prompt, config: GenerationConfig, cancel: threading.Event | None = None
    ) -> TextStream:
        """Text pieces as they are generated; `.completion` is set once the stream is exhausted."""
        ...

    def generate_batch(
        self, prompts: Sequence[Prompt], config: GenerationConfig, cancel: threading.Event | None = None
    ) -> list[Completion]: ...

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[ContinuationScore]: ...

    def close(self) -> None: ...


class TextStream:
    """Iterate to receive text pieces; afterwards `completion` holds the whole result.

    Wraps a generator that yields pieces and *returns* its Completion, so callers can stream with a
    plain `for` loop and still get token counts and the finish reason.
    """

    def __init__(self, pieces: Generator[str, None, Completion]):
        self._pieces = pieces
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        self.completion = yield from self._pieces

    def collect(self) -> Completion:
        """Run the stream to its end and return its Completion."""
        for _ in self:
            pass
        assert self.completion is not None
        return self.completion


def resolve_context_length(requested: int | None, trained: int) -> int:
    """The context window to allocate: the request, else the trained length capped for memory."""
    if requested is not None:
        return requested
    return min(trained, DEFAULT_CONTEXT_CAP) if trained > 0 else DEFAULT_CONTEXT_CAP
