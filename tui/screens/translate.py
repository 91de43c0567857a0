"""Translate: pick the source and any number of targets, type text and watch each translation stream;
or translate a whole file in any registered format (XLIFF, PO, ...) with the batch translator and the
translation memory (progress, memory hits, cancel, resume)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, HorizontalScroll, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Button, Footer, TabbedContent, TabPane, TextArea

from bayling_local.languages import Language, resolve
from bayling_local.tui.errors import describe
from bayling_local.tui.screens.pickers import ANY_LANGUAGE, LanguagePicker
from bayling_local.tui.translation import stream_text
from bayling_local.tui.widgets.file_translation import FileTranslation
from bayling_local.tui.widgets.top_bar import TopBar
from bayling_local.tui.widgets.translation_output import TranslationOutput

DEFAULT_SOURCE, DEFAULT_TARGETS = "eng_Latn", ("zho_Hans",)


class TranslateScreen(Screen):
    DEFAULT_CSS = """
    TranslateScreen #languages { height: 1; }
    TranslateScreen #languages Button { margin: 0 1 0 0; min-width: 0; }
    TranslateScreen #targets { height: 1; width: 1fr; scrollbar-size: 0 0; }
    TranslateScreen #modes { height: 1fr; }
    TranslateScreen TabPane { height: 1fr; padding: 0; }
    TranslateScreen #source { width: 1fr; height: 1fr; }
    TranslateScreen #outputs { width: 1fr; height: 1fr; border: round $foreground 20%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run", "Translate"),
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+o", "pick_source", "From"),
        Binding("ctrl+l", "add_target", "Add target"),
        Binding("ctrl+s", "swap", "Swap"),
    ]
    running = reactive(False, bindings=True)

    def __init__(self) -> None:
        super().__init__()
        self.sub_title = "Translate"
        self.source: Language | None = resolve(DEFAULT_SOURCE)
        self.targets: list[Language] = [resolve(code) for code in DEFAULT_TARGETS]
        self._cancel: threading.Event | None = None

    def compose(self) -> ComposeResult:
        yield TopBar("translate")
        with Horizontal(id="languages"):
            yield Button("", id="source-button", compact=True)
            yield Button("⇄", id="swap", compact=True, tooltip="Swap source and first target (ctrl+s)")
            yield HorizontalScroll(id="targets")
        with TabbedContent(id="modes"):
            with TabPane("Text", id="text-mode"), Horizontal():
                yield TextArea(id="source", soft_wrap=True, placeholder="Text to translate; ctrl+r translates")
                yield VerticalScroll(id="outputs")
            with TabPane("File", id="file-mode"):
                yield FileTranslation()
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        await self._show_languages()
        self.query_one("#source", TextArea).focus()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        return self.running if action == "stop" else True

    # --- languages ----------------------------------------------------------------------------

    async def _show_languages(self) -> None:
        source = self.source.english_name if self.source else "any language"
        self.query_one("#source-button", Button).label = f"From: {source}"
        strip = self.query_one("#targets", HorizontalScroll)
        await strip.remove_children()
        buttons = [
            Button(f"{t.english_name} ×", id=f"target-{t.code}", compact=True, classes="target") for t in self.targets
        ]
        await strip.mount_all([*buttons, Button("+ target", id="add-target", compact=True, variant="primary")])
        outputs = self.query_one("#outputs", VerticalScroll)
        kept = {o.target.code: o for o in outputs.query(TranslationOutput)}
        await outputs.remove_children([o for code, o in kept.items() if code not in {t.code for t in self.targets}])
        await outputs.mount_all([TranslationOutput(t) for t in self.targets if t.code not in kept])
        self.query_one(FileTranslation).set_languages(self.source, self.targets)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        button_id = event.button.id or ""
        if button_id == "source-button":
            self.action_pick_source()
        elif button_id == "swap":
            await self.action_swap()
        elif button_id == "add-target":
            self.action_add_target()
        elif button_id.startswith("target-"):
            await self.remove_target(button_id.removeprefix("target-"))

    def action_pick_source(self) -> None:
        self.app.push_screen(LanguagePicker("Translate from", allow_any=True), self._set_source)

    async def _set_source(self, code: str | None) -> None:
        if code is not None:
            self.source = resolve(code) if code != ANY_LANGUAGE else None
            await self._show_languages()

    def action_add_target(self) -> None:
        self.app.push_screen(LanguagePicker("Add a target language"), self.add_target)

    async def add_target(self, code: str | None) -> None:
        if code and code not in {t.code for t in self.targets}:
            self.targets.append(resolve(code))
            await self._show_languages()

    async def remove_target(self, code: str) -> None:
        if self._refuse_while_running():
            return
        self.targets = [t for t in self.targets if t.code != code]
        await self._show_languages()

    async def action_swap(self) -> None:
        if self._refuse_while_running():
            return
        if self.source is None or not self.targets:
            self.notify("choose a source language and a target to swap", severity="warning")
            return
        first = self.targets[0]
        translated = self.query_one(f"#out-{first.code}", TranslationOutput).text
        self.source, self.targets[0] = first, self.source
        await self._show_languages()
        if translated:
            self.query_one("#source", TextArea).text = translated
            for output in self.query(TranslationOutput):
                output.clear()

    # --- translating text ---------------------------------------------------------------------

    def action_run(self) -> None:
        if self.query_one(TabbedContent).active == "file-mode":
            self.query_one(FileTranslation).start()
            return
        text = self.query_one("#source", TextArea).text
        if not text.strip():
            self.notify("type something to translate first", severity="warning")
            return
        if not self.targets:
            self.notify("add a target language first (ctrl+l)", severity="warning")
            return
        if self.running or self.app.model_state != "ready":
            self.notify("wait for the model (or the translation in flight)", severity="warning")
            return
        for output in self.query(TranslationOutput):
            output.clear()
        self._cancel = threading.Event()
        self.running = True
        jobs = [(t, self.query_one(f"#out-{t.code}", TranslationOutput)) for t in self.targets]
        self._translate(text, self.source, jobs, self._cancel)

    @work(thread=True, exclusive=True, group="translate-text")
    def _translate(self, text: str, source: Language | None, jobs: list, cancel: threading.Event) -> None:
        app = self.app
        try:
            with app.slot.use("translating text", cancel) as model:
                for target, output in jobs:
                    stream_text(
                        model,
                        text,
                        target,
                        lambda piece, output=output: app.call_from_thread(output.add_piece, piece),
                        lambda line, output=output: app.call_from_thread(output.end_line, line),
                        source=source,
                        cancel=cancel,
                    )
        except Exception as error:
            app.call_from_thread(self.notify, describe(error), title="translate", severity="error", timeout=8)
        app.call_from_thread(self._finished, cancel.is_set())

    def _finished(self, cancelled: bool) -> None:
        self.running = False
        if cancelled:
            self.notify("translation stopped", timeout=3)

    def action_stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        self.query_one(FileTranslation).stop()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.query_one("#file-input" if event.pane.id == "file-mode" else "#source").focus()

    def on_file_translation_running(self, event: FileTranslation.Running) -> None:
        self.running = event.running

    def _refuse_while_running(self) -> bool:
        if self.running:
            self.notify("stop the translation first (Esc)", severity="warning")
        return self.running

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Translate", "Translate the text (or start the file) (ctrl+r)", self.action_run)
        yield SystemCommand("Source language", "Choose the language to translate from", self.action_pick_source)
        yield SystemCommand("Add target language", "Translate into one more language", self.action_add_target)
        yield SystemCommand("Swap languages", "Swap the source and the first target", self.action_swap)
