"""Progress of a batch translation for the CLI: a rich bar on a terminal, JSON events for machines.

Both are plain callbacks taking a `BatchProgress`; the TUI passes its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import IO

from bayling_local.translate.report import BatchProgress, BatchReport


class JsonEventLog:
    """One JSON object per line: `{"event": "batch", ...}` per batch, then `{"event": "summary", ...}`."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def __call__(self, progress: BatchProgress) -> None:
        self._write(
            {
                "event": "start" if progress.batch == 0 else "batch",
                "batch": progress.batch,
                "batches": progress.batches,
                "done": progress.done,
                "total": progress.total,
                "resumed": progress.resumed,
                "tokens": progress.tokens,
                "elapsed_s": round(progress.elapsed_s, 3),
                "tokens_per_s": round(progress.tokens_per_s, 2),
            }
        )

    def summary(self, report: BatchReport) -> None:
        self._write({"event": "summary", **report.as_dict()})

    def _write(self, event: dict) -> None:
        self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.stream.flush()


class RichProgressBar:
    """Segments done, tokens/s and ETA on stderr; use as a context manager around the run."""

    def __init__(self, description: str):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("segments · {task.fields[rate]} tok/s · ETA {task.fields[eta]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(description, total=None, rate="–", eta="–")

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def __call__(self, progress: BatchProgress) -> None:
        eta = "–" if progress.eta_s is None else _clock(progress.eta_s)
        self._progress.update(
            self._task, total=progress.total, completed=progress.done, rate=f"{progress.tokens_per_s:.1f}", eta=eta
        )


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def fan_out(callbacks: Sequence[Callable[[BatchProgress], None]]) -> Callable[[BatchProgress], None]:
    def notify(progress: BatchProgress) -> None:
        for callback in callbacks:
            callback(progress)

    return notify
