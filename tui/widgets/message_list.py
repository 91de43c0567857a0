"""The scrolling list of a conversation's messages, rendered a window at a time.

Markdown widgets are costly to mount, so a long conversation opens on its last `WINDOW` messages and
earlier ones are mounted on request; scrolling stays smooth at any length.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.containers import VerticalScroll
from textual.widgets import Button

from bayling_local.tui.history import StoredMessage
from bayling_local.tui.widgets.message import MessageView

WINDOW = 40


class MessageList(VerticalScroll):
    DEFAULT_CSS = """
    MessageList { height: 1fr; }
    MessageList #earlier { width: 100%; margin: 0 0 1 0; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._messages: list[StoredMessage] = []
        self._shown = 0

    @property
    def hidden_count(self) -> int:
        return len(self._messages) - self._shown

    async def show(self, messages: Sequence[StoredMessage]) -> None:
        """Replace the list with `messages`, showing the last window and scrolled to the end."""
        await self.remove_children()
        self._messages, self._shown = list(messages), min(WINDOW, len(messages))
        views = [_view(m) for m in self._messages[len(self._messages) - self._shown :]]
        await self.mount_all([*self._earlier_button(), *views])
        self.scroll_end(animate=False, immediate=True)
        self.anchor()

    async def show_earlier(self) -> None:
        """Mount the previous window above the first shown message, keeping the view where it was."""
        if not self.hidden_count:
            return
        end = self.hidden_count
        start = max(0, end - WINDOW)
        views = [_view(m) for m in self._messages[start:end]]
        first_shown = self.query(MessageView).first()
        await self.mount_all(views, before=first_shown)
        self._shown += len(views)
        await self._refresh_earlier_button()
        self.call_after_refresh(self.scroll_to_widget, first_shown, top=True, animate=False)

    async def add(self, view: MessageView) -> None:
        await self.mount(view)
        self.anchor()

    async def _refresh_earlier_button(self) -> None:
        await self.query("#earlier").remove()
        buttons = self._earlier_button()
        if buttons:
            await self.mount(buttons[0], before=0)

    def _earlier_button(self) -> list[Button]:
        hidden = self.hidden_count
        if not hidden:
            return []
        return [Button(f"▲ {min(WINDOW, hidden)} earlier of {hidden} hidden messages", id="earlier", compact=True)]

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "earlier":
            event.stop()
            await self.show_earlier()


def _view(message: StoredMessage) -> MessageView:
    return MessageView(message.role, message.content, model=message.model)
