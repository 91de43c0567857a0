"""The bench screen's form: which benchmark, and its settings, read into a `BenchRequest`."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import ContentSwitcher, Input, Label, Select

from bayling_local.bench.choice import TASKS, ChoiceSettings
from bayling_local.bench.speed import SpeedSettings
from bayling_local.bench.translation import TranslationSettings
from bayling_local.tui.bench_runs import KINDS, BenchRequest

DEFAULT_LIMIT = 20
DATA_HINT = "folder or archive (e.g. flores200_dev_devtest_204langs.tar.xz, xcopa.tar.xz)"


def positive_int(text: str, what: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{what} must be a whole number of at least 1")
    return int(text)


class Field(Horizontal):
    """A label and a one-line input."""

    DEFAULT_CSS = """
    Field { height: 1; margin: 0 0 1 0; }
    Field Label { width: 18; }
    Field Input { width: 1fr; }
    """

    def __init__(self, label: str, field_id: str, value: object = "", placeholder: str = ""):
        super().__init__()
        self.label, self.field_id, self.placeholder = label, field_id, placeholder
        self.value = "" if value is None else str(value)

    def compose(self) -> ComposeResult:
        yield Label(self.label)
        yield Input(self.value, id=self.field_id, placeholder=self.placeholder, compact=True)


class BenchForm(Vertical):
    DEFAULT_CSS = """
    BenchForm { height: auto; }
    BenchForm #bench-kind { width: 30; margin: 0 0 1 0; }
    BenchForm #bench-forms, BenchForm #bench-forms > Vertical { height: auto; }
    """

    def compose(self) -> ComposeResult:
        speed = SpeedSettings()
        yield Select([(k, k) for k in KINDS], value="speed", allow_blank=False, compact=True, id="bench-kind")
        yield Field("Data", "bench-data", placeholder=DATA_HINT)
        with ContentSwitcher(initial="speed-form", id="bench-forms"):
            with Vertical(id="speed-form"):
                yield Field("Prompt tokens", "speed-prompt", speed.prompt_tokens)
                yield Field("Generated tokens", "speed-generate", speed.generation_tokens)
                yield Field("Repetitions", "speed-reps", speed.repetitions)
            with Vertical(id="translate-form"):
                yield Field("Pairs", "flores-pairs", "eng_Latn-fra_Latn")
                yield Field("Sentences", "flores-limit", DEFAULT_LIMIT)
            with Vertical(id="choice-form"):
                yield Select([(t, t) for t in TASKS], value="xcopa", allow_blank=False, compact=True, id="choice-task")
                yield Field("Languages", "choice-langs", placeholder="sw,zh (empty: all in the data)")
                yield Field("Items per language", "choice-limit", DEFAULT_LIMIT)

    def on_mount(self) -> None:
        self._show_kind("speed")

    @property
    def kind(self) -> str:
        return str(self.query_one("#bench-kind", Select).value)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "bench-kind":
            self._show_kind(str(event.value))

    def _show_kind(self, kind: str) -> None:
        self.query_one("#bench-forms", ContentSwitcher).current = f"{kind}-form"
        self.query_one("#bench-data", Input).parent.display = kind != "speed"

    def _value(self, field_id: str) -> str:
        return self.query_one(f"#{field_id}", Input).value.strip()

    def request(self, models: tuple[str, ...]) -> BenchRequest:
        """The benchmark the form describes; ValueError says which field is wrong."""
        if not models:
            raise ValueError("tick at least one model")
        if self.kind == "speed":
            speed = SpeedSettings(
                positive_int(self._value("speed-prompt"), "prompt tokens"),
                positive_int(self._value("speed-generate"), "generated tokens"),
                positive_int(self._value("speed-reps"), "repetitions"),
            )
            return BenchRequest("speed", models, speed=speed)
        data = self._value("bench-data")
        if not data:
            raise ValueError("give the evaluation data: a folder or an archive")
        if self.kind == "translate":
            limit = positive_int(self._value("flores-limit"), "sentences")
            return BenchRequest(
                "translate",
                models,
                data=data,
                pairs=self._value("flores-pairs"),
                translation=TranslationSettings(limit=limit),
            )
        languages = tuple(code.strip() for code in self._value("choice-langs").split(",") if code.strip())
        task = str(self.query_one("#choice-task", Select).value)
        limit = positive_int(self._value("choice-limit"), "items per language")
        return BenchRequest("choice", models, data=data, languages=languages, choice=ChoiceSettings(task, limit=limit))

    def set_data(self, path: str) -> None:
        self.query_one("#bench-data", Input).value = path
