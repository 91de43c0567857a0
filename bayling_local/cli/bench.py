"""`bayling-local bench`: speed, translate, choice and report, over `bayling_local.bench`.

Every run prints a table, can write `--json` and `--markdown` files, and appends its records to
`$BAYLING_HOME/results.jsonl`, which `bench report` (and the TUI) read.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer

from bayling_local.cli.options import (
    ChatFormatOption,
    ContextOption,
    DraftModelOption,
    DraftTokensOption,
    LookupNgramOption,
    ThreadsOption,
    speculation_options,
)

app = typer.Typer(
    help="Benchmarks: speed (tokens/s, memory), translation (BLEU, chrF++), multiple choice, reports.",
    no_args_is_help=True,
)

ModelsArgument = Annotated[
    list[str] | None, typer.Argument(help="Store names or GGUF paths (default: the default model).", show_default=False)
]
ModelArgument = Annotated[
    str | None, typer.Argument(help="Store name or GGUF path (default: the default model).", show_default=False)
]
DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        envvar="BAYLING_SHARED_DATA",
        help="Evaluation data: a folder, a .tar.xz archive, or a folder holding the usual archive.",
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or metal.")]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Also write the records to this JSON file.")]
MarkdownOption = Annotated[
    Path | None, typer.Option("--markdown", help="Also write the table(s) to this Markdown file.")
]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N items per language.")]


@app.command()
def speed(
    models: ModelsArgument = None,
    prompt_tokens: Annotated[int, typer.Option("-p", "--prompt-tokens", min=1, help="Prompt length in tokens.")] = 512,
    generation_tokens: Annotated[int, typer.Option("-n", "--gen-tokens", min=2, help="Tokens to generate.")] = 128,
    repetitions: Annotated[int, typer.Option("-r", "--repetitions", min=1, help="Timed runs per row.")] = 3,
    threads: Annotated[
        str | None, typer.Option("--threads", help="CPU threads, comma-separated: 1,2,4 (one row each).")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="Devices, comma-separated: cpu,cuda (one row each).")
    ] = "auto",
    context: ContextOption = None,
    warmup: Annotated[bool, typer.Option("--warmup/--no-warmup", help="One untimed run first.")] = True,
    json_file: JsonOption = None,
    markdown: MarkdownOption = None,
    draft_model: DraftModelOption = None,
    draft_tokens: DraftTokensOption = 8,
    lookup_ngram: LookupNgramOption = 0,
) -> None:
    """Prompt-processing and generation tokens/s, time to first token and peak memory (like llama-bench)."""
    from bayling_local.bench.hardware import detect_hardware
    from bayling_local.bench.speed import (
        SpeedSettings,
        benchmark_speed,
        parse_devices,
        parse_int_list,
        speed_cases,
        speed_record,
    )
    from bayling_local.bench.tables import speed_table

    settings = SpeedSettings(prompt_tokens, generation_tokens, repetitions, warmup)
    speculation = speculation_options(draft_model, draft_tokens, lookup_ngram)
    cases = speed_cases(
        list(models or []), parse_devices(device), parse_int_list(threads, "--threads"), context, speculation
    )
    hardware = detect_hardware()
    with _progress() as progress:
        results = benchmark_speed(cases, settings, progress)
    run_id = uuid.uuid4().hex[:12]
    records = [speed_record(result, hardware, run_id) for result in results]
    _finish([speed_table(results, hardware)], records, json_file, markdown)


@app.command()
def translate(
    model: ModelArgument = None,
    data: DataOption = ...,
    pairs: Annotated[
        str,
        typer.Option(
            "--pairs", help="SOURCE-TARGET pairs, comma-separated (eng_Latn-swh_Latn,en-fr), or all-from:CODE."
        ),
    ] = ...,
    split: Annotated[str, typer.Option("--split", help="FLORES-200 split: devtest or dev.")] = "devtest",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N sentences.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Token limit per translation.")] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    context: ContextOption = None,
    chat_format: ChatFormatOption = None,
    json_file: JsonOption = None,
    markdown: MarkdownOption = None,
) -> None:
    """BLEU, chrF++ (and spBLEU when its tokenizer is cached) on FLORES-200, per pair and averaged."""
    from bayling_local.bench.hardware import detect_hardware
    from bayling_local.bench.jobs import summarize_model
    from bayling_local.bench.tables import translation_table
    from bayling_local.bench.translation import (
        TranslationSettings,
        check_pairs_in_data,
        parse_pairs,
        run_translation_benchmark,
        translation_record,
    )
    from bayling_local.cli.loading import open_model_for_cli
    from bayling_local.evaldata import flores_languages

    pairs, model = _joined_all_from(pairs, model)
    available = flores_languages(data)
    language_pairs = parse_pairs(pairs, available)
    check_pairs_in_data(language_pairs, available)
    settings = TranslationSettings(split, limit, max_tokens)
    loaded = open_model_for_cli(model, device, threads, context, chat_format)
    try:
        summary = summarize_model(loaded)
        with _progress() as progress:
            report = run_translation_benchmark(loaded, data, language_pairs, settings, progress)
    finally:
        loaded.close()
    record = translation_record(report, summary, detect_hardware(), data)
    _finish([translation_table(report, summary)], [record], json_file, markdown)


@app.command()
def choice(
    model: ModelArgument = None,
    task: Annotated[str, typer.Option("--task", help="xcopa or belebele.")] = "xcopa",
    data: DataOption = ...,
    langs: Annotated[
        str | None, typer.Option("--langs", help="Languages, comma-separated (sw,zh); default: all in the data.")
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Data split (XCOPA: test or val).")] = None,
    limit: LimitOption = None,
    connectors: Annotated[
        str, typer.Option("--connectors", help="XCOPA connectors: english (one prompt) or native (lm-eval's).")
    ] = "english",
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    context: ContextOption = None,
    json_file: JsonOption = None,
    markdown: MarkdownOption = None,
) -> None:
    """Multiple-choice accuracy by log-likelihood (acc and byte-length-normalised acc_norm) per language."""
    from bayling_local.bench.choice import ChoiceSettings, check_choice_request, choice_record, run_choice_benchmark
    from bayling_local.bench.hardware import detect_hardware
    from bayling_local.bench.jobs import summarize_model
    from bayling_local.bench.tables import choice_table
    from bayling_local.cli.loading import open_model_for_cli

    languages = [item.strip() for item in langs.split(",")] if langs else None
    if languages is not None and not all(languages):
        from bayling_local.errors import UsageError

        raise UsageError(f"empty item in --langs {langs!r}; write e.g. sw,zh")
    settings = ChoiceSettings(task, split, limit, connectors)
    check_choice_request(data, languages, settings)  # bad input fails before the model loads
    loaded = open_model_for_cli(model, device, threads, context, None)
    try:
        summary = summarize_model(loaded)
        with _progress() as progress:
            report = run_choice_benchmark(loaded, data, languages, settings, progress)
    finally:
        loaded.close()
    record = choice_record(report, summary, detect_hardware(), data)
    _finish([choice_table(report, summary)], [record], json_file, markdown)


@app.command()
def report(
    results: Annotated[
        list[Path] | None,
        typer.Argument(help="Results files (default: $BAYLING_HOME/results.jsonl).", show_default=False),
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG figure here.")] = None,
    markdown: MarkdownOption = None,
) -> None:
    """A table per model (latest run of each kind) and, with --plot, a figure comparing them."""
    from bayling_local.bench.report import load_report, plot_report, summary_table
    from bayling_local.bench.tables import print_tables, to_markdown

    loaded = load_report(list(results or []))
    table = summary_table(loaded.rows, loaded.bad_lines, loaded.paths[0] if len(loaded.paths) == 1 else None)
    print_tables([table])
    if markdown:
        markdown.write_text(to_markdown([table]), encoding="utf-8")
    if plot:
        sys.stdout.flush()
        print(f"figure: {plot_report(loaded.rows, plot)}", file=sys.stderr)


# --- shared steps ---------------------------------------------------------------------------------


def _joined_all_from(pairs: str, model: str | None) -> tuple[str, str | None]:
    """`--pairs all-from eng_Latn` (two words) leaves the code where MODEL goes; take it back as the source."""
    if pairs.strip() != "all-from":
        return pairs, model
    from bayling_local.bench.translation import MalformedPairsError
    from bayling_local.errors import UnknownLanguageError
    from bayling_local.languages import resolve

    try:
        source = resolve(model) if model else None
    except UnknownLanguageError:
        source = None
    if source is None:
        raise MalformedPairsError("--pairs all-from needs a source language: --pairs all-from:eng_Latn")
    return f"all-from:{source.code}", None


def _finish(tables, records, json_file: Path | None, markdown: Path | None) -> None:
    """Print the tables, write the requested files, append the records to the results log."""
    import json

    from bayling_local.bench.results import SCHEMA_VERSION, append_record
    from bayling_local.bench.tables import print_tables, to_markdown

    print_tables(tables)
    if json_file:
        payload = {"schema_version": SCHEMA_VERSION, "records": [r.to_json() for r in records]}
        json_file.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if markdown:
        markdown.write_text(to_markdown(tables), encoding="utf-8")
    for record in records:
        path = append_record(record)
    print(f"recorded {len(records)} result(s) in {path}", file=sys.stderr)


@contextlib.contextmanager
def _progress():
    """A progress callback: a rich bar on a terminal's stderr, nothing in a pipe."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(event) -> None:
            if event.stage not in tasks:
                tasks[event.stage] = bar.add_task(event.stage, total=event.total or None)
            bar.update(tasks[event.stage], completed=event.done, total=event.total or None)

        yield update
