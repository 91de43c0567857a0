"""Speed: prompt-processing and generation tokens/s, time to first token, memory (like llama-bench).

A prompt of exactly `prompt_tokens` token ids (a repeated English sentence) is streamed with greedy
decoding for `generation_tokens` tokens, through end-of-text (`ignore_eos`), as llama-bench does.
Tokens/s are measured here with a wall clock and, where the backend has them, read from its own
counters (llama.cpp's `perf_counters`) for the same run; both are reported.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from bayling_local.backends.base import GenerationConfig, LoadOptions, SpeculationOptions
from bayling_local.bench.hardware import PeakRssSampler, gpu_memory_used_bytes, process_peak_rss_bytes
from bayling_local.bench.jobs import (
    BenchmarkCancelled,
    ModelSummary,
    ProgressCallback,
    check_cancelled,
    report,
    summarize_model,
)
from bayling_local.errors import UsageError

PATTERN_TEXT = "The quick brown fox jumps over the lazy dog, then runs off into the green forest. "
WARMUP_GENERATION_TOKENS = 4


@dataclass(frozen=True)
class SpeedSettings:
    """What one speed measurement runs."""

    prompt_tokens: int = 512
    """Prompt length in tokens (llama-bench's -p)."""
    generation_tokens: int = 128
    """Tokens to generate after the prompt (llama-bench's -n)."""
    repetitions: int = 3
    """Timed runs; mean and standard deviation are reported."""
    warmup: bool = True
    """One untimed run first (allocations, caches, CPU frequency)."""

    def __post_init__(self):
        if self.prompt_tokens < 1 or self.generation_tokens < 2 or self.repetitions < 1:
            raise UsageError("speed needs -p >= 1, -n >= 2 and --repetitions >= 1")


@dataclass(frozen=True)
class SpeedCase:
    """One model loaded one way: a row of the speed table."""

    model: str | None
    """Store name or artifact path; None for the default model."""
    device: str = "auto"
    threads: int | None = None
    context_length: int | None = None
    """None: exactly prompt + generation tokens, as llama-bench allocates."""
    speculation: SpeculationOptions | None = None
    """Speculative decoding (`--draft-model`, `--lookup-ngram`); None decodes plainly."""


@dataclass(frozen=True)
class Stat:
    mean: float
    stddev: float
    """Sample standard deviation; 0 for a single value."""
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        if not values:
            return None
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), spread, len(values))

    def format(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f} ± {self.stddev:.{digits}f}"


@dataclass(frozen=True)
class Timing:
    """One timed run."""

    prompt_tokens: int
    generated_tokens: int
    ttft_s: float
    """From starting the request to the first generated text (prompt processing + first token)."""
    generation_s: float
    """From the first generated text to the last: generated_tokens - 1 decode steps."""
    engine: dict | None = None
    """The backend's own counters for this run (llama.cpp: prompt_ms, prompt_tokens, generation_ms, generation_tokens)."""
    speculation: dict | None = None
    """With speculative decoding: drafted and accepted tokens, and the model's sampling passes."""

    @property
    def acceptance_rate(self) -> float | None:
        s = self.speculation
        return s["accepted_tokens"] / s["drafted_tokens"] if s and s["drafted_tokens"] else None

    @property
    def tokens_per_pass(self) -> float | None:
        s = self.speculation
        return s["generated_tokens"] / s["sampling_passes"] if s and s["sampling_passes"] else None

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.ttft_s

    @property
    def generation_tps(self) -> float | None:
        steps = self.generated_tokens - 1
        return steps / self.generation_s if steps > 0 and self.generation_s > 0 else None

    @property
    def engine_prompt_tps(self) -> float | None:
        return _rate(self.engine, "prompt_tokens", "prompt_ms")

    @property
    def engine_generation_tps(self) -> float | None:
        return _rate(self.engine, "generation_tokens", "generation_ms")


def _rate(counters: dict | None, tokens: str, ms: str) -> float | None:
    if not counters or not counters.get(ms) or not counters.get(tokens):
        return None
    return counters[tokens] / counters[ms] * 1000.0


@dataclass
class SpeedResult:
    """Every figure of one case, ready for a table, JSON or the results log."""

    model: ModelSummary
    threads: int | None
    settings: SpeedSettings
    runs: list[Timing]
    peak_rss_bytes: int
    """Highest resident memory seen while this case loaded and ran (sampled every 20 ms)."""
    process_peak_rss_bytes: int
    """ru_maxrss: the whole process's high-water mark so far (includes earlier cases)."""
    gpu_memory_bytes: int | None
    runtime_settings: dict[str, str] = field(default_factory=dict)
    """What the backend ran with (threads, kernels, KV cache type, ...; its `runtime_settings()`)."""
    prompt_tps: Stat = field(init=False)
    generation_tps: Stat | None = field(init=False)
    ttft_s: Stat = field(init=False)
    engine_prompt_tps: Stat | None = field(init=False)
    engine_generation_tps: Stat | None = field(init=False)
    generated_tokens: int = field(init=False)
    """The fewest tokens any run generated (less than asked only if the context window filled up)."""
    acceptance_rate: Stat | None = field(init=False)
    """Speculative decoding: the share of drafted tokens the model kept."""
    tokens_per_pass: Stat | None = field(init=False)
    """Speculative decoding: generated tokens per pass of the model (1 without it)."""

    def __post_init__(self):
        runs = self.runs
        self.prompt_tps = Stat.of([r.prompt_tps for r in runs])
        self.generation_tps = Stat.of([r.generation_tps for r in runs if r.generation_tps])
        self.ttft_s = Stat.of([r.ttft_s for r in runs])
        self.engine_prompt_tps = Stat.of([r.engine_prompt_tps for r in runs if r.engine_prompt_tps])
        self.engine_generation_tps = Stat.of([r.engine_generation_tps for r in runs if r.engine_generation_tps])
        self.generated_tokens = min(r.generated_tokens for r in runs)
        self.acceptance_rate = Stat.of([r.acceptance_rate for r in runs if r.acceptance_rate is not None])
        self.tokens_per_pass = Stat.of([r.tokens_per_pass for r in runs if r.tokens_per_pass is not None])

    @property
    def generation_agreement(self) -> float | None:
        """|measured - engine| / engine for generation tokens/s (None without engine counters)."""
        return _relative_difference(self.generation_tps, self.engine_generation_tps)

    @property
    def prompt_agreement(self) -> float | None:
        return _relative_difference(self.prompt_tps, self.engine_prompt_tps)


def _relative_difference(measured: Stat | None, engine: Stat | None) -> float | None:
    if measured is None or engine is None or engine.mean == 0:
        return None
    return abs(measured.mean - engine.mean) / engine.mean


# --- measuring ------------------------------------------------------------------------------------


def prompt_ids(backend, length: int, offset: int = 0) -> list[int]:
    """Exactly `length` token ids: the pattern sentence repeated, starting `offset` tokens in."""
    pattern = backend.tokenize(PATTERN_TEXT, add_bos=False)
    return list(itertools.islice(itertools.cycle(pattern), offset, offset + length))


def _distinct_offsets(backend) -> Iterator[int]:
    """Offsets whose prompts start with a different token than the previous one's.

    llama-cpp-python reuses the KV cache for a prompt's common prefix with the previous request, which
    would skip prompt processing; a different first token makes every run process the whole prompt.
    """
    pattern = backend.tokenize(PATTERN_TEXT, add_bos=False)
    previous = None
    for offset in itertools.count():
        token = pattern[offset % len(pattern)]
        if token != previous:
            previous = token
            yield offset


def time_one_run(model, ids: list[int], max_tokens: int, cancel: threading.Event | None = None) -> Timing:
    """Stream `max_tokens` greedy tokens after `ids` and time it (and read the backend's counters)."""
    backend = model.backend
    speculating = getattr(backend, "speculation", None) is not None
    reset = getattr(backend, "reset_perf_counters", None)
    # Speculative runs decode in the engine's context, which llama.cpp's perf counters do not cover.
    counters = None if speculating else getattr(backend, "perf_counters", None)
    before = _engine_counters(backend) if speculating else None
    if callable(reset):
        reset()
    config = GenerationConfig(max_tokens=max_tokens, temperature=0.0, top_k=1, ignore_eos=True)
    start = time.perf_counter()
    stream = backend.stream(ids, config, cancel)
    first = None
    for _piece in stream:
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    completion = stream.completion
    if completion.finish_reason == "cancelled":
        raise BenchmarkCancelled("speed benchmark cancelled")
    first = first or end
    engine = dict(counters()) if callable(counters) else None
    drafting = _counter_change(before, _engine_counters(backend)) if speculating else None
    return Timing(len(ids), len(completion.token_ids), first - start, end - first, engine, drafting)


SPECULATION_COUNTERS = ("drafted_tokens", "accepted_tokens", "generated_tokens", "sampling_passes")


def _engine_counters(backend) -> dict[str, int]:
    stats = backend.batch_stats
    return {key: getattr(stats, key) if stats is not None else 0 for key in SPECULATION_COUNTERS}


def _counter_change(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    # A new engine (sized for a longer request) starts from zero.
    if any(after[key] < before[key] for key in after):
        return after
    return {key: after[key] - before[key] for key in after}


def measure_speed(
    model,
    settings: SpeedSettings,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    stage: str = "speed",
) -> list[Timing]:
    """Warm-up (untimed) and `settings.repetitions` timed runs on a loaded model."""
    offsets = _distinct_offsets(model.backend)
    if settings.warmup:
        report(progress, f"{stage} warm-up", 0, settings.repetitions)
        time_one_run(
            model, prompt_ids(model.backend, settings.prompt_tokens, next(offsets)), WARMUP_GENERATION_TOKENS, cancel
        )
    runs = []
    for rep in range(settings.repetitions):
        check_cancelled(cancel)
        report(progress, stage, rep, settings.repetitions)
        ids = prompt_ids(model.backend, settings.prompt_tokens, next(offsets))
        runs.append(time_one_run(model, ids, settings.generation_tokens, cancel))
    report(progress, stage, settings.repetitions, settings.repetitions)
    return runs


def run_case(
    case: SpeedCase,
    settings: SpeedSettings,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> SpeedResult:
    """Load the case's model, measure it, close it."""
    from bayling_local.model import open_model

    context = case.context_length or settings.prompt_tokens + settings.generation_tokens
    if context < settings.prompt_tokens + settings.generation_tokens:
        raise UsageError(
            f"--context {context} is smaller than -p + -n ({settings.prompt_tokens + settings.generation_tokens})"
        )
    options = LoadOptions(
        device=case.device, threads=case.threads, context_length=context, speculation=case.speculation
    )
    with PeakRssSampler() as loading:
        model = open_model(case.model, options=options)
    try:
        result = benchmark_loaded_model(model, settings, case.threads, progress, cancel)
    finally:
        model.close()
    result.peak_rss_bytes = max(result.peak_rss_bytes, loading.peak)
    return result


def benchmark_loaded_model(
    model,
    settings: SpeedSettings,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> SpeedResult:
    """Measure a model that is already loaded (the TUI's); `threads` is what it was loaded with.

    Its context window must hold prompt + generation tokens.
    """
    needed = settings.prompt_tokens + settings.generation_tokens
    if model.context_length < needed:
        raise UsageError(f"the context window ({model.context_length}) is smaller than -p + -n ({needed})")
    summary = summarize_model(model)
    stage = f"{summary.name} {summary.device} threads={threads or 'auto'}"
    wait_for_huge_pages(model.backend)
    with PeakRssSampler() as memory:
        runs = measure_speed(model, settings, progress, cancel, stage)
    gpu = gpu_memory_used_bytes(summary.device)
    runtime = backend_runtime_settings(model.backend)
    return SpeedResult(summary, threads, settings, runs, memory.peak, process_peak_rss_bytes(), gpu, runtime)


def wait_for_huge_pages(backend) -> None:
    """Measure the weights where they stay: a backend still moving them into 2 MiB pages (ONNX Runtime on
    Linux, `backends/huge_pages.py`) finishes first."""
    collapse = getattr(backend, "huge_pages", None)
    if collapse is not None:
        collapse.done.wait()


def backend_runtime_settings(backend) -> dict[str, str]:
    """The backend's `runtime_settings()`, or {} for a backend without one."""
    runtime_settings = getattr(backend, "runtime_settings", None)
    return {str(k): str(v) for k, v in runtime_settings().items()} if callable(runtime_settings) else {}


def benchmark_speed(
    cases: list[SpeedCase],
    settings: SpeedSettings,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> list[SpeedResult]:
    """Every case in turn (models x devices x thread counts)."""
    return [run_case(case, settings, progress, cancel) for case in cases]


def speed_cases(
    models: list[str | None],
    devices: list[str],
    threads: list[int | None],
    context: int | None,
    speculation: SpeculationOptions | None = None,
) -> list[SpeedCase]:
    return [SpeedCase(m, d, t, context, speculation) for m in models or [None] for d in devices for t in threads]


def parse_int_list(spec: str | None, what: str) -> list[int | None]:
    """`1,2,4` as [1, 2, 4]; None or '' as [None] (the backend's choice)."""
    if not spec:
        return [None]
    try:
        values = [int(item) for item in spec.split(",")]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated whole numbers, e.g. 1,2,4 (got {spec!r})") from None
    if any(v < 1 for v in values):
        raise UsageError(f"{what} must be at least 1 (got {spec!r})")
    return values


def parse_devices(spec: str) -> list[str]:
    """`cpu,cuda` as ['cpu', 'cuda']; every item must be a known device."""
    from bayling_local.backends.base import DEVICES

    devices = [item.strip() for item in spec.split(",")]
    unknown = [d for d in devices if d not in DEVICES]
    if unknown or not all(devices):
        raise UsageError(f"unknown device {', '.join(unknown) or repr(spec)}; choose from: {', '.join(DEVICES)}")
    return devices


def speed_record(result: SpeedResult, hardware, run_id: str | None = None):
    """The results-log record of one case (`run_id` groups the cases of one command)."""
    from dataclasses import asdict

    from bayling_local.bench.results import new_record, to_jsonable

    keys = (
        "prompt_tps",
        "generation_tps",
        "ttft_s",
        "engine_prompt_tps",
        "engine_generation_tps",
        "generated_tokens",
        "acceptance_rate",
        "tokens_per_pass",
        "peak_rss_bytes",
        "process_peak_rss_bytes",
        "gpu_memory_bytes",
        "runs",
    )
    results = {key: to_jsonable(getattr(result, key)) for key in keys}
    results["generation_agreement"] = result.generation_agreement
    results["prompt_agreement"] = result.prompt_agreement
    settings = {
        **asdict(result.settings),
        "threads": result.threads,
        "device": result.model.device,
        "context_length": result.model.context_length,
        "runtime_settings": result.runtime_settings,
    }
    return new_record("speed", result.model, hardware, settings, results, run_id)
