"""One target language's translation, filled line by line as the pieces stream in."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Label, Static

from bayling_local.languages import Language


class TranslationOutput(Vertical, can_focus=True):
    DEFAULT_CSS = """
    TranslationOutput { height: auto; padding: 0 1; margin: 0 0 1 0; }
    TranslationOutput .language { color: $text-muted; text-style: bold; }
    TranslationOutput:focus { background: $accent 15%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "copy", "Copy")]

    def __init__(self, target: Language):
        super().__init__(id=f"out-{target.code}")
        self.target = target
        self.lines: list[str] = []
        self.current = ""

    def compose(self) -> ComposeResult:
        yield Label(f"{self.target.english_name} ({self.target.code})", classes="language")
        yield Static("", classes="text", markup=False)

    @property
    def text(self) -> str:
        return "\n".join(self.lines + ([self.current] if self.current else []))

    def clear(self) -> None:
        self.lines, self.current = [], ""
        self._show()

    def add_piece(self, piece: str) -> None:
        self.current += piece
        self._show()

    def end_line(self, line: str) -> None:
        """The finished line replaces what streamed (the finished one is cleaned to one line)."""
        self.lines.append(line)
        self.current = ""
        self._show()

    def _show(self) -> None:
        self.query_one(".text", Static).update(self.text)

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.notify(f"copied the {self.target.english_name} translation", timeout=2)
