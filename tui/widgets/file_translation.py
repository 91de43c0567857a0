"""The translate screen's file mode: `translate_file` on one file, with progress, Esc to stop, resume.

A stopped run keeps its journal beside the output; starting the same file and targets again continues
from it (the batch translator decides), unless "start over" is ticked.
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar

from bayling_local.languages import Language
from bayling_local.translate.batch import DEFAULT_BATCH_SIZE, BatchOptions, BatchProgress, BatchReport, translate_file
from bayling_local.tui.errors import describe

FORMATS_HINT = "text, jsonl, tsv, csv, srt or markdown (from the extension)"


def progress_line(progress: BatchProgress) -> str:
    eta = "–" if progress.eta_s is None else f"{progress.eta_s:.0f} s"
    resumed = f" · {progress.resumed} from the journal" if progress.resumed else ""
    return f"{progress.done}/{progress.total} pieces · {progress.tokens_per_s:.1f} tok/s · ETA {eta}{resumed}"


def report_line(report: BatchReport) -> str:
    if not report.completed:
        return f"stopped after {report.resumed + report.translated}/{report.pieces} pieces; Start resumes"
    outputs = ", ".join(sorted({str(p) for p in report.outputs.values()}))
    return f"done: {report.pieces} pieces in {report.seconds:.1f} s → {outputs}"


class FileTranslation(Vertical):
    DEFAULT_CSS = """
    FileTranslation { padding: 1 1 0 1; }
    FileTranslation Input { margin: 0 0 1 0; }
    FileTranslation .row { height: auto; }
    FileTranslation .row Button { margin: 0 1 0 0; }
    FileTranslation .row Label { padding: 0 1 0 0; }
    FileTranslation #file-batch { width: 8; margin: 0 2 0 0; }
    FileTranslation ProgressBar { margin: 1 0 0 0; }
    FileTranslation #file-status { color: $text-muted; margin: 1 0 0 0; }
    """

    class Running(Message):
        def __init__(self, running: bool):
            super().__init__()
            self.running = running

    def __init__(self) -> None:
        super().__init__()
        self.source: Language | None = None
        self.targets: list[Language] = []
        self._cancel: threading.Event | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder=f"input file: {FORMATS_HINT}", id="file-input")
        yield Input(placeholder="output (optional): {lang} stands for the target code", id="file-output")
        with Horizontal(classes="row"):
            yield Label("Batch size")
            yield Input(str(DEFAULT_BATCH_SIZE), id="file-batch", type="integer", compact=True)
            yield Button("Start / resume", id="file-start", variant="primary", compact=True)
            yield Button("Stop", id="file-stop", compact=True, disabled=True)
            yield Checkbox(
                "start over", id="file-restart", compact=True, tooltip="Drop the journal and translate everything again"
            )
        yield ProgressBar(total=100, show_eta=False, id="file-progress")
        yield Label("Each run journals its progress; a stopped run resumes where it stopped.", id="file-status")

    def set_languages(self, source: Language | None, targets: list[Language]) -> None:
        self.source, self.targets = source, list(targets)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "file-start":
            self.start()
        elif event.button.id == "file-stop":
            self.stop()

    def start(self) -> None:
        path = self.query_one("#file-input", Input).value.strip()
        batch = self.query_one("#file-batch", Input).value.strip()
        if self._cancel is not None:
            self.notify("a file is being translated; Esc stops it", severity="warning")
        elif not path or not self.targets:
            self.notify("give an input file and at least one target language", severity="warning")
        elif not batch.isdigit() or int(batch) < 1:
            self.notify("the batch size is a whole number of at least 1", severity="warning")
        elif self.app.model_state != "ready":
            self.notify("wait for the model to load", severity="warning")
        else:
            options = BatchOptions(
                output=self.query_one("#file-output", Input).value.strip() or None,
                source=self.source,
                detect_source=self.source is None,
                restart=self.query_one("#file-restart", Checkbox).value,
                batch_size=int(batch),
            )
            self._set_running(threading.Event())
            self._run(Path(path).expanduser(), list(self.targets), options, self._cancel)

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.query_one("#file-status", Label).update("stopping after the current batch…")

    def _set_running(self, cancel: threading.Event | None) -> None:
        self._cancel = cancel
        start, stop = self.query_one("#file-start", Button), self.query_one("#file-stop", Button)
        start.disabled, stop.disabled = cancel is not None, cancel is None
        # Focus must stay in this tab: a disabled button hands focus on, maybe to the hidden Text tab.
        (stop if cancel is not None else start).focus()
        self.post_message(self.Running(cancel is not None))

    @work(thread=True, exclusive=True, group="translate-file")
    def _run(self, path: Path, targets: list[Language], options: BatchOptions, cancel: threading.Event) -> None:
        app = self.app
        try:
            with app.slot.use("translating a file", cancel) as model:
                report = translate_file(
                    model,
                    path,
                    targets,
                    options=options,
                    cancel=cancel,
                    progress=lambda progress: app.call_from_thread(self._show_progress, progress),
                )
        except Exception as error:
            app.call_from_thread(self._finished, None, describe(error))
            return
        app.call_from_thread(self._finished, report, None)

    def _show_progress(self, progress: BatchProgress) -> None:
        self.query_one(ProgressBar).update(total=max(1, progress.total), progress=progress.done)
        self.query_one("#file-status", Label).update(progress_line(progress))

    def _finished(self, report: BatchReport | None, error: str | None) -> None:
        self._set_running(None)
        if report is None:
            self.query_one("#file-status", Label).update(error or "failed")
            self.notify(error or "failed", title="file translation", severity="error", timeout=10)
            return
        self.query_one("#file-status", Label).update(report_line(report))
        if report.completed:
            self.notify(report_line(report), title="file translation", timeout=8)
