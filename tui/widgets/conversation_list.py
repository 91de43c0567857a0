"""The chat sidebar: saved conversations, newest first, with keys to rename, delete and export."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from bayling_local.tui.history import Conversation


class ConversationList(OptionList):
    DEFAULT_CSS = """
    ConversationList { height: 1fr; border: none; padding: 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "act('rename')", "Rename"),
        Binding("d", "act('delete')", "Delete"),
        Binding("e", "act('export-md')", "Export md"),
        Binding("j", "act('export-json')", "Export json"),
    ]

    class Action(Message):
        """The person asked to act on the highlighted conversation."""

        def __init__(self, action: str, conversation_id: int):
            super().__init__()
            self.action = action
            self.conversation_id = conversation_id

    def show(self, conversations: Sequence[Conversation], current: int | None) -> None:
        """List `conversations`, keeping the highlight where it was (else on `current`)."""
        keep = self.highlighted_id
        self.clear_options()
        self.add_options([Option(c.title, id=str(c.id)) for c in conversations])
        for wanted in (keep, current):
            if wanted is not None and str(wanted) in {c_id for c_id in (str(c.id) for c in conversations)}:
                self.highlight_conversation(wanted)
                break

    def highlight_conversation(self, conversation_id: int) -> None:
        try:
            self.highlighted = self.get_option_index(str(conversation_id))
        except OptionDoesNotExist:  # the conversation is not saved yet
            self.highlighted = None

    @property
    def highlighted_id(self) -> int | None:
        option = self.highlighted_option
        return int(option.id) if option is not None and option.id else None

    def action_act(self, action: str) -> None:
        if self.highlighted_id is not None:
            self.post_message(self.Action(action, self.highlighted_id))
