"""What the bench screen asks for, run through `bayling_local.bench` on the TUI's one model slot.

Each ticked model is loaded in turn into the slot (so one model is in memory at a time), measured with
the bench module's own function for already-loaded models, and its record is appended to
`results.jsonl` at once, so a stopped run keeps what it finished.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from bayling_local.bench.choice import ChoiceSettings, check_choice_request, choice_record, run_choice_benchmark
from bayling_local.bench.hardware import HardwareInfo, detect_hardware
from bayling_local.bench.jobs import ProgressCallback, check_cancelled, summarize_model
from bayling_local.bench.results import RunRecord, append_record
from bayling_local.bench.speed import SpeedSettings, benchmark_loaded_model, speed_record
from bayling_local.bench.translation import (
    TranslationSettings,
    check_pairs_in_data,
    parse_pairs,
    run_translation_benchmark,
    translation_record,
)
from bayling_local.model import Model

KINDS = ("speed", "translate", "choice")
Loader = Callable[[str | None], Model]


@dataclass(frozen=True)
class BenchRequest:
    kind: str
    models: tuple[str, ...]
    speed: SpeedSettings = field(default_factory=SpeedSettings)
    data: str = ""
    """FLORES-200 (translate) or XCOPA/Belebele (choice): a folder or an archive."""
    pairs: str = "eng_Latn-fra_Latn"
    translation: TranslationSettings = field(default_factory=lambda: TranslationSettings(limit=20))
    languages: tuple[str, ...] = ()
    """Choice languages; empty: every language the data holds."""
    choice: ChoiceSettings = field(default_factory=lambda: ChoiceSettings(limit=20))


def check_request(request: BenchRequest) -> BenchRequest:
    """Fail on bad pairs, data or languages before any model loads (UsageError names the fix)."""
    if request.kind == "translate":
        from bayling_local.evaldata import flores_languages

        available = flores_languages(request.data)
        check_pairs_in_data(parse_pairs(request.pairs, available), available)
    elif request.kind == "choice":
        check_choice_request(request.data, list(request.languages) or None, request.choice)
    return request


def run_request(
    request: BenchRequest,
    load: Loader,
    threads: int | None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    on_loaded: Callable[[str], None] | None = None,
) -> list[RunRecord]:
    """Every ticked model in turn: load it into the slot, measure, append its record."""
    run_id, hardware, records = uuid.uuid4().hex[:12], detect_hardware(), []
    for name in request.models:
        check_cancelled(cancel)
        model = load(name)
        if on_loaded:
            on_loaded(model.name)
        record = replace(_measure(request, model, threads, hardware, progress, cancel), run_id=run_id)
        append_record(record)
        records.append(record)
    return records


def _measure(request, model: Model, threads, hardware: HardwareInfo, progress, cancel) -> RunRecord:
    if request.kind == "speed":
        return speed_record(benchmark_loaded_model(model, request.speed, threads, progress, cancel), hardware)
    summary = summarize_model(model)
    if request.kind == "translate":
        from bayling_local.evaldata import flores_languages

        pairs = parse_pairs(request.pairs, flores_languages(request.data))
        report = run_translation_benchmark(model, request.data, pairs, request.translation, progress, cancel)
        return translation_record(report, summary, hardware, request.data)
    languages = list(request.languages) or None
    report = run_choice_benchmark(model, request.data, languages, request.choice, progress, cancel)
    return choice_record(report, summary, hardware, request.data)
