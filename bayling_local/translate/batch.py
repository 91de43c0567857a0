"""Translate a file into several languages in batches, resumably: the API behind `translate -i`.

`prepare_batch` reads and checks everything that needs no model (format, input, outputs, source
language, pieces to translate), so bad input fails before a model loads; `run_batch` translates the
pieces the journal does not hold yet, batch by batch, then writes every output atomically and removes
the journal. `translate_file` does both. Front ends pass a progress callback and a cancel event.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bayling_local.backends.base import GenerationConfig
from bayling_local.languages import Language
from bayling_local.model import Model
from bayling_local.translate import LENGTH_FACTOR, LENGTH_SLACK, as_one_line, translation_messages
from bayling_local.translate.detect import detect_language
from bayling_local.translate.document import Document, ReadOptions
from bayling_local.translate.files import journal_path, output_paths, read_input, read_input_bytes, write_atomically
from bayling_local.translate.formats import FileFormat, format_for_path, get_format
from bayling_local.translate.glossary import Glossary, GlossaryTerm, missing_terms
from bayling_local.translate.hints import hinted_messages
from bayling_local.translate.journal import Journal, JournalEntry, text_hash
from bayling_local.translate.memory import DEFAULT_FUZZY, MACHINE, REJECTED, FuzzyMatch, MemoryUnit, TranslationMemory
from bayling_local.translate.placeholders import Placeholder, problems
from bayling_local.translate.report import BatchProgress, BatchReport, EmptyTranslation, FlaggedSegment, GlossaryMiss
from bayling_local.translate.segment import DEFAULT_MAX_CHARS, SplitText, join_pieces, split_segment

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BatchOptions",
    "BatchPlan",
    "BatchProgress",
    "BatchReport",
    "WorkItem",
    "prepare_batch",
    "run_batch",
    "translate_file",
]

DEFAULT_BATCH_SIZE = 8
LETTER = re.compile(r"[^\W\d_]")
"""A piece without letters (numbers, punctuation, symbols) is copied, not translated."""


@dataclass(frozen=True)
class BatchOptions:
    """How a file is read, translated and written (the options of `translate -i`)."""

    output: str | None = None
    """Output path; `{lang}` stands for the target code. Default: `INPUT.{lang}.EXT` beside the input."""
    format: str | None = None
    """text, jsonl, tsv, csv, srt or markdown; default: from the input's extension."""
    source: Language | None = None
    """The input's language (sentence rules; targets equal to it are copied). None: not known."""
    detect_source: bool = False
    """Detect the source language (py3langid) when `source` is None."""
    field: str = "text"
    column: str = "text"
    glossary: Glossary | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_chars: int = DEFAULT_MAX_CHARS
    """Segments longer than this are cut into sentence groups of at most this many characters."""
    config: GenerationConfig = dataclasses.field(default_factory=GenerationConfig)  # `field` is an option here
    max_tokens: int | None = None
    """Token limit per piece; None: proportional to the piece's length."""
    skip_bad: bool = False
    restart: bool = False
    """Delete an existing journal instead of continuing it."""
    memory: Path | None = None
    """The translation memory (SQLite) to reuse and fill; None: none."""
    tm_fuzzy: float = DEFAULT_FUZZY
    """Memory units at least this similar (0-1) are given to the model as examples."""
    overwrite_final: bool = False
    """XLIFF: translate units marked final / signed off too."""
    mark_fuzzy: bool = True
    """PO: mark machine translations fuzzy."""


@dataclass(frozen=True)
class WorkItem:
    """One piece of one segment into one target: the unit of batching and of the journal."""

    segment: int
    piece: int
    target: Language
    text: str
    terms: tuple[GlossaryTerm, ...] = ()
    context: str = ""
    notes: str = ""
    placeholders: tuple[Placeholder, ...] = ()
    examples: tuple[FuzzyMatch, ...] = ()
    """Similar units from the translation memory, shown to the model."""
    retry: str = ""
    """What the first answer got wrong, restated on the second try."""

    @property
    def key(self) -> tuple[int, int, str, str]:
        return (self.segment, self.piece, self.target.code, text_hash(self.text))


@dataclass
class BatchPlan:
    """Everything about a run that needs no model: checked input, outputs, and the work to do."""

    input_path: Path
    file_format: FileFormat
    document: Document
    targets: list[Language]
    source: Language | None
    detected_source: bool
    outputs: dict[str, Path]
    journal_path: Path
    splits: list[SplitText]
    items: list[WorkItem]
    options: BatchOptions


ProgressCallback = Callable[[BatchProgress], None]


def translate_file(
    model: Model,
    input_path: str | Path,
    targets: Sequence[Language],
    *,
    options: BatchOptions = BatchOptions(),
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> BatchReport:
    """Translate `input_path` into every target; see `prepare_batch` and `run_batch`."""
    return run_batch(model, prepare_batch(input_path, targets, options), progress=progress, cancel=cancel)


def prepare_batch(input_path: str | Path, targets: Sequence[Language], options: BatchOptions) -> BatchPlan:
    """Read and check the input and outputs, and list the pieces to translate (no model needed)."""
    path = Path(input_path)
    file_format = get_format(options.format) if options.format else format_for_path(path)
    text = read_input_bytes(path) if file_format.binary else read_input(path)
    outputs = output_paths(path, targets, options.output, file_format.one_file_per_target)
    read_options = ReadOptions(
        path.name, options.field, options.column, options.skip_bad, options.overwrite_final, options.mark_fuzzy
    )
    document = file_format.read(text, read_options)
    source, detected = options.source, False
    if source is None and options.detect_source:
        source, detected = detect_language(s.text for s in document.segments), True
    # A segment with placeholders is never cut: a tag pair may span its sentences.
    splits = [
        split_segment(s.text, len(s.text) if s.placeholders else options.max_chars, source) for s in document.segments
    ]
    items = [
        replace(item, context=segment.context, notes=segment.notes, placeholders=segment.placeholders)
        for item in _work_items(splits, list(targets), source, options.glossary)
        for segment in (document.segments[item.segment],)
    ]
    return BatchPlan(
        path,
        file_format,
        document,
        list(targets),
        source,
        detected,
        outputs,
        journal_path(path, targets, options.output),
        splits,
        items,
        options,
    )


def _work_items(
    splits: list[SplitText], targets: list[Language], source: Language | None, glossary: Glossary | None
) -> Iterator[WorkItem]:
    for segment, split in enumerate(splits):
        for target in targets:
            if source is not None and source.code == target.code:
                continue  # already in the target language: copied
            for piece, text in enumerate(split.pieces):
                if LETTER.search(text):
                    terms = tuple(glossary.terms_for(text, target)) if glossary else ()
                    yield WorkItem(segment, piece, target, text, terms)


def run_batch(
    model: Model,
    plan: BatchPlan,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> BatchReport:
    """Translate what the journal lacks, then write the outputs and remove the journal.

    Returns with `completed=False` (journal kept, no output written) when `cancel` is set; the check
    is between batches. A KeyboardInterrupt leaves the journal as it was after the last batch.
    """
    journal = Journal.open(plan.journal_path, journal_settings(model, plan), restart=plan.options.restart)
    memory = TranslationMemory.open(plan.options.memory) if plan.options.memory is not None else None
    run = _Run(model, plan, journal, progress, memory)
    try:
        if run.translate_pending(cancel):
            _write_outputs(plan, journal, run.report)
            journal.remove()
            run.report.completed = True
        return run.finish()
    finally:
        journal.close()
        if memory is not None:
            memory.close()


@dataclass
class _Run:
    """One call of `run_batch`: the journal it continues and the report it fills."""

    model: Model
    plan: BatchPlan
    journal: Journal
    progress: ProgressCallback | None
    memory: TranslationMemory | None = None
    started: float = field(default_factory=time.monotonic)
    report: BatchReport = field(init=False)

    def __post_init__(self) -> None:
        plan = self.plan
        self.report = BatchReport(
            plan.input_path,
            plan.file_format.name,
            plan.outputs,
            plan.targets,
            plan.source,
            plan.detected_source,
            len(plan.document.segments),
            len(plan.items),
            skipped=list(plan.document.skipped),
        )

    def translate_pending(self, cancel: threading.Event | None) -> bool:
        """Translate, batch by batch, the pieces the journal lacks; False when cancelled."""
        pending = [item for item in self.plan.items if self.journal.get(item.key) is None]
        self.report.resumed = len(self.plan.items) - len(pending)
        if self.memory is not None:
            pending = self.reuse_memory(pending)
        size = max(1, self.plan.options.batch_size)
        batches = [pending[i : i + size] for i in range(0, len(pending), size)]
        self.notify(0, len(batches))
        for number, batch in enumerate(batches, start=1):
            if cancel is not None and cancel.is_set():
                return False
            entries = _translate_checked(self.model, batch, self.plan.options)
            if entries is None:  # the backend honoured `cancel` mid-batch: unfinished, not journaled
                return False
            self.journal.record(entries)
            self.remember(batch, entries)
            self.report.translated += len(entries)
            self.report.tokens += sum(entry.tokens for entry in entries)
            self.notify(number, len(batches))
        return True

    def reuse_memory(self, pending: list[WorkItem]) -> list[WorkItem]:
        """Journal the exact memory hits (no model call); give the rest their fuzzy matches as examples."""
        hits, rest = [], []
        for item in pending:
            unit = self.memory.exact(item.text, _code(self.plan.source), item.target.code, item.context)
            if unit is not None:
                flag = unit.target if unit.origin == REJECTED else ""
                text = "" if flag else unit.target
                hits.append(JournalEntry(item.segment, item.piece, item.target.code, item.key[3], text, 0, flag))
                continue
            examples = self.memory.fuzzy(
                item.text, _code(self.plan.source), item.target.code, self.plan.options.tm_fuzzy
            )
            rest.append(replace(item, examples=tuple(examples)))
        if hits:
            self.journal.record(hits)
        self.report.tm_exact += len(hits)
        self.report.tm_fuzzy += sum(1 for item in rest if item.examples)
        return rest

    def remember(self, batch: list[WorkItem], entries: list[JournalEntry]) -> None:
        """Store what the model wrote; a rejected answer is stored as its problem, never as a translation."""
        if self.memory is None:
            return
        name = self.model.name
        source = _code(self.plan.source)
        self.memory.add(
            MemoryUnit(
                item.text,
                entry.flag or entry.text,
                source,
                item.target.code,
                item.context,
                REJECTED if entry.flag else MACHINE,
                name,
            )
            for item, entry in zip(batch, entries)
            if entry.text or entry.flag
        )

    def notify(self, batch: int, batches: int) -> None:
        if self.progress is not None:
            report, elapsed = self.report, time.monotonic() - self.started
            done = report.resumed + report.tm_exact + report.translated
            self.progress(
                BatchProgress(
                    done,
                    len(self.plan.items),
                    report.resumed,
                    batch,
                    batches,
                    report.tokens,
                    elapsed,
                    tm_exact=report.tm_exact,
                    tm_fuzzy=report.tm_fuzzy,
                )
            )

    def finish(self) -> BatchReport:
        self.report.seconds = time.monotonic() - self.started
        return self.report


def _code(language: Language | None) -> str:
    return language.code if language is not None else ""


def _translate_checked(model: Model, batch: list[WorkItem], options: BatchOptions) -> list[JournalEntry] | None:
    """`_translate`, then once more for answers that broke their placeholders (the rule restated); an
    answer still broken is flagged, so no writer ever puts it into a file."""
    entries = _translate(model, batch, options)
    if entries is None:
        return None
    broken = {
        i: "; ".join(found) for i, item in enumerate(batch) if (found := problems(item.placeholders, entries[i].text))
    }
    if not broken:
        return entries
    retried = _translate(model, [replace(batch[i], retry=problem) for i, problem in broken.items()], options)
    if retried is None:
        return None
    for i, entry in zip(broken, retried):
        found = problems(batch[i].placeholders, entry.text)
        entries[i] = replace(entry, tokens=entries[i].tokens + entry.tokens, flag="; ".join(found))
    return entries


def _messages(item: WorkItem) -> list:
    glossary = [term.target for term in item.terms]
    if not (item.context or item.notes or item.placeholders or item.examples or item.retry):
        return translation_messages(item.text, item.target, glossary=glossary)
    return hinted_messages(
        item.text,
        item.target,
        glossary=glossary,
        context=item.context,
        notes=item.notes,
        placeholders=item.placeholders,
        examples=item.examples,
        retry=item.retry,
    )


def _translate(model: Model, batch: list[WorkItem], options: BatchOptions) -> list[JournalEntry] | None:
    """The batch's journal entries; None when generation was cancelled before it finished."""
    conversations = [_messages(item) for item in batch]
    completions = model.chat_batch(conversations, _batch_config(model, batch, options))
    if any(c.finish_reason == "cancelled" for c in completions):
        return None
    return [
        JournalEntry(item.segment, item.piece, item.target.code, item.key[3], as_one_line(c.text), len(c.token_ids))
        for item, c in zip(batch, completions)
    ]


def _batch_config(model: Model, batch: list[WorkItem], options: BatchOptions) -> GenerationConfig:
    """The user's token limit, else one proportional to the batch's longest piece."""
    limit = options.max_tokens or max(
        LENGTH_FACTOR * len(model.backend.tokenize(item.text)) + LENGTH_SLACK for item in batch
    )
    return replace(options.config, max_tokens=limit)


def _write_outputs(plan: BatchPlan, journal: Journal, report: BatchReport) -> None:
    texts = {target.code: _segment_texts(plan, journal, target, report) for target in plan.targets}
    flags = _flags(plan, journal, report)
    write = plan.file_format.write
    if plan.file_format.takes_flags:
        write = functools.partial(write, flags=flags)
    if plan.file_format.one_file_per_target:
        rendered = {code: write(plan.document, {code: texts[code]}) for code in plan.outputs}
        for code, path in plan.outputs.items():  # every output rendered (and checked) before any is written
            write_atomically(path, rendered[code])
    else:
        write_atomically(next(iter(plan.outputs.values())), write(plan.document, texts))


def _flags(plan: BatchPlan, journal: Journal, report: BatchReport) -> dict[str, dict[int, str]]:
    """Target code -> segment index -> why its translation was rejected; each also becomes a report line."""
    flags: dict[str, dict[int, str]] = {target.code: {} for target in plan.targets}
    for item in plan.items:
        entry = journal.get(item.key)
        if entry is not None and entry.flag:
            flags[item.target.code][item.segment] = entry.flag
            line = plan.document.segments[item.segment].line
            report.flagged.append(FlaggedSegment(line, item.target.code, entry.flag))
    return flags


def _segment_texts(plan: BatchPlan, journal: Journal, target: Language, report: BatchReport) -> list[str]:
    """Every segment in `target`, in order."""
    items = {(item.segment, item.piece): item for item in plan.items if item.target.code == target.code}
    return [_segment_text(plan, index, items, target, journal, report) for index in range(len(plan.splits))]


def _segment_text(
    plan: BatchPlan, index: int, items: dict, target: Language, journal: Journal, report: BatchReport
) -> str:
    segment, split = plan.document.segments[index], plan.splits[index]
    keys = [(index, piece) for piece in range(len(split.pieces))]
    if not any(key in items for key in keys):
        return segment.text  # nothing to translate: no letters, or already in the target language
    pieces = [
        _piece_text(items.get(key), source_text, segment.line, journal, report)
        for key, source_text in zip(keys, split.pieces)
    ]
    return join_pieces(split, pieces, target)


def _piece_text(item: WorkItem | None, source_text: str, line: int, journal: Journal, report: BatchReport) -> str:
    """A piece's translation from the journal (the source where there was none), checked for terms."""
    if item is None:
        return source_text
    entry = journal.get(item.key)
    translation = entry.text
    if entry.flag:
        return source_text  # rejected: the writer marks the segment for review instead
    if not translation:
        report.empty.append(EmptyTranslation(line, item.target.code))
        translation = source_text
    report.glossary_missing += [
        GlossaryMiss(line, item.target.code, term.source, term.target)
        for term in missing_terms(list(item.terms), translation)
    ]
    return translation


def journal_settings(model: Model, plan: BatchPlan) -> dict:
    """What changes the translations: a journal written under other settings is not continued."""
    config = plan.options.config
    probe = translation_messages("{text}", plan.targets[0], glossary=["{term}"])
    return {
        "model": _model_identity(model),
        "targets": [t.code for t in plan.targets],
        "glossary": plan.options.glossary.as_data() if plan.options.glossary else None,
        "prompt": model.render(probe),
        "generation": {
            "max_tokens": plan.options.max_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": config.top_k,
            "repeat_penalty": config.repeat_penalty,
            "seed": config.seed,
        },
    }


def _model_identity(model: Model) -> dict:
    # Name and size rather than the path: the same file reached by another path continues the journal.
    path = model.source.path
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {"name": model.name, "size": size, "format": model.source.format}
