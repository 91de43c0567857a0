"""Pick one thing from a searchable list: a model from the store, a language from the 204."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from bayling_local.languages import LANGUAGES, Language, search
from bayling_local.store import StoredModel
from bayling_local.tui.screens.dialogs import DIALOG_CSS

ANY_LANGUAGE = ""
"""What the language picker returns for "any source language"."""


class ModelPicker(ModalScreen[str | None]):
    """The store's models; dismissed with the chosen name."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ModelPicker") + "ModelPicker OptionList { max-height: 16; }"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, models: Sequence[StoredModel], current: str | None):
        super().__init__()
        self.models, self.current = models, current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Load a model (one is loaded at a time)", classes="title")
            yield OptionList(*(Option(self._label(m), id=m.name) for m in self.models))

    def _label(self, model: StoredModel) -> str:
        mark = "● " if model.name == self.current else "  "
        return f"{mark}{model.name}  [dim]{model.manifest.format} {model.manifest.quant}[/dim]"

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


def language_label(lang: Language) -> str:
    native = f" · {lang.native_name}" if lang.native_name != lang.english_name else ""
    return f"{lang.english_name}{native}  [dim]{lang.code}[/dim]"


class LanguagePicker(ModalScreen[str | None]):
    """Type a code, an English or a native name; dismissed with the FLORES-200 code chosen."""

    DEFAULT_CSS = DIALOG_CSS.format(name="LanguagePicker") + "LanguagePicker OptionList { height: 12; }"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("down", "focus_list", show=False),
    ]

    def __init__(self, title: str, *, allow_any: bool = False):
        super().__init__()
        self.title_text, self.allow_any = title, allow_any

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title")
            yield Input(placeholder="code, English or native name: sw, Swahili, Kiswahili")
            yield OptionList()

    def on_mount(self) -> None:
        self._show("")

    def on_input_changed(self, event: Input.Changed) -> None:
        self._show(event.value)

    def on_input_submitted(self) -> None:
        options = self.query_one(OptionList)
        if options.option_count:
            self.dismiss(options.get_option_at_index(options.highlighted or 0).id)

    def action_focus_list(self) -> None:
        self.query_one(OptionList).focus()

    def _show(self, query: str) -> None:
        matches = search(query) if query.strip() else list(LANGUAGES)
        options = [Option(language_label(lang), id=lang.code) for lang in matches]
        if self.allow_any and not query.strip():
            options.insert(0, Option("Any language (not given to the model)", id=ANY_LANGUAGE))
        option_list = self.query_one(OptionList)
        option_list.clear_options()
        option_list.add_options(options)
        option_list.highlighted = 0 if options else None

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
