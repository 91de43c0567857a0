"""`bayling-local translate`: text from the arguments or stdin lines, or a whole file (`-i`), into one
or more languages. File translation lives in `bayling_local.translate.batch`; this module parses options."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from bayling_local.cli.loading import open_model_for_cli
from bayling_local.cli.options import (
    BackendOption,
    ChatFormatOption,
    ContextOption,
    DeviceOption,
    DraftModelOption,
    DraftTokensOption,
    LookupNgramOption,
    MaxTokensOption,
    ModelOption,
    SeedOption,
    TemperatureOption,
    ThreadsOption,
    TopKOption,
    TopPOption,
    generation_config,
    speculation_options,
)
from bayling_local.errors import InputTextError, UsageError

AUTO = "auto"
MAX_REPORTED = 20
"""Problems listed one per line on stderr at the end; the JSON log has them all."""
FILE_PANEL = "File options (with -i)"


TextArgument = Annotated[list[str] | None, typer.Argument(help="Text to translate; stdin lines when none is given.")]
ToOption = Annotated[str, typer.Option("--to", "-t", help="Target language(s), comma-separated: sw,yo,zh.")]
FromOption = Annotated[
    str | None,
    typer.Option(
        "--from", "-f", help="Source language, or `auto` to detect it (py3langid). Targets equal to it are copied."
    ),
]
TermsOption = Annotated[
    str | None, typer.Option("--terms", help="Comma-separated words the translation must include (TEXT only).")
]
InputOption = Annotated[
    Path | None,
    typer.Option(
        "--input",
        "-i",
        help="File to translate: text, JSONL, TSV, CSV, SRT, Markdown, XLIFF, PO, DOCX or HTML.",
        rich_help_panel=FILE_PANEL,
    ),
]
OutputOption = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        rich_help_panel=FILE_PANEL,
        help="Output path; {lang} is the target code. Default: INPUT.{lang}.EXT beside the input. JSONL, TSV and "
        "CSV hold every target in one file ({lang}: the codes joined by +).",
    ),
]
FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="text, jsonl, tsv, csv, srt, markdown, xliff, po, docx or html. Default: from the extension.",
        rich_help_panel=FILE_PANEL,
    ),
]
FieldOption = Annotated[
    str, typer.Option("--field", help="JSONL: the field to translate; adds FIELD_<code>.", rich_help_panel=FILE_PANEL)
]
ColumnOption = Annotated[
    str,
    typer.Option(
        "--column",
        help="TSV/CSV: the header of the column to translate; adds COLUMN_<code>.",
        rich_help_panel=FILE_PANEL,
    ),
]
GlossaryOption = Annotated[
    Path | None,
    typer.Option(
        "--glossary",
        rich_help_panel=FILE_PANEL,
        help="UTF-8 TSV of required terms, one a line (`#` comments): `source<TAB>target` for every target; or a "
        "first row `source<TAB>LANG<TAB>LANG...` and then a term per language; or one cell, a name kept verbatim. "
        "Segments containing a source term (whole word, any case) are asked for its target term; terms missing "
        "from the output are listed at the end and in --json-log.",
    ),
]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", min=1, help="Pieces sent to the model together.", rich_help_panel=FILE_PANEL)
]
MaxCharsOption = Annotated[
    int,
    typer.Option(
        "--max-chars",
        min=0,
        rich_help_panel=FILE_PANEL,
        help="Segments longer than this are cut into sentence groups of at most this many characters, translated "
        "apart and joined back (0: every sentence alone).",
    ),
]
SkipBadOption = Annotated[
    bool,
    typer.Option(
        "--skip-bad",
        help="Copy malformed JSONL/TSV/CSV records through untranslated (reported).",
        rich_help_panel=FILE_PANEL,
    ),
]
RestartOption = Annotated[
    bool,
    typer.Option(
        "--restart", help="Drop the journal of an unfinished run instead of continuing it.", rich_help_panel=FILE_PANEL
    ),
]
TmOption = Annotated[
    Path | None,
    typer.Option(
        "--tm",
        rich_help_panel=FILE_PANEL,
        help="Translation memory to reuse and fill (SQLite). Default: $BAYLING_HOME/memory.sqlite. Exact hits "
        "are reused without the model; similar units are shown to it as examples.",
    ),
]
NoTmOption = Annotated[bool, typer.Option("--no-tm", help="Use no translation memory.", rich_help_panel=FILE_PANEL)]
TmFuzzyOption = Annotated[
    float,
    typer.Option(
        "--tm-fuzzy",
        min=0.0,
        max=1.0,
        help="Memory units at least this similar (0-1) are given to the model as examples.",
        rich_help_panel=FILE_PANEL,
    ),
]
OverwriteFinalOption = Annotated[
    bool,
    typer.Option(
        "--overwrite-final",
        help="XLIFF: translate units marked final or signed off too.",
        rich_help_panel=FILE_PANEL,
    ),
]
NoFuzzyOption = Annotated[
    bool,
    typer.Option("--no-fuzzy", help="PO: do not mark machine translations fuzzy.", rich_help_panel=FILE_PANEL),
]
JsonLogOption = Annotated[
    str | None,
    typer.Option(
        "--json-log",
        help="Write a JSON event per batch and a summary to FILE (`-`: stdout).",
        rich_help_panel=FILE_PANEL,
    ),
]


def translate(
    text: TextArgument = None,
    to: ToOption = ...,
    source: FromOption = None,
    glossary: TermsOption = None,
    input_path: InputOption = None,
    output: OutputOption = None,
    file_format: FormatOption = None,
    field: FieldOption = "text",
    column: ColumnOption = "text",
    glossary_file: GlossaryOption = None,
    batch_size: BatchSizeOption = 8,
    max_chars: MaxCharsOption = 500,
    skip_bad: SkipBadOption = False,
    restart: RestartOption = False,
    json_log: JsonLogOption = None,
    tm: TmOption = None,
    no_tm: NoTmOption = False,
    tm_fuzzy: TmFuzzyOption = 0.75,
    overwrite_final: OverwriteFinalOption = False,
    no_fuzzy: NoFuzzyOption = False,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    backend: BackendOption = "auto",
    threads: ThreadsOption = None,
    context: ContextOption = None,
    chat_format: ChatFormatOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = 0.0,
    top_p: TopPOption = 0.95,
    top_k: TopKOption = 40,
    seed: SeedOption = None,
    draft_model: DraftModelOption = None,
    draft_tokens: DraftTokensOption = 8,
    lookup_ngram: LookupNgramOption = 0,
) -> None:
    """Translate TEXT (or each stdin line, or a file with -i) into every --to language.

    One target prints one line per input line; several print `code<TAB>translation`, the targets of
    each input line together in the order given.

    With -i, the output keeps the input's structure: text lines, JSONL fields, TSV/CSV columns, SRT
    numbers and timings (a cue's lines are translated together and re-wrapped to as many lines),
    Markdown code, URLs and front matter. A run that stops (Ctrl-C, a crash) continues where it
    stopped when the same command is run again: finished pieces are kept in OUTPUT.journal.
    """
    from bayling_local.languages import resolve_many

    targets = resolve_many(to)
    speculation = speculation_options(draft_model, draft_tokens, lookup_ngram)
    loaded_args = (model, device, threads, context, chat_format, backend, speculation)
    config = generation_config(None, temperature, top_p, top_k, seed)
    if input_path is None:
        given = {
            "output": output,
            "format": file_format,
            "glossary": glossary_file,
            "json-log": json_log,
            "skip-bad": skip_bad,
            "restart": restart,
            "tm": tm,
            "no-tm": no_tm,
            "overwrite-final": overwrite_final,
            "no-fuzzy": no_fuzzy,
        }
        _reject_file_options(given)
        return _translate_text(text, targets, source, glossary, loaded_args, config, max_tokens)
    if text:
        raise UsageError("give TEXT or -i FILE, not both")
    if glossary:
        raise UsageError("--terms is for TEXT; with -i use --glossary FILE (one term per line)")
    if tm and no_tm:
        raise UsageError("give --tm PATH or --no-tm, not both")
    from bayling_local.translate.batch import BatchOptions
    from bayling_local.translate.glossary import load_glossary

    options = BatchOptions(
        output=output,
        format=file_format,
        source=_source_language(source),
        detect_source=source == AUTO,
        field=field,
        column=column,
        glossary=load_glossary(glossary_file) if glossary_file else None,
        batch_size=batch_size,
        max_chars=max_chars,
        config=config,
        max_tokens=max_tokens,
        skip_bad=skip_bad,
        restart=restart,
        memory=None if no_tm else (tm or _default_memory()),
        tm_fuzzy=tm_fuzzy,
        overwrite_final=overwrite_final,
        mark_fuzzy=not no_fuzzy,
    )
    _translate_file(input_path, targets, options, loaded_args, json_log)


def _default_memory() -> Path:
    from bayling_local.translate.memory import default_path

    return default_path()


def _reject_file_options(given: dict) -> None:
    for name, value in given.items():
        if value:
            raise UsageError(f"--{name} works with -i FILE")


def _source_language(source: str | None):
    from bayling_local.languages import resolve

    return resolve(source) if source and source != AUTO else None


def _translate_text(text, targets, source, terms_text, loaded_args, config, max_tokens) -> None:
    from bayling_local.translate import translate_lines

    source_language = _source_language(source)
    lines = [" ".join(text)] if text else read_stdin_lines()
    if source == AUTO:
        from bayling_local.translate.detect import detect_language

        source_language = detect_language(lines)
    loaded = open_model_for_cli(*loaded_args)
    terms = [t.strip() for t in terms_text.split(",") if t.strip()] if terms_text else []
    several = len(targets) > 1
    for result in translate_lines(
        loaded, lines, targets, source=source_language, glossary=terms, config=config, max_tokens=max_tokens
    ):
        print(f"{result.target.code}\t{result.text}" if several else result.text, flush=True)


def _translate_file(input_path: Path, targets, options, loaded_args, json_log: str | None) -> None:
    from bayling_local.translate.batch import prepare_batch

    plan = prepare_batch(input_path, targets, options)  # bad input fails before the model loads
    loaded = open_model_for_cli(*loaded_args)
    with _json_log(json_log) as log:
        report = _run_with_progress(loaded, plan, log)
        if log is not None:
            log.summary(report)
    _print_report(report, announce=sys.stderr.isatty())


def _run_with_progress(loaded, plan, log):
    from bayling_local.translate.batch import run_batch
    from bayling_local.translate.progress import RichProgressBar, fan_out

    callbacks = [log] if log is not None else []
    try:
        if not sys.stderr.isatty():
            return run_batch(loaded, plan, progress=fan_out(callbacks))
        targets = ",".join(t.code for t in plan.targets)
        with RichProgressBar(f"{plan.input_path.name} → {targets}") as bar:
            return run_batch(loaded, plan, progress=fan_out([*callbacks, bar]))
    except KeyboardInterrupt:
        print(
            f"bayling-local: interrupted; finished pieces are kept in {plan.journal_path}: rerun the same "
            "command to continue",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None


@contextlib.contextmanager
def _json_log(target: str | None):
    from bayling_local.translate.progress import JsonEventLog

    if target is None:
        yield None
    elif target == "-":
        yield JsonEventLog(sys.stdout)
    else:
        try:
            stream = open(target, "w", encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot write the JSON log {target}: {error.strerror}") from None
        with stream:
            yield JsonEventLog(stream)


def _print_report(report, *, announce: bool) -> None:
    problems = (
        [
            f"line {m.line} {m.target}: missing glossary term {m.required!r} (for {m.source_term!r})"
            for m in report.glossary_missing
        ]
        + [f"line {s.line}: copied untranslated ({s.reason})" for s in report.skipped]
        + [f"line {e.line} {e.target}: the model gave no translation; the source was kept" for e in report.empty]
        + [f"line {f.line} {f.target}: flagged for review ({f.problem}); left untranslated" for f in report.flagged]
    )
    if report.glossary_missing:
        print(f"glossary: {len(report.glossary_missing)} required term(s) missing", file=sys.stderr)
    for line in problems[:MAX_REPORTED]:
        print(f"  {line}", file=sys.stderr)
    if len(problems) > MAX_REPORTED:
        print(f"  … and {len(problems) - MAX_REPORTED} more (see --json-log)", file=sys.stderr)
    if announce:
        written = ", ".join(sorted({str(p) for p in report.outputs.values()}))
        print(
            f"wrote {written} ({report.translated} pieces translated, {report.resumed} resumed; memory: "
            f"{report.tm_exact} exact, {report.tm_fuzzy} fuzzy-assisted, {report.fresh} fresh)",
            file=sys.stderr,
        )


def read_stdin_lines() -> list[str]:
    """Stdin as lines of UTF-8 text; a clear error when it is empty or not UTF-8."""
    if sys.stdin is None or sys.stdin.isatty():
        raise InputTextError("no text to translate: give TEXT arguments or pipe lines on stdin")
    from bayling_local.translate.files import decode_utf8

    decoded = decode_utf8(sys.stdin.buffer.read(), "stdin")
    if not decoded.strip():
        raise InputTextError("no text to translate: stdin is empty")
    return decoded.splitlines()
