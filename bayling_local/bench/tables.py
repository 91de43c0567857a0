"""Benchmark results as tables (title, headers, rows, notes), written as rich or Markdown.

One description of each table serves the terminal, `--markdown FILE` and the TUI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

DASH = "-"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    """Lines printed under the table: hardware, build, signatures, caveats."""


def fmt(value: float | None, digits: int = 2, scale: float = 1.0) -> str:
    return DASH if value is None else f"{value * scale:.{digits}f}"


def gib(value: int | None) -> str:
    return DASH if value is None else f"{value / 2**30:.2f} GiB"


def mib(value: int | None) -> str:
    return DASH if value is None else f"{value / 2**20:.0f} MiB"


def stat(value, digits: int = 2) -> str:
    return DASH if value is None else value.format(digits)


# --- speed ----------------------------------------------------------------------------------------


def speed_table(results: Sequence, hardware) -> Table:
    rows = []
    for r in results:
        generated = r.generated_tokens
        wanted = r.settings.generation_tokens
        rows.append(
            [
                r.model.name,
                r.model.quant,
                r.model.backend,
                r.model.device,
                str(r.threads or "auto"),
                str(r.model.context_length),
                f"pp{r.settings.prompt_tokens}",
                f"tg{wanted}" if generated == wanted else f"tg{generated}/{wanted}",
                stat(r.prompt_tps),
                stat(r.engine_prompt_tps),
                stat(r.generation_tps),
                stat(r.engine_generation_tps),
                stat(r.ttft_s, 3),
                mib(r.peak_rss_bytes),
                mib(r.gpu_memory_bytes),
            ]
        )
    notes = [f"hardware: {hardware.describe()}"]
    notes += sorted({build_line(r.model) for r in results})
    notes += unique(runtime_settings_line(r.model.backend, r.runtime_settings) for r in results if r.runtime_settings)
    repetitions = results[0].settings.repetitions if results else 0
    notes.append(
        f"mean ± stddev over {repetitions} runs after a warm-up; 'measured' is wall-clock here, 'engine' the "
        "backend's own counters for the same runs; peak RSS is sampled during each row (process-wide memory)"
    )
    if any(r.generated_tokens < r.settings.generation_tokens for r in results):
        notes.append("tgA/B: the model stopped after A of the B tokens asked; rates use the tokens generated")
    headers = [
        "model",
        "quant",
        "backend",
        "device",
        "threads",
        "ctx",
        "prompt",
        "gen",
        "pp t/s measured",
        "pp t/s engine",
        "tg t/s measured",
        "tg t/s engine",
        "TTFT s",
        "peak RSS",
        "GPU mem",
    ]
    if any(r.acceptance_rate is not None for r in results):
        headers += ["draft accepted", "tokens/pass"]
        for row, r in zip(rows, results):
            row += [stat(r.acceptance_rate), stat(r.tokens_per_pass)]
        notes.append(
            "speculative decoding: 'draft accepted' is the share of drafted tokens the model kept, "
            "'tokens/pass' the tokens each pass of the model gave (1 without drafts)"
        )
    return Table("speed", headers, rows, notes)


def runtime_settings_line(backend: str, settings: dict[str, str]) -> str:
    """`llama.cpp settings: threads=4, flash_attention=off, ...` for a table note."""
    return f"{backend} settings: " + ", ".join(f"{key}={value}" for key, value in settings.items())


def unique(lines) -> list[str]:
    """The lines in first-seen order, each once."""
    return list(dict.fromkeys(lines))


def build_line(model) -> str:
    """`backend build: llama.cpp 0.3.36; devices cpu; CPU features: ...` for a `jobs.ModelSummary`."""
    build = model.build or {}
    parts = [f"{build.get('backend', model.backend)} {build.get('version', '')}".strip()]
    parts += [f"devices {build['devices']}"] if build.get("devices") else []
    parts += [build["build"]] if build.get("build") else []
    return "backend build: " + "; ".join(parts)


# --- translation ----------------------------------------------------------------------------------


def translation_table(report, model) -> Table:
    rows = [
        [p.pair, str(p.sentences), fmt(p.bleu), fmt(p.chrf), fmt(p.spbleu), fmt(p.seconds, 1)] for p in report.pairs
    ]
    avg = report.average
    rows.append(
        [
            "average",
            str(report.sentences),
            fmt(avg["bleu"]),
            fmt(avg["chrf"]),
            fmt(avg["spbleu"]),
            fmt(sum(p.seconds for p in report.pairs), 1),
        ]
    )
    limit = f", first {report.settings.limit} sentences" if report.settings.limit else ""
    described = f"{model.name} ({model.quant}, {model.backend}, {model.device})"
    notes = [f"{described}; FLORES-200 {report.settings.split}{limit}; greedy decoding"]
    notes += [f"sacrebleu {signature}" for signature in report.signatures()]
    notes += [report.spbleu_note] if report.spbleu_note else []
    return Table("translation", ["pair", "sentences", "BLEU", "chrF++", "spBLEU", "seconds"], rows, notes)


# --- multiple choice ------------------------------------------------------------------------------


def choice_table(report, model) -> Table:
    rows = [
        [a.language, str(a.items), fmt(a.acc, 3), f"± {a.acc_stderr:.3f}", fmt(a.acc_norm, 3)] for a in report.languages
    ]
    rows.append(
        [
            "average",
            str(sum(a.items for a in report.languages)),
            fmt(report.average["acc"], 3),
            "",
            fmt(report.average["acc_norm"], 3),
        ]
    )
    settings = report.settings
    limit = f", first {settings.limit} items" if settings.limit else ""
    connectors = f"; {settings.connectors} connectors" if report.task == "xcopa" else ""
    described = f"{model.name} ({model.quant}, {model.backend}, {model.device})"
    notes = [
        f"{described}; {report.task} {settings.split or 'test'}{limit}{connectors}; chance = {report.chance:.2f}",
        "acc: highest log-likelihood; acc_norm: highest log-likelihood per UTF-8 byte of the answer",
    ]
    return Table(report.task, ["language", "items", "acc", "stderr", "acc_norm"], rows, notes)


# --- output ---------------------------------------------------------------------------------------


def to_markdown(tables: Sequence[Table]) -> str:
    parts = []
    for table in tables:
        parts.append(f"## {table.title}\n")
        parts.append("| " + " | ".join(table.headers) + " |")
        parts.append("|" + "|".join(" --- " for _ in table.headers) + "|")
        parts += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
        parts.append("")
        parts += [f"- {note}" for note in table.notes]
        parts.append("")
    return "\n".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def print_tables(tables: Sequence[Table], console=None) -> None:
    """Rich tables on stdout (plain text in a pipe), with their notes below."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console(width=None if _stdout_is_terminal() else 200)
    for table in tables:
        rich_table = RichTable(*table.headers, title=table.title, title_justify="left")
        for row in table.rows:
            rich_table.add_row(*row)
        console.print(rich_table)
        for note in table.notes:
            console.print(note, markup=False, highlight=False, soft_wrap=True)


def _stdout_is_terminal() -> bool:
    import sys

    return sys.stdout.isatty()
