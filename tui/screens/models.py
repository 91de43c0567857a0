"""Models: the store's entries, import of a file or folder with progress, and which model is loaded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, Label, ProgressBar, Static

from bayling_local.cli.output import human_size
from bayling_local.store import StoredModel, import_model, list_models
from bayling_local.tui.errors import describe
from bayling_local.tui.widgets.top_bar import TopBar

COLUMNS = ("name", "format", "quant", "size", "context", "languages", "source")
CONVERT_NOTE = "Conversion (GGUF quant / ONNX precision) arrives with `bayling-local convert`."


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
    ModelsScreen ProgressBar.running { display: block; }
    ModelsScreen #convert-note { color: $text-muted; width: 1fr; padding: 0 1; }
    ModelsScreen Button { margin: 0 0 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+o", "focus_import", "Import"),
        Binding("ctrl+l", "use_model", "Load"),
        Binding("ctrl+r", "refresh_table", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sub_title = "Models"
        self.models: list[StoredModel] = []

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
                yield Button("Convert…", id="convert", disabled=True, compact=True)
                yield Label(CONVERT_NOTE, id="convert-note")
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

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("import-path", "import-name"):
            self._start_import()

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

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Import a model", "Copy a GGUF file or checkpoint folder into the store", self.action_focus_import
        )
        yield SystemCommand(
            "Load the highlighted model", "Make it the model chat, translate and bench use", self.action_use_model
        )
        yield SystemCommand("Refresh the model list", "Read the store again", self.action_refresh_table)


def _row(model: StoredModel) -> tuple[str, ...]:
    m = model.manifest
    context = f"{m.context_length:,}" if m.context_length else "?"
    source = (
        "bundled"
        if model.bundled
        else ("linked" if model.path.is_absolute() and m.artifact.startswith("/") else "store")
    )
    return (m.name, m.format, m.quant, human_size(m.size), context, m.languages or "?", source)
