"""The line at the top of every screen: the four screens (F1-F4, clickable) and the loaded model."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from bayling_local.tui.widgets.model_badge import ModelBadge

SCREENS = (
    ("chat", "F1", "Chat"),
    ("translate", "F2", "Translate"),
    ("bench", "F3", "Bench"),
    ("models", "F4", "Models"),
)


def tabs_markup(current: str) -> str:
    tabs = [
        f"[reverse] {key} {label} [/]" if mode == current else f"[@click=app.switch_mode('{mode}')] {key} {label} [/]"
        for mode, key, label in SCREENS
    ]
    return "".join(tabs)


class TopBar(Horizontal):
    DEFAULT_CSS = """
    TopBar { height: 1; background: $panel; }
    TopBar #screens { width: 1fr; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, current: str):
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        yield Static(tabs_markup(self.current), id="screens")
        yield ModelBadge()
