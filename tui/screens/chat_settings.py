"""A conversation's settings: system prompt, temperature and answer length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, TextArea

from bayling_local.backends.base import GenerationConfig
from bayling_local.tui.screens.dialogs import DIALOG_CSS


@dataclass(frozen=True)
class ChatSettings:
    system: str | None = None
    """Replaces the chat format's default system text when set."""
    temperature: float = 0.7
    max_tokens: int = 512

    def config(self) -> GenerationConfig:
        return GenerationConfig(max_tokens=self.max_tokens, temperature=self.temperature)


def parse_settings(system: str, temperature: str, max_tokens: str) -> ChatSettings:
    """Settings from the dialog's fields; ValueError names the field that is wrong."""
    try:
        temperature_value = float(temperature)
    except ValueError:
        raise ValueError("temperature must be a number such as 0.7 (0 is greedy)") from None
    if not 0 <= temperature_value <= 5:
        raise ValueError("temperature must be between 0 and 5")
    if not max_tokens.strip().isdigit() or int(max_tokens) < 1:
        raise ValueError("max tokens must be a whole number of at least 1")
    return ChatSettings(system.strip() or None, temperature_value, int(max_tokens))


class ChatSettingsDialog(ModalScreen[ChatSettings | None]):
    DEFAULT_CSS = (
        DIALOG_CSS.format(name="ChatSettingsDialog")
        + """
    ChatSettingsDialog TextArea { height: 6; }
    ChatSettingsDialog .row { height: auto; }
    ChatSettingsDialog .row Label { width: 14; padding: 1 0 0 0; }
    ChatSettingsDialog .row Input { width: 1fr; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, settings: ChatSettings):
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Conversation settings", classes="title")
            yield Label("System prompt (empty: the model's default)")
            yield TextArea(self.settings.system or "", id="system")
            with Horizontal(classes="row"):
                yield Label("Temperature")
                yield Input(str(self.settings.temperature), id="temperature")
            with Horizontal(classes="row"):
                yield Label("Max tokens")
                yield Input(str(self.settings.max_tokens), id="max-tokens", type="integer")
            yield Label("", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Save", id="save", variant="primary", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self._save()
        else:
            self.dismiss(None)

    def on_input_submitted(self) -> None:
        self._save()

    def _save(self) -> None:
        try:
            settings = parse_settings(
                self.query_one("#system", TextArea).text,
                self.query_one("#temperature", Input).value,
                self.query_one("#max-tokens", Input).value,
            )
        except ValueError as error:
            self.query_one(".error", Label).update(str(error))
            return
        self.dismiss(settings)
