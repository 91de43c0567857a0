"""Reports over the results log: one summary row per model and a figure (PNG) comparing models.

The figure puts quality against speed and size (one bubble per model and quant), then translation
chrF++ per language pair, multiple-choice accuracy per language and tokens/s, so that choosing a
model or a quant is one look.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bayling_local.bench.results import RunRecord
from bayling_local.bench.tables import DASH, Table, fmt, gib
from bayling_local.errors import UsageError


@dataclass
class ModelRow:
    """The latest figures of one model+quant across the benchmark kinds."""

    model: str
    quant: str
    size_bytes: int | None = None
    speed: RunRecord | None = None
    translate: RunRecord | None = None
    choice: dict[str, RunRecord] = field(default_factory=dict)
    """Latest record per multiple-choice task."""

    @property
    def label(self) -> str:
        return f"{self.model} {self.quant}" if self.quant and self.quant not in ("-", "unknown") else self.model

    @property
    def generation_tps(self) -> float | None:
        return _mean_of(self.speed, "generation_tps")

    @property
    def prompt_tps(self) -> float | None:
        return _mean_of(self.speed, "prompt_tps")

    @property
    def chrf(self) -> float | None:
        return self.translate.results.get("average", {}).get("chrf") if self.translate else None

    @property
    def bleu(self) -> float | None:
        return self.translate.results.get("average", {}).get("bleu") if self.translate else None

    def accuracy(self, task: str) -> float | None:
        record = self.choice.get(task)
        return record.results.get("average", {}).get("acc") if record else None


def _mean_of(record: RunRecord | None, key: str) -> float | None:
    value = record.results.get(key) if record else None
    return value.get("mean") if isinstance(value, dict) else None


def model_rows(records: Iterable[RunRecord]) -> list[ModelRow]:
    """One row per model+quant, each kind taken from its latest record (the log is in time order)."""
    rows: dict[tuple[str, str], ModelRow] = {}
    for record in records:
        row = rows.setdefault((record.model, record.quant), ModelRow(record.model, record.quant))
        row.size_bytes = record.size_bytes or row.size_bytes
        if record.kind == "speed":
            row.speed = record
        elif record.kind == "translate":
            row.translate = record
        elif record.kind == "choice":
            row.choice[str(record.settings.get("task", "choice"))] = record
    return list(rows.values())


@dataclass
class LoadedReport:
    rows: list[ModelRow]
    bad_lines: int
    paths: list[Path]


def load_report(paths: Sequence[Path] = ()) -> LoadedReport:
    """Model rows from results files (default: the results log), records merged in time order."""
    from bayling_local.bench.results import read_records, results_path

    paths = list(paths) or [results_path()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(
            f"no results file at {', '.join(missing)}; run `bayling-local bench speed` (or translate, choice) first"
        )
    loaded = [read_records(p) for p in paths]
    records = sorted((r for batch in loaded for r in batch.records), key=lambda r: r.timestamp)
    bad = sum(batch.bad_lines for batch in loaded)
    if not records:
        raise UsageError(f"no readable records in {', '.join(map(str, paths))} ({bad} bad line(s))")
    return LoadedReport(model_rows(records), bad, paths)


def choice_tasks(rows: Sequence[ModelRow]) -> list[str]:
    return sorted({task for row in rows for task in row.choice})


def summary_table(rows: Sequence[ModelRow], bad_lines: int = 0, source: Path | None = None) -> Table:
    tasks = choice_tasks(rows)
    headers = ["model", "quant", "size", "device", "pp t/s", "tg t/s", "BLEU", "chrF++"] + [f"{t} acc" for t in tasks]
    body = []
    for row in rows:
        device = row.speed.model_details.get("device", DASH) if row.speed else DASH
        body.append(
            [
                row.model,
                row.quant or DASH,
                gib(row.size_bytes),
                device,
                fmt(row.prompt_tps, 1),
                fmt(row.generation_tps, 1),
                fmt(row.bleu),
                fmt(row.chrf),
            ]
            + [fmt(row.accuracy(t), 3) for t in tasks]
        )
    notes = ["latest run of each kind per model and quant; BLEU/chrF++ averaged over the run's language pairs"]
    if source is not None:
        notes.append(f"from {source}")
    if bad_lines:
        notes.append(f"{bad_lines} unreadable line(s) skipped")
    return Table("models", headers, body, notes)


# --- the figure -----------------------------------------------------------------------------------


def plot_report(rows: Sequence[ModelRow], out: Path, title: str = "bayling-local benchmarks") -> Path:
    """Write a PNG of the panels the data allows; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PANELS if p.wanted(rows)]
    if not panels:
        raise UsageError("no results to plot: run `bayling-local bench speed|translate|choice` first")
    columns = 2 if len(panels) > 1 else 1
    lines = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(7.5 * columns, 5.2 * lines), squeeze=False)
    colors = _colors(rows)
    for panel, axis in zip(panels, axes.flat):
        panel.draw(axis, rows, colors)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(title, fontsize=15, fontweight="bold")
    _legend(figure, rows, colors)
    figure.text(0.5, 0.005, _caption(rows), ha="center", va="bottom", fontsize=8, color="#555555")
    figure.tight_layout(rect=(0, 0.03, 1, 0.92))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _colors(rows: Sequence[ModelRow]) -> dict[str, tuple]:
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    return {row.label: palette(i % 10) for i, row in enumerate(rows)}


def _legend(figure, rows: Sequence[ModelRow], colors) -> None:
    """One colour per model and quant, the same in every panel."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colors[r.label], edgecolor="black", label=r.label) for r in rows]
    figure.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.955),
        ncol=min(4, len(handles)),
        fontsize=9,
        frameon=False,
    )


def _caption(rows: Sequence[ModelRow]) -> str:
    records = [r for row in rows for r in (row.speed, row.translate, *row.choice.values()) if r]
    hardware = {
        (r.hardware.get("cpu", "?"), ", ".join(r.hardware.get("gpus", []) or [])) for r in records if r.hardware
    }
    machines = "; ".join(f"{cpu}{' + ' + gpus if gpus else ''}" for cpu, gpus in sorted(hardware)) or "unknown hardware"
    latest = max((r.timestamp for r in records), default="")
    return f"hardware: {machines}   latest run: {latest[:16].replace('T', ' ')}"


@dataclass(frozen=True)
class Panel:
    """One plot of the figure, drawn when the results hold what it shows."""

    name: str
    wanted: Callable[[Sequence[ModelRow]], bool]
    draw: Callable


def _style(axis, title: str, xlabel: str = "", ylabel: str = "") -> None:
    axis.set_title(title, fontsize=12, loc="left", fontweight="bold")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(True, alpha=0.3, linewidth=0.6)
    axis.spines[["top", "right"]].set_visible(False)


def _quality(row: ModelRow) -> tuple[float | None, str]:
    if row.chrf is not None:
        return row.chrf, "translation chrF++ (mean over pairs)"
    tasks = choice_tasks([row])
    return (row.accuracy(tasks[0]) * 100, f"{tasks[0]} accuracy (%)") if tasks else (None, "")


def _tradeoff_wanted(rows) -> bool:
    return any(r.generation_tps and _quality(r)[0] is not None for r in rows)


def _draw_tradeoff(axis, rows, colors) -> None:
    """Quality against generation speed; bubble area is the model's file size."""
    points = [(r, *_quality(r)) for r in rows if r.generation_tps]
    points = [(r, q, label) for r, q, label in points if q is not None]
    largest = max((r.size_bytes or 0 for r, _, _ in points), default=0) or 1
    for row, quality, _ in points:
        area = 200 + 2200 * ((row.size_bytes or 0) / largest)
        axis.scatter(
            row.generation_tps,
            quality,
            s=area,
            color=colors[row.label],
            alpha=0.55,
            edgecolors="black",
            linewidths=0.8,
            zorder=3,
        )
        size = gib(row.size_bytes) if row.size_bytes else "size ?"
        axis.annotate(size, (row.generation_tps, quality), ha="center", va="center", fontsize=8, zorder=4)
    metric = points[0][2] if len({label for _, _, label in points}) == 1 else "quality (chrF++ or accuracy %)"
    _style(
        axis, "Quality vs speed (bubble area = file size)", "generation tokens/s  (faster →)", f"{metric}  (better ↑)"
    )
    # Both axes from zero: a lone model (or two close ones) must not look far apart.
    axis.set_xlim(0, max(r.generation_tps for r, _, _ in points) * 1.3)
    axis.set_ylim(0, min(100.0, max(q for _, q, _ in points) * 1.3) or 1.0)


def _translation_wanted(rows) -> bool:
    return any(r.translate for r in rows)


def _draw_translation(axis, rows, colors) -> None:
    """chrF++ per language pair, one bar per model."""
    models = [r for r in rows if r.translate]
    scores = {r.label: {p["target"]: p["chrf"] for p in r.translate.results.get("pairs", [])} for r in models}
    targets = sorted(
        {t for per in scores.values() for t in per}, key=lambda t: -max(per.get(t, 0) for per in scores.values())
    )
    _grouped_bars(axis, targets, [(r.label, [scores[r.label].get(t) for t in targets]) for r in models], colors)
    sources = {p["source"] for r in models for p in r.translate.results.get("pairs", [])}
    source = sources.pop() if len(sources) == 1 else "several sources"
    _style(axis, f"Translation from {source}: chrF++ per target", "", "chrF++")
    axis.set_ylim(0, axis.get_ylim()[1] * 1.12)


def _choice_wanted(rows) -> bool:
    return any(r.choice for r in rows)


def _draw_choice(axis, rows, colors) -> None:
    """Multiple-choice accuracy per language, with the chance level."""
    task = choice_tasks(rows)[0]
    models = [r for r in rows if task in r.choice]
    scores = {
        r.label: {a["language"]: a["acc"] * 100 for a in r.choice[task].results.get("languages", [])} for r in models
    }
    languages = sorted({lang for per in scores.values() for lang in per})
    _grouped_bars(
        axis, languages, [(r.label, [scores[r.label].get(lang) for lang in languages]) for r in models], colors
    )
    chance = models[0].choice[task].results.get("chance")
    if chance:
        line = axis.axhline(
            chance * 100, color="#c0392b", linestyle="--", linewidth=1.2, label=f"chance ({chance:.0%})"
        )
        axis.legend(handles=[line], fontsize=8, loc="upper right")
    _style(axis, f"{task}: accuracy per language", "", "accuracy (%)")
    axis.set_ylim(0, 100)


def _speed_wanted(rows) -> bool:
    return any(r.speed for r in rows)


def _draw_speed(axis, rows, colors) -> None:
    """Prompt processing and generation tokens/s per model (mean ± stddev)."""
    from matplotlib.patches import Patch

    models = [r for r in rows if r.speed]
    labels = [r.label for r in models]
    for offset, key, hatch in ((0.2, "prompt_tps", ""), (-0.2, "generation_tps", "//")):
        values = [(r.speed.results.get(key) or {}) for r in models]
        means = [v.get("mean") or 0 for v in values]
        spreads = [v.get("stddev") or 0 for v in values]
        positions = [i + offset for i in range(len(models))]
        axis.barh(
            positions,
            means,
            height=0.38,
            xerr=spreads,
            color=[colors[l] for l in labels],
            hatch=hatch,
            edgecolor="black",
            linewidth=0.6,
            capsize=3,
        )
        for position, mean, spread in zip(positions, means, spreads):
            if mean:
                axis.text(mean + spread, position, f"  {mean:.1f}", va="center", fontsize=8)
    axis.set_yticks(range(len(models)), labels, fontsize=9)
    axis.legend(
        handles=[
            Patch(facecolor="white", edgecolor="black", label="prompt processing"),
            Patch(facecolor="white", edgecolor="black", hatch="//", label="generation"),
        ],
        fontsize=8,
        loc="lower right",
    )
    axis.set_xlim(0, axis.get_xlim()[1] * 1.1)
    settings = models[0].speed.settings
    _style(
        axis,
        f"Speed (pp{settings.get('prompt_tokens', '?')}, tg{settings.get('generation_tokens', '?')})",
        "tokens/s  (more is better)",
    )


def _grouped_bars(axis, categories: list[str], series: list[tuple[str, list[float | None]]], colors) -> None:
    width = min(0.8 / max(1, len(series)), 0.35)
    for index, (label, values) in enumerate(series):
        positions = [i + width * (index - (len(series) - 1) / 2) for i in range(len(categories))]
        heights = [v if v is not None else 0 for v in values]
        bars = axis.bar(
            positions, heights, width=width, color=colors[label], edgecolor="black", linewidth=0.5, label=label
        )
        if len(categories) * len(series) <= 24:
            axis.bar_label(bars, labels=[f"{v:.1f}" if v is not None else "" for v in values], fontsize=7, padding=2)
    axis.set_xticks(
        range(len(categories)),
        categories,
        rotation=30 if len(categories) > 6 else 0,
        ha="right" if len(categories) > 6 else "center",
        fontsize=9,
    )


PANELS = (
    Panel("quality vs speed and size", _tradeoff_wanted, _draw_tradeoff),
    Panel("translation per language", _translation_wanted, _draw_translation),
    Panel("multiple choice per language", _choice_wanted, _draw_choice),
    Panel("speed", _speed_wanted, _draw_speed),
)
