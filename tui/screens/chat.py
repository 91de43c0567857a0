"""Chat: streamed Markdown answers, saved conversations in a sidebar, Esc to stop an answer."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static

from bayling_local.backends.base import Completion
from bayling_local.chat import ChatSession
from bayling_local.store import list_models
from bayling_local.tui.errors import describe
from bayling_local.tui.history import Conversation, title_from
from bayling_local.tui.screens.chat_settings import ChatSettings, ChatSettingsDialog
from bayling_local.tui.screens.dialogs import Confirm, TextPrompt
from bayling_local.tui.screens.pickers import ModelPicker
from bayling_local.tui.widgets.conversation_list import ConversationList
from bayling_local.tui.widgets.message import MessageView
from bayling_local.tui.widgets.message_list import MessageList
from bayling_local.tui.widgets.top_bar import TopBar


class ChatScreen(Screen):
    DEFAULT_CSS = """
    ChatScreen #sidebar { width: 24; border-right: vkey $foreground 20%; }
    ChatScreen #sidebar .heading { text-style: bold; padding: 0 1; color: $text-muted; }
    ChatScreen #conversation-info { height: 1; padding: 0 1; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis; }
    ChatScreen #sidebar ConversationList { background: transparent; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+n", "new", "New"),
        Binding("ctrl+o", "pick_model", "Model"),
        Binding("ctrl+s", "settings", "Settings"),
        Binding("ctrl+b", "focus_sidebar", "Chats"),
    ]
    answering = reactive(False, bindings=True)

    def __init__(self) -> None:
        super().__init__()
        self.sub_title = "Chat"
        self.conversation: Conversation | None = None
        self.settings = ChatSettings()
        self.session: ChatSession | None = None
        self._cancel: threading.Event | None = None

    def compose(self) -> ComposeResult:
        yield TopBar("chat")
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Label("Conversations", classes="heading")
                yield ConversationList()
            with Vertical():
                yield Static(id="conversation-info")
                yield MessageList()
                yield Input(id="prompt", placeholder="Message (Enter sends, Esc stops the answer)")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.settings = self.app.chat_defaults
        self._refresh_sidebar()
        self._show_info()
        self.query_one("#prompt").focus()

    @property
    def history(self):
        return self.app.history

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        return self.answering if action == "stop" else True

    # --- sending and streaming ----------------------------------------------------------------

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or not self._ready_to_answer():
            return
        event.input.value = ""
        user_view, reply_view = MessageView("user", text), MessageView("assistant", model=self.app.slot.name, live=True)
        messages = self.query_one(MessageList)
        await messages.add(user_view)
        await messages.add(reply_view)
        self._cancel = threading.Event()
        self.answering = True
        self._answer(self._session(), text, self._cancel, user_view, reply_view)

    def _ready_to_answer(self) -> bool:
        if self.answering:
            self.notify("an answer is still being written; press Esc to stop it", severity="warning")
            return False
        if self.app.model_state != "ready":
            waiting = "the model is still loading" if self.app.model_state == "loading" else "no model is loaded"
            self.notify(f"{waiting}; press ctrl+o to choose one", severity="warning")
            return False
        return True

    def _session(self) -> ChatSession:
        """The session for this conversation and the loaded model (rebuilt when either changed)."""
        model = self.app.slot.model
        if self.session is None or self.session.model is not model:
            turns = [m.as_message() for m in self.history.messages(self.conversation.id)] if self.conversation else []
            self.session = ChatSession(model, self.settings.config(), system=self.settings.system, turns=turns)
        return self.session

    @work(thread=True, exclusive=True, group="chat-answer")
    def _answer(self, session: ChatSession, text: str, cancel: threading.Event, user_view, reply_view) -> None:
        app = self.app
        try:
            with app.slot.use("writing a chat answer", cancel):
                reply = session.send(text, cancel)
                if reply.dropped_turns:
                    app.call_from_thread(self._note_dropped, reply.dropped_turns)
                for piece in reply:
                    app.call_from_thread(reply_view.append, piece)
        except Exception as error:
            app.call_from_thread(self._answer_failed, text, user_view, reply_view, describe(error))
            return
        app.call_from_thread(self._answer_finished, text, user_view, reply_view, reply.completion)

    def _note_dropped(self, count: int) -> None:
        self.notify(f"the {count} oldest exchange(s) no longer fit the context window; the model no longer sees them")

    async def _answer_finished(self, text: str, user_view, reply_view, completion: Completion | None) -> None:
        await reply_view.finish()
        self.answering = False
        if completion is None or completion.finish_reason == "cancelled":
            await self._undo_exchange(text, user_view, reply_view)
            self.notify("stopped; your message is back in the box", timeout=3)
            return
        self._save_exchange(text, completion.text.strip())
        if completion.finish_reason == "length":
            self.notify("the answer reached max tokens; raise it with ctrl+s", severity="warning")

    async def _answer_failed(self, text: str, user_view, reply_view, message: str) -> None:
        await reply_view.finish()
        self.answering = False
        await self._remove_views(text, user_view, reply_view)
        self.notify(message, title="chat", severity="error", timeout=8)

    async def _undo_exchange(self, text: str, user_view, reply_view) -> None:
        turns = self.session.turns if self.session else []
        if len(turns) >= 2 and turns[-2] == {"role": "user", "content": text}:
            del turns[-2:]  # the stopped answer leaves no trace: the person edits and sends again
        await self._remove_views(text, user_view, reply_view)

    async def _remove_views(self, text: str, user_view, reply_view) -> None:
        await user_view.remove()
        await reply_view.remove()
        prompt = self.query_one("#prompt", Input)
        prompt.value = text
        prompt.focus()

    def _save_exchange(self, text: str, answer: str) -> None:
        model = self.app.slot.name
        if self.conversation is None:
            s = self.settings
            self.conversation = self.history.create(
                title_from(text), model=model, system=s.system, temperature=s.temperature, max_tokens=s.max_tokens
            )
        self.history.add_messages(self.conversation.id, [("user", text, None), ("assistant", answer, model)])
        self.conversation = self.history.update(self.conversation.id, model=model)
        self._refresh_sidebar()
        self._show_info()

    def action_stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    # --- conversations ------------------------------------------------------------------------

    async def action_new(self) -> None:
        if self._refuse_while_answering():
            return
        self.conversation, self.session, self.settings = None, None, self.app.chat_defaults
        await self.query_one(MessageList).show([])
        self._refresh_sidebar()
        self._show_info()
        self.query_one("#prompt").focus()

    async def open_conversation(self, conversation_id: int) -> None:
        if self._refuse_while_answering():
            return
        self.conversation = self.history.conversation(conversation_id)
        c = self.conversation
        self.settings = ChatSettings(c.system, c.temperature, c.max_tokens)
        self.session = None
        await self.query_one(MessageList).show(self.history.messages(conversation_id))
        self._show_info()

    async def on_option_list_option_selected(self, event: ConversationList.OptionSelected) -> None:
        if isinstance(event.option_list, ConversationList) and event.option.id:
            await self.open_conversation(int(event.option.id))
            self.query_one("#prompt").focus()

    def on_conversation_list_action(self, event: ConversationList.Action) -> None:
        self.act_on(event.action, event.conversation_id)

    def act_on(self, action: str, conversation_id: int) -> None:
        conversation = self.history.conversation(conversation_id)
        if action == "rename":
            dialog = TextPrompt("Rename the conversation", conversation.title)
            self.app.push_screen(dialog, lambda title: self._rename(conversation_id, title))
        elif action == "delete":
            dialog = Confirm(f"Delete “{conversation.title}” and its messages?", yes="Delete")
            self.app.push_screen(dialog, lambda yes: self._delete(conversation_id, yes))
        elif action in ("export-md", "export-json"):
            path = self.history.export(conversation_id, action.removeprefix("export-"))
            self.notify(f"exported to {path}", title="export", timeout=6)

    def _rename(self, conversation_id: int, title: str | None) -> None:
        if title:
            updated = self.history.update(conversation_id, title=title)
            if self.conversation and self.conversation.id == conversation_id:
                self.conversation = updated
            self._refresh_sidebar()
            self._show_info()

    async def _delete(self, conversation_id: int, confirmed: bool) -> None:
        if not confirmed:
            return
        if self.conversation and self.conversation.id == conversation_id:
            if self._refuse_while_answering():
                return
            await self.action_new()
        self.history.delete(conversation_id)
        self._refresh_sidebar()

    def _refuse_while_answering(self) -> bool:
        if self.answering:
            self.notify("stop the answer first (Esc)", severity="warning")
        return self.answering

    def _refresh_sidebar(self) -> None:
        current = self.conversation.id if self.conversation else None
        self.query_one(ConversationList).show(self.history.conversations(), current)

    def _show_info(self) -> None:
        s = self.settings
        title = self.conversation.title if self.conversation else "New conversation"
        system = " · system prompt" if s.system else ""
        self.query_one("#conversation-info", Static).update(
            f"{title} · temp {s.temperature:g} · max {s.max_tokens}{system}"
        )

    # --- settings, model, copy ----------------------------------------------------------------

    def action_settings(self) -> None:
        self.app.push_screen(ChatSettingsDialog(self.settings), self._apply_settings)

    def _apply_settings(self, settings: ChatSettings | None) -> None:
        if settings is None:
            return
        self.settings = settings
        if self.conversation:
            self.conversation = self.history.update(
                self.conversation.id,
                system=settings.system,
                temperature=settings.temperature,
                max_tokens=settings.max_tokens,
            )
        if self.session is not None:
            self.session.system, self.session.config = settings.system, settings.config()
        self._show_info()

    def action_pick_model(self) -> None:
        self.app.push_screen(ModelPicker(list_models(), self.app.slot.name), self._switch_model)

    def _switch_model(self, name: str | None) -> None:
        if name:
            self.app.switch_model(name)

    def action_focus_sidebar(self) -> None:
        self.query_one(ConversationList).focus()

    def action_copy_last_answer(self) -> None:
        answers = list(self.query(MessageView).filter(".assistant"))
        if answers:
            answers[-1].action_copy()
        else:
            self.notify("no answer to copy yet", severity="warning")

    async def action_show_earlier(self) -> None:
        await self.query_one(MessageList).show_earlier()

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("New conversation", "Start an empty conversation (ctrl+n)", self.action_new)
        yield SystemCommand("Conversation settings", "System prompt, temperature, max tokens", self.action_settings)
        yield SystemCommand("Switch model", "Load another model from the store", self.action_pick_model)
        yield SystemCommand("Copy last answer", "Copy the latest answer to the clipboard", self.action_copy_last_answer)
        yield SystemCommand("Show earlier messages", "Mount the previous window of messages", self.action_show_earlier)
        if self.conversation:
            current = self.conversation.id
            yield SystemCommand(
                "Rename conversation", "Give the conversation a new title", lambda: self.act_on("rename", current)
            )
            yield SystemCommand(
                "Delete conversation",
                "Delete the conversation and its messages",
                lambda: self.act_on("delete", current),
            )
            yield SystemCommand(
                "Export conversation as Markdown",
                "Write it under $BAYLING_HOME/exports",
                lambda: self.act_on("export-md", current),
            )
            yield SystemCommand(
                "Export conversation as JSON",
                "Write it under $BAYLING_HOME/exports",
                lambda: self.act_on("export-json", current),
            )
