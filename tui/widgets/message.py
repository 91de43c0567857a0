"""One chat message: a role line and its body, streamable as Markdown while the answer arrives.

An answer being written uses Textual's Markdown widget (with its MarkdownStream); messages read back
from history use one Static with Rich's Markdown renderer, a single widget instead of a widget per
block, so a long conversation mounts and scrolls quickly. What the person typed is shown verbatim.
"""

from __future__ import annotations

from typing import ClassVar

from rich.markdown import Markdown as RichMarkdown
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Label, Markdown, Static
from textual.widgets.markdown import MarkdownStream


class MessageView(Vertical, can_focus=True):
    DEFAULT_CSS = """
    MessageView { height: auto; padding: 0 1; margin: 0 0 1 0; }
    MessageView .role { color: $text-muted; text-style: bold; }
    MessageView.user { background: $boost; }
    MessageView:focus { background: $accent 15%; }
    MessageView Markdown { margin: 0; padding: 0; background: transparent; }
    MessageView Markdown > *:last-child { margin-bottom: 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "copy", "Copy")]

    def __init__(self, role: str, content: str = "", *, model: str | None = None, live: bool = False):
        """`live`: the answer will stream in (Textual's Markdown); otherwise a finished message."""
        super().__init__(classes=role)
        self.role = role
        self.text = content
        self.model_name = model
        self.live = live
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Label(self.role_line, classes="role")
        if self.live:
            yield Markdown(self.text)
        elif self.role == "user":
            yield Static(self.text, markup=False, classes="body")
        else:
            yield Static(RichMarkdown(self.text, code_theme=self._code_theme()), classes="body")

    def _code_theme(self) -> str:
        return "monokai" if self.app.current_theme.dark else "default"

    @property
    def role_line(self) -> str:
        return "You" if self.role == "user" else f"Assistant · {self.model_name or 'model'}"

    async def append(self, piece: str) -> None:
        """Add streamed text; the Markdown stream batches pieces that arrive faster than it renders."""
        if self._stream is None:
            self._stream = Markdown.get_stream(self.query_one(Markdown))
        self.text += piece
        await self._stream.write(piece)

    async def finish(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.notify(f"copied {len(self.text)} characters", timeout=2)
