"""The translate screen's file mode: any registered format, with progress, memory hits, Esc to stop, resume.

The run is the CLI's: `prepare_batch` (input, format and outputs checked before the model is touched),
then `run_batch` with the translation memory on unless unticked. A stopped run keeps its journal beside
the output; starting the same file and targets again continues from it, unless "start over" is ticked.
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar, Select

from bayling_local.languages import Language
from bayling_local.translate.batch import (
    DEFAULT_BATCH_SIZE,
    BatchPlan,
    BatchProgress,
    BatchReport,
    prepare_batch,
    run_batch,
)
from bayling_local.tui.errors import describe
from bayling_local.tui.translation import (
    FROM_EXTENSION,
    FileRequest,
    format_choices,
    formats_hint,
    planned_outputs,
    progress_memory_line,
    report_memory_line,
)


def progress_line(progress: BatchProgress) -> str:
    eta = "–" if progress.eta_s is None else f"{progress.eta_s:.0f} s"
    resumed = f" · {progress.resumed} from the journal" if progress.resumed else ""
    return f"{progress.done}/{progress.total} pieces · {progress.tokens_per_s:.1f} tok/s · ETA {eta}{resumed}"


def report_line(report: BatchReport) -> str:
    if not report.completed:
        finished = report.resumed + report.tm_exact + report.translated
        return f"stopped after {finished}/{report.pieces} pieces; Start resumes"
    outputs = ", ".join(sorted({str(p) for p in report.outputs.values()}))
    flagged = f" · {len(report.flagged)} flagged for review" if report.flagged else ""
    return f"done: {report.pieces} pieces in {report.seconds:.1f} s{flagged} → {outputs}"


class FileTranslation(Vertical):
    DEFAULT_CSS = """
    FileTranslation { padding: 1 1 0 1; }
    FileTranslation Input { margin: 0 0 1 0; }
    FileTranslation .row { height: auto; }
    FileTranslation .row Button { margin: 0 1 0 0; }
    FileTranslation .row Label { padding: 0 1 0 0; }
    FileTranslation .row Checkbox { margin: 0 2 0 0; }
    FileTranslation #file-format { width: 28; margin: 0 2 0 0; }
    FileTranslation #file-batch { width: 8; margin: 0 2 0 0; }
    FileTranslation #file-plan { color: $text-muted; margin: 1 0 1 0; }
    FileTranslation ProgressBar { margin: 1 0 0 0; }
    FileTranslation #file-memory { margin: 1 0 0 0; }
    FileTranslation #file-status { color: $text-muted; }
    """

    class Running(Message):
        def __init__(self, running: bool):
            super().__init__()
            self.running = running

    def __init__(self) -> None:
        super().__init__()
        self.source: Language | None = None
        self.targets: list[Language] = []
        self.report: BatchReport | None = None
        """The last run's report (finished or stopped)."""
        self._cancel: threading.Event | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder=f"input file: {formats_hint()}", id="file-input")
        yield Input(
            placeholder="output (optional): {lang} is the target code; default INPUT.{lang}.EXT",
            id="file-output",
        )
        with Horizontal(classes="row"):
            yield Label("Format")
            yield Select(format_choices(), value=FROM_EXTENSION, allow_blank=False, compact=True, id="file-format")
            yield Checkbox(
                "translation memory",
                value=True,
                id="file-tm",
                compact=True,
                tooltip="Reuse earlier translations of the same text without the model, and remember this run's",
            )
            yield Checkbox(
                "start over", id="file-restart", compact=True, tooltip="Drop the journal and translate everything again"
            )
        yield Label("", id="file-plan")
        with Horizontal(classes="row"):
            yield Label("Batch size")
            yield Input(str(DEFAULT_BATCH_SIZE), id="file-batch", type="integer", compact=True)
            yield Button("Start / resume", id="file-start", variant="primary", compact=True)
            yield Button("Stop", id="file-stop", compact=True, disabled=True)
        yield ProgressBar(total=100, show_eta=False, id="file-progress")
        yield Label("", id="file-memory")
        yield Label("Each run journals its progress; a stopped run resumes where it stopped.", id="file-status")

    def set_languages(self, source: Language | None, targets: list[Language]) -> None:
        self.source, self.targets = source, list(targets)
        self._show_plan()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in ("file-input", "file-output"):
            self._show_plan()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._show_plan()

    def _show_plan(self) -> None:
        """Which files a run would write, updated as the form changes, so multi-target naming shows up front."""
        request = self._request()
        plan = planned_outputs(request, self.targets) if request is not None else ""
        self.query_one("#file-plan", Label).update(plan)

    def _request(self) -> FileRequest | None:
        path = self.query_one("#file-input", Input).value.strip()
        batch = self.query_one("#file-batch", Input).value.strip()
        if not path:
            return None
        return FileRequest(
            input=Path(path).expanduser(),
            output=self.query_one("#file-output", Input).value.strip() or None,
            format=str(self.query_one("#file-format", Select).value),
            source=self.source,
            batch_size=int(batch) if batch.isdigit() else 0,
            restart=self.query_one("#file-restart", Checkbox).value,
            memory=self.query_one("#file-tm", Checkbox).value,
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "file-start":
            self.start()
        elif event.button.id == "file-stop":
            self.stop()

    def start(self) -> None:
        request = self._request()
        if self._cancel is not None:
            self.notify("a file is being translated; Esc stops it", severity="warning")
        elif request is None or not self.targets:
            self.notify("give an input file and at least one target language", severity="warning")
        elif request.batch_size < 1:
            self.notify("the batch size is a whole number of at least 1", severity="warning")
        elif self.app.model_state != "ready":
            self.notify("wait for the model to load", severity="warning")
        else:
            self._set_running(threading.Event())
            self._run(request, list(self.targets), self._cancel)

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
    def _run(self, request: FileRequest, targets: list[Language], cancel: threading.Event) -> None:
        app = self.app
        try:
            plan = prepare_batch(request.input, targets, request.options())  # bad input fails here, as in the CLI
            app.call_from_thread(self._show_started, plan)
            with app.slot.use("translating a file", cancel) as model:
                report = run_batch(
                    model,
                    plan,
                    cancel=cancel,
                    progress=lambda progress: app.call_from_thread(self._show_progress, progress),
                )
        except Exception as error:
            app.call_from_thread(self._finished, None, describe(error))
            return
        app.call_from_thread(self._finished, report, None)

    def _show_started(self, plan: BatchPlan) -> None:
        outputs = ", ".join(sorted({str(p) for p in plan.outputs.values()}))
        self.query_one("#file-plan", Label).update(f"{plan.file_format.name} → {outputs}")
        memory = "looking up the translation memory…" if plan.options.memory else "memory: off"
        self.query_one("#file-memory", Label).update(memory)

    def _show_progress(self, progress: BatchProgress) -> None:
        self.query_one(ProgressBar).update(total=max(1, progress.total), progress=progress.done)
        self.query_one("#file-memory", Label).update(progress_memory_line(progress))
        self.query_one("#file-status", Label).update(progress_line(progress))

    def _finished(self, report: BatchReport | None, error: str | None) -> None:
        self._set_running(None)
        if report is None:
            self.query_one("#file-status", Label).update(error or "failed")
            self.notify(error or "failed", title="file translation", severity="error", timeout=10)
            return
        self.report = report
        self.query_one("#file-memory", Label).update(report_memory_line(report))
        self.query_one("#file-status", Label).update(report_line(report))
        if report.completed:
            self.notify(f"{report_line(report)}\n{report_memory_line(report)}", title="file translation", timeout=8)
