"""What every benchmark job shares: progress reports, cancellation, and a description of the model.

The CLI and the TUI call the same job functions; they pass a `progress` callback (called from the
job's thread) and a `threading.Event` that stops the job between steps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from bayling_local.errors import BaylingError


class BenchmarkCancelled(BaylingError):
    """A benchmark stopped because its cancel event was set (exit code 130, like Ctrl-C)."""

    exit_code = 130


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a job: `done` of `total` steps of the current stage (`total` 0 when unknown)."""

    stage: str
    """What is running, e.g. `smollm2 cpu t=2 rep 2/3` or `eng_Latn-swh_Latn`."""
    done: int
    total: int


ProgressCallback = Callable[[ProgressEvent], None]


def report(progress: ProgressCallback | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(ProgressEvent(stage, done, total))


def check_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise BenchmarkCancelled("benchmark cancelled; nothing was recorded for the unfinished run")


@dataclass(frozen=True)
class ModelSummary:
    """The facts a result row names about the model it measured."""

    name: str
    path: str
    format: str
    quant: str
    size_bytes: int
    backend: str
    device: str
    context_length: int
    build: dict


def summarize_model(model) -> ModelSummary:
    """Name, artifact, quant, size, backend build and device of a loaded `bayling_local.model.Model`."""
    source, backend = model.source, model.backend
    build_info = getattr(backend, "build_info", None)
    return ModelSummary(
        name=source.name,
        path=str(source.path),
        format=source.format,
        quant=_quant(source.path, source.format),
        size_bytes=_size(source.path),
        backend=backend.name,
        device=backend.info.device,
        context_length=backend.info.context_length,
        build=dict(build_info()) if callable(build_info) else {"backend": backend.name},
    )


def _quant(path, artifact_format: str) -> str:
    if artifact_format != "gguf":
        return "-"
    from bayling_local.gguf_header import read_gguf_header

    try:
        return read_gguf_header(path).quant
    except BaylingError:
        return "unknown"


def _size(path) -> int:
    from pathlib import Path

    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
