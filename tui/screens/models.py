"""Models: the store's entries, import of a file or folder and conversion of a checkpoint (both with
progress), and which model is loaded."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, Label, ProgressBar, Static

from bayling_local.store import StoredModel, import_model, list_models
from bayling_local.tui.errors import describe
from bayling_local.tui.widgets.top_bar import TopBar
from bayling_local.units import human_size

COLUMNS = ("name", "format", "quant", "size", "context", "languages", "source")
CONVERT_HINT = "quant: q4_k_m, q8_0, f16 … (GGUF, into the store) or onnx:int4|int8|fp16|fp32"


class ConversionCancelled(Exception):
    """Raised from the converter's progress callback when the user stops a conversion."""


class ModelsScreen(Screen):
    DEFAULT_CSS = """
    ModelsScreen #hint { height: 1; padding: 0 1; color: $text-muted; }
    ModelsScreen DataTable { height: 1fr; }
    ModelsScreen .form { height: auto; border-top: hkey $foreground 20%; padding: 0 1; }
    ModelsScreen .row { height: auto; }
    ModelsScreen #import-path { width: 1fr; }
    ModelsScreen #import-name { width: 22; }
    ModelsScreen Checkbox { width: auto; }
    ModelsScreen ProgressBar { width: 1fr; display: none; }
    ModelsScreen #convert-hint { color: $text-muted; width: 1fr; padding: 0 1; }
    ModelsScreen #convert-hint.running { display: none; }
    ModelsScreen ProgressBar.running { display: block; }
    ModelsScreen #convert-source { width: 1fr; }
    ModelsScreen #convert-quant { width: 22; }
    ModelsScreen Button { margin: 0 0 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+o", "focus_import", "Import"),
        Binding("ctrl+l", "use_model", "Load"),
        Binding("ctrl+r", "refresh_table", "Refresh"),
        Binding("escape", "stop_conversion", "Stop conversion", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sub_title = "Models"
        self.models: list[StoredModel] = []
        self._cancel_conversion = threading.Event()

    def compose(self) -> ComposeResult:
        yield TopBar("models")
        yield Static("Enter (or ctrl+l) loads the highlighted model for chat and translate.", id="hint")
        yield DataTable(cursor_type="row", zebra_stripes=True)
        with Vertical(classes="form"):
            with Horizontal(classes="row"):
                yield Input(placeholder="GGUF file or HF checkpoint folder to import", id="import-path")
                yield Input(placeholder="name (optional)", id="import-name")
            with Horizontal(classes="row"):
                yield Checkbox("link, don't copy", id="import-link", compact=True)
                yield ProgressBar(total=None, show_eta=False, id="import-progress")
                yield Button("Import", id="import", variant="primary", compact=True)
            with Horizontal(classes="row"):
                yield Input(placeholder="HF checkpoint folder (or hf store name) to convert", id="convert-source")
                yield Input(value="q8_0", placeholder="quant", id="convert-quant", tooltip=CONVERT_HINT)
            with Horizontal(classes="row"):
                yield Label(CONVERT_HINT, id="convert-hint")
                yield ProgressBar(total=None, show_eta=False, id="convert-progress")
                yield Button("Convert", id="convert", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        self.action_refresh_table()
        table.focus()

    def action_refresh_table(self) -> None:
        self.models = list_models()
        table = self.query_one(DataTable)
        table.clear()
        for model in self.models:
            table.add_row(*_row(model), key=model.name)

    def action_focus_import(self) -> None:
        self.query_one("#import-path").focus()

    def action_use_model(self) -> None:
        table = self.query_one(DataTable)
        if self.models and table.cursor_row is not None:
            self.app.switch_model(self.models[table.cursor_row].name)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.switch_model(str(event.row_key.value))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "import":
            self._start_import()
        elif event.button.id == "convert":
            self._start_conversion()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("import-path", "import-name"):
            self._start_import()
        elif event.input.id in ("convert-source", "convert-quant"):
            self._start_conversion()

    def _start_import(self) -> None:
        path = self.query_one("#import-path", Input).value.strip()
        if not path:
            self.notify("type the path of a GGUF file or a checkpoint folder first", severity="warning")
            return
        name = self.query_one("#import-name", Input).value.strip() or None
        self.query_one("#import", Button).disabled = True
        self.query_one(ProgressBar).add_class("running")
        self._import(path, name, self.query_one("#import-link", Checkbox).value)

    @work(thread=True, exclusive=True, group="import")
    def _import(self, path: str, name: str | None, link: bool) -> None:
        bar = self.query_one("#import-progress", ProgressBar)

        def progress(done: int, total: int) -> None:
            self.app.call_from_thread(bar.update, total=total, progress=done)

        try:
            model = import_model(path, name=name, link=link, progress=progress)
        except Exception as error:
            self.app.call_from_thread(self._import_done, None, describe(error))
            return
        self.app.call_from_thread(self._import_done, model, None)

    def _import_done(self, model: StoredModel | None, error: str | None) -> None:
        self.query_one("#import", Button).disabled = False
        self.query_one(ProgressBar).remove_class("running")
        if model is None:
            self.notify(error or "import failed", title="import", severity="error", timeout=10)
            return
        self.query_one("#import-path", Input).value = ""
        self.query_one("#import-name", Input).value = ""
        self.action_refresh_table()
        self.notify(f"imported {model.name} ({model.manifest.format}, {human_size(model.manifest.size)})")

    # --- conversion ---------------------------------------------------------------------------

    def _start_conversion(self) -> None:
        source = self.query_one("#convert-source", Input).value.strip()
        quant = self.query_one("#convert-quant", Input).value.strip().lower()
        if not source or not quant:
            self.notify("type a checkpoint folder and a quant first", severity="warning")
            return
        self._cancel_conversion.clear()
        self._set_converting(True)
        self._convert(source, quant)

    def _set_converting(self, running: bool) -> None:
        self.query_one("#convert", Button).disabled = running
        self.query_one("#convert-progress", ProgressBar).set_class(running, "running")
        self.query_one("#convert-hint", Label).set_class(running, "running")

    def action_stop_conversion(self) -> None:
        self._cancel_conversion.set()

    @work(thread=True, exclusive=True, group="convert")
    def _convert(self, source: str, quant: str) -> None:
        bar = self.query_one("#convert-progress", ProgressBar)

        def progress(stage: str, done: int, total: int) -> None:
            if self._cancel_conversion.is_set():
                raise ConversionCancelled
            self.app.call_from_thread(bar.update, total=max(total, 1), progress=done)

        try:
            message = _run_conversion(source, quant, progress)
        except ConversionCancelled:
            message, error = None, "conversion stopped; nothing was written"
        except Exception as failure:
            message, error = None, describe(failure)
        else:
            error = None
        self.app.call_from_thread(self._conversion_done, message, error)

    def _conversion_done(self, message: str | None, error: str | None) -> None:
        self._set_converting(False)
        if message is None:
            self.notify(error or "conversion failed", title="convert", severity="error", timeout=10)
            return
        self.action_refresh_table()
        self.notify(message, title="convert")

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Import a model", "Copy a GGUF file or checkpoint folder into the store", self.action_focus_import
        )
        yield SystemCommand(
            "Load the highlighted model", "Make it the model chat, translate and bench use", self.action_use_model
        )
        yield SystemCommand("Refresh the model list", "Read the store again", self.action_refresh_table)
        yield SystemCommand(
            "Convert a checkpoint", "HF checkpoint to a GGUF quant or an ONNX precision", self._focus_convert
        )

    def _focus_convert(self) -> None:
        self.query_one("#convert-source").focus()


def _run_conversion(source: str, quant: str, progress) -> str:
    """Convert with the library the CLI uses; returns the line to show when it is done."""
    from bayling_local.convert import to_gguf
    from bayling_local.convert.onnx_store import to_onnx_entry

    if quant.startswith("onnx:"):
        progress("onnx", 0, 1)  # ONNX export has no progress of its own; this is the cancel point
        model = to_onnx_entry(source, quant.removeprefix("onnx:"))
        return f"converted to {model.name} (ONNX {model.manifest.quant}, {human_size(model.manifest.size)})"
    result = to_gguf(source, quant, progress=progress)
    return f"converted to {result.store_name or result.path} ({result.quant}, {human_size(result.size)})"


def _row(model: StoredModel) -> tuple[str, ...]:
    m = model.manifest
    context = f"{m.context_length:,}" if m.context_length else "?"
    source = (
        "bundled"
        if model.bundled
        else ("linked" if model.path.is_absolute() and m.artifact.startswith("/") else "store")
    )
    return (m.name, m.format, m.quant, human_size(m.size), context, m.languages or "?", source)
