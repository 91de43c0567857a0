"""Bench: choose models and a benchmark, run it with progress, then read the table and chart of
`results.jsonl` (this run and every earlier one)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Button, Footer, Label, ProgressBar, SelectionList, TabbedContent, TabPane

from bayling_local.bench.jobs import BenchmarkCancelled, ProgressEvent
from bayling_local.bench.results import read_records
from bayling_local.errors import BaylingError
from bayling_local.store import list_models
from bayling_local.tui.bench_runs import BenchRequest, check_request, run_request
from bayling_local.tui.errors import describe
from bayling_local.tui.widgets.bench_form import BenchForm
from bayling_local.tui.widgets.results_view import ResultsView
from bayling_local.tui.widgets.top_bar import TopBar

DATA_SETTING = "bench.data"
DATA_ENV = "BAYLING_SHARED_DATA"  # the variable `bayling-local bench --data` reads too


class BenchScreen(Screen):
    DEFAULT_CSS = """
    BenchScreen #bench-tabs { height: 1fr; }
    BenchScreen TabPane { height: 1fr; padding: 0; }
    BenchScreen #models-column { width: 28; border-right: vkey $foreground 20%; }
    BenchScreen .heading { text-style: bold; color: $text-muted; padding: 0 1; }
    BenchScreen SelectionList { height: 1fr; border: none; }
    BenchScreen #setup { padding: 0 1; }
    BenchScreen .buttons { height: 1; }
    BenchScreen .buttons Button { margin: 0 1 0 0; }
    BenchScreen ProgressBar { margin: 1 0 0 0; }
    BenchScreen #bench-status { color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run", "Run"),
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+l", "show_results", "Results"),
    ]
    running = reactive(False, bindings=True)

    def __init__(self) -> None:
        super().__init__()
        self.sub_title = "Bench"
        self._cancel: threading.Event | None = None

    def compose(self) -> ComposeResult:
        yield TopBar("bench")
        with TabbedContent(id="bench-tabs"):
            with TabPane("Run", id="run-tab"), Horizontal():
                with Vertical(id="models-column"):
                    yield Label("Models", classes="heading")
                    yield SelectionList[str](id="bench-models")
                with VerticalScroll(id="setup"):
                    yield BenchForm()
                    with Horizontal(classes="buttons"):
                        yield Button("Run", id="bench-run", variant="primary", compact=True)
                        yield Button("Stop", id="bench-stop", compact=True, disabled=True)
                    yield ProgressBar(total=100, show_eta=False)
                    yield Label("Results go to $BAYLING_HOME/results.jsonl", id="bench-status")
            with TabPane("Results", id="results-tab"):
                yield ResultsView()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        current = self.app.slot.name or self.app.model_label
        models = self.query_one("#bench-models", SelectionList)
        models.add_options([(m.name, m.name, m.name == current) for m in list_models()])
        self.query_one(BenchForm).set_data(self.app.history.setting(DATA_SETTING) or os.environ.get(DATA_ENV, ""))
        self.refresh_results()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        return self.running if action == "stop" else True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "bench-run":
            self.action_run()
        elif event.button.id == "bench-stop":
            self.action_stop()

    # --- running ------------------------------------------------------------------------------

    def action_run(self) -> None:
        if self.running:
            self.notify("a benchmark is running; Esc stops it", severity="warning")
            return
        try:
            models = tuple(self.query_one("#bench-models", SelectionList).selected)
            request = check_request(self.query_one(BenchForm).request(models))
        except (ValueError, BaylingError) as error:  # a wrong field, or data that lacks what was asked
            self.notify(str(error), severity="warning", timeout=8)
            return
        if request.data:
            self.app.history.set_setting(DATA_SETTING, request.data)
        self._set_running(threading.Event())
        self._run(request, self._cancel)

    def _set_running(self, cancel: threading.Event | None) -> None:
        self._cancel, self.running = cancel, cancel is not None
        self.query_one("#bench-run", Button).disabled = self.running
        self.query_one("#bench-stop", Button).disabled = not self.running

    @work(thread=True, exclusive=True, group="bench")
    def _run(self, request: BenchRequest, cancel: threading.Event) -> None:
        app, message = self.app, None
        try:
            with app.slot.exclusive("running a benchmark", cancel) as load:
                previous = app.slot.name
                records = run_request(
                    request,
                    load,
                    app.slot.options.threads,
                    self._progress_from_thread,
                    cancel,
                    on_loaded=lambda name: app.call_from_thread(app.model_swapped, name),
                )
                message = f"{request.kind} benchmark done: {len(records)} model(s) measured"
                if previous and app.slot.name != previous:  # give the other screens their model back
                    app.call_from_thread(app.model_swapped, load(previous).name)
        except BenchmarkCancelled:
            message = "benchmark stopped; the models that finished are in the results"
        except Exception as error:
            app.call_from_thread(self.notify, describe(error), title="bench", severity="error", timeout=10)
        app.call_from_thread(self._finished, request.kind, message)

    def _progress_from_thread(self, event: ProgressEvent) -> None:
        self.app.call_from_thread(self._show_progress, event)

    def _show_progress(self, event: ProgressEvent) -> None:
        self.query_one(ProgressBar).update(total=event.total or None, progress=event.done)
        self.query_one("#bench-status", Label).update(f"{event.stage}: {event.done}/{event.total or '?'}")

    def _finished(self, kind: str, message: str | None) -> None:
        self._set_running(None)
        self.app.sync_model_state()
        self.query_one("#bench-status", Label).update(message or "the benchmark failed")
        if message:
            self.notify(message, title="bench", timeout=5)
        self.refresh_results(kind)
        self.action_show_results()

    def action_stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.query_one("#bench-status", Label).update("stopping…")

    # --- results ------------------------------------------------------------------------------

    def refresh_results(self, kind: str | None = None) -> None:
        loaded = read_records()
        self.query_one(ResultsView).show(loaded.records, loaded.bad_lines, kind)

    def action_show_results(self) -> None:
        self.query_one(TabbedContent).active = "results-tab"

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Run benchmark", "Run the chosen benchmark on the ticked models (ctrl+r)", self.action_run)
        yield SystemCommand("Benchmark results", "Show results.jsonl as a table and chart", self.action_show_results)
        yield SystemCommand("Reload benchmark results", "Read results.jsonl again", self.refresh_results)
