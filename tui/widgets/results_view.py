"""Benchmark records from `results.jsonl`: a table per kind, newest first, and a bar chart of the
kind's headline figure. Which figures a kind shows is data (`FIGURES`), not code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label, Select

from bayling_local.bench.results import RunRecord
from bayling_local.tui.widgets.bar_chart import BarChart

CHART_ROWS = 8


@dataclass(frozen=True)
class Figure:
    label: str
    path: tuple[str, ...]
    """Keys into a record's `results`."""
    digits: int = 1

    def value(self, results: dict) -> float | None:
        value = results
        for key in self.path:
            value = value.get(key) if isinstance(value, dict) else None
        return float(value) if isinstance(value, (int, float)) else None

    def cell(self, results: dict) -> str:
        value = self.value(results)
        return "–" if value is None else f"{value:,.{self.digits}f}"


FIGURES: dict[str, tuple[Figure, ...]] = {
    "speed": (
        Figure("gen tok/s", ("generation_tps", "mean")),
        Figure("prompt tok/s", ("prompt_tps", "mean")),
        Figure("TTFT s", ("ttft_s", "mean"), 3),
    ),
    "translate": (
        Figure("chrF++", ("average", "chrf")),
        Figure("BLEU", ("average", "bleu")),
        Figure("sentences", ("sentences",), 0),
    ),
    "choice": (Figure("acc", ("average", "acc"), 3), Figure("acc_norm", ("average", "acc_norm"), 3)),
}
"""The first figure of a kind is the one charted."""


def when(record: RunRecord) -> str:
    """`11-26 22:08` (UTC) from the ISO timestamp: short enough for an 80-column table."""
    return record.timestamp[5:16].replace("T", " ")


class ResultsView(Vertical):
    DEFAULT_CSS = """
    ResultsView { height: 1fr; }
    ResultsView Select { width: 24; }
    ResultsView DataTable { height: 1fr; min-height: 4; }
    ResultsView #results-note { color: $text-muted; padding: 0 1; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.records: list[RunRecord] = []

    def compose(self) -> ComposeResult:
        yield Select(
            [(kind, kind) for kind in FIGURES], value="speed", allow_blank=False, compact=True, id="results-kind"
        )
        yield DataTable(cursor_type="row", zebra_stripes=True, id="results-table")
        yield BarChart()
        yield Label("", id="results-note")

    @property
    def kind(self) -> str:
        return str(self.query_one("#results-kind", Select).value)

    def show(self, records: Sequence[RunRecord], bad_lines: int = 0, kind: str | None = None) -> None:
        self.records = list(records)
        if kind and kind != self.kind:
            self.query_one("#results-kind", Select).value = kind  # the Changed handler redraws
        self._draw()
        note = f"{bad_lines} unreadable line(s) in results.jsonl skipped" if bad_lines else ""
        self.query_one("#results-note", Label).update(note)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._draw()

    def _draw(self) -> None:
        figures = FIGURES.get(self.kind, ())
        rows = [r for r in reversed(self.records) if r.kind == self.kind]
        table = self.query_one(DataTable)
        table.clear(columns=True)
        table.add_columns("when", "model", "quant", *(f.label for f in figures))
        for record in rows:
            table.add_row(when(record), record.model, record.quant, *(f.cell(record.results) for f in figures))
        self._chart(rows[:CHART_ROWS], figures[0] if figures else None)

    def _chart(self, rows: list[RunRecord], figure: Figure | None) -> None:
        bars = [(f"{when(r)} {r.model}", figure.value(r.results)) for r in rows] if figure else []
        shown = [(label, value) for label, value in bars if value is not None]
        self.query_one(BarChart).set_bars(f"{figure.label}, latest runs" if figure else "", shown)
