"""`BaylingApp`: the Textual app behind `bayling-local tui` (chat, translate, bench, models).

The app owns what the screens share: the one loaded model (`ModelSlot`), the history database and the
defaults a new conversation starts with. Each screen is a mode, switched with F1-F4.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen

from bayling_local.backends.base import LoadOptions
from bayling_local.model import Model, default_model_name
from bayling_local.tui.errors import describe
from bayling_local.tui.history import History
from bayling_local.tui.model_slot import ModelSlot
from bayling_local.tui.screens.bench import BenchScreen
from bayling_local.tui.screens.chat import ChatScreen
from bayling_local.tui.screens.chat_settings import ChatSettings
from bayling_local.tui.screens.models import ModelsScreen
from bayling_local.tui.screens.translate import TranslateScreen

DARK, LIGHT = "textual-dark", "textual-light"


class BaylingApp(App[None]):
    TITLE = "bayling-local"
    MODES: ClassVar[dict[str, type[Screen]]] = {
        "chat": ChatScreen,
        "translate": TranslateScreen,
        "bench": BenchScreen,
        "models": ModelsScreen,
    }
    DEFAULT_MODE = "chat"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "switch_mode('chat')", "Chat", show=False),
        Binding("f2", "switch_mode('translate')", "Translate", show=False),
        Binding("f3", "switch_mode('bench')", "Bench", show=False),
        Binding("f4", "switch_mode('models')", "Models", show=False),
        Binding("ctrl+t", "toggle_theme", "Theme"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]
    model_state = reactive("none", always_update=True)
    """`none`, `loading`, `ready` or `failed`; `model_label` names the model it is about."""

    def __init__(
        self,
        model: str | None = None,
        *,
        loaded: Model | None = None,
        load_on_start: bool = True,
        load_options: LoadOptions | None = None,
        chat_defaults: ChatSettings | None = None,
        history: History | None = None,
    ):
        """`loaded` hands in a model the caller owns; otherwise `model` (or the default) loads on start."""
        super().__init__()
        self.slot = ModelSlot(load_options, loaded)
        self.history = history or History()
        self.chat_defaults = chat_defaults or ChatSettings()
        self.model_label = loaded.name if loaded else ""
        self._model_to_load = model if load_on_start and loaded is None else False

    def on_mount(self) -> None:
        self.theme = self.history.setting("theme", DARK) or DARK
        self.theme_changed_signal.subscribe(self, lambda theme: self.history.set_setting("theme", theme.name))
        if self.slot.model is not None:
            self.model_state = "ready"
        elif self._model_to_load is not False:
            self.switch_model(self._model_to_load)

    # --- the loaded model ---------------------------------------------------------------------

    def switch_model(self, name: str | None) -> None:
        """Load `name` (None: the default model) in a worker; screens follow `model_state`."""
        self.model_label = name or default_model_name()
        self.model_state = "loading"
        self._load(name)

    @work(thread=True, exclusive=True, group="model-load")
    def _load(self, name: str | None) -> None:
        try:
            model = self.slot.load(name)
        except Exception as error:
            self.call_from_thread(self._load_failed, self.model_label, describe(error))
            return
        self.call_from_thread(self._loaded, model.name)

    def _loaded(self, name: str) -> None:
        self.model_label = name
        self.model_state = "ready"
        self.notify(f"{name} is ready", timeout=2)

    def _load_failed(self, name: str, message: str) -> None:
        self.model_state = "failed"
        self.notify(message, title=f"could not load {name}", severity="error", timeout=10)

    def model_swapped(self, name: str) -> None:
        """A job that runs several models in turn (a benchmark) loaded `name`."""
        self.model_label, self.model_state = name, "ready"

    def sync_model_state(self) -> None:
        """After such a job: say what the slot holds now (nothing, when a load failed)."""
        if self.slot.model is None:
            self.model_label, self.model_state = "", "none"
        elif self.slot.model.name != self.model_label:
            self.model_swapped(self.slot.model.name)

    # --- app-wide actions ---------------------------------------------------------------------

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.current_theme.dark else DARK

    async def action_quit(self) -> None:
        self.slot.cancel_job()  # an answer or a batch in flight stops at its next token
        self.exit()

    def close_resources(self) -> None:
        """After `run()`: free the model (when the app loaded it) and the database."""
        self.slot.close()
        self.history.close()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Chat", "Open the chat screen (F1)", lambda: self.switch_mode("chat"))
        yield SystemCommand("Translate", "Open the translation screen (F2)", lambda: self.switch_mode("translate"))
        yield SystemCommand("Bench", "Open the benchmark screen (F3)", lambda: self.switch_mode("bench"))
        yield SystemCommand("Models", "Open the model store (F4)", lambda: self.switch_mode("models"))
        yield SystemCommand(
            "Toggle light/dark theme", "Switch between textual-light and textual-dark", self.action_toggle_theme
        )
        yield SystemCommand(
            "Stop the running job", "Cancel the answer, translation or benchmark in flight", self.slot.cancel_job
        )
        yield from getattr(screen, "palette_commands", lambda: ())()
