"""Horizontal bars in the terminal: one labelled bar per value, scaled to the widget's width."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(value: float, largest: float, width: int) -> str:
    """A bar of `width` cells for `largest`, drawn to an eighth of a cell."""
    if largest <= 0 or width <= 0:
        return ""
    eighths = round(max(0.0, value) / largest * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[part] if part else "")


class BarChart(Widget):
    DEFAULT_CSS = """
    BarChart { height: auto; padding: 0 1; }
    BarChart > .bar-chart--bar { color: $accent; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"bar-chart--bar"}
    bars: reactive[tuple[tuple[str, float], ...]] = reactive((), layout=True)
    heading: reactive[str] = reactive("")

    def set_bars(self, heading: str, bars: Sequence[tuple[str, float]]) -> None:
        self.heading, self.bars = heading, tuple(bars)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.bars) + (1 if self.heading else 0) or 1

    def render(self) -> Text:
        if not self.bars:
            return Text("no figures to chart yet", style="dim")
        label_width = min(28, max(len(label) for label, _ in self.bars))
        values = [f"{value:,.2f}" for _, value in self.bars]
        value_width = max(len(v) for v in values)
        bar_width = max(1, self.content_size.width - label_width - value_width - 3)
        largest = max(value for _, value in self.bars)
        bar_style = self.get_component_rich_style("bar-chart--bar")
        text = Text()
        if self.heading:
            text.append(self.heading + "\n", style="bold")
        for (label, value), shown in zip(self.bars, values):
            text.append(f"{label[:label_width]:<{label_width}} ")
            text.append(f"{bar(value, largest, bar_width):<{bar_width}}", style=bar_style)
            text.append(f" {shown:>{value_width}}\n")
        text.rstrip()
        return text
