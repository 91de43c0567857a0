"""Translation for the translate screen, built on `bayling_local.translate`'s own pieces.

Text mode: `translate_text` returns a finished string; the screen wants pieces as they arrive, so this
streams `stream_translation` (the same prompt and length limit) and applies the same one-line cleanup.
File mode: the formats come from the registry (`translate.formats.FORMATS`), the options become the same
`BatchOptions` the CLI builds, and the outputs are named by the same `output_paths`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bayling_local.errors import BaylingError
from bayling_local.languages import Language
from bayling_local.model import Model
from bayling_local.translate import as_one_line, passes_through, stream_translation
from bayling_local.translate.batch import BatchOptions, BatchProgress, BatchReport
from bayling_local.translate.files import output_paths
from bayling_local.translate.formats import FORMATS, format_for_path, get_format
from bayling_local.translate.memory import default_path as default_memory_path

FROM_EXTENSION = "auto"
"""The format choice that lets the input's extension decide, as `translate -i` does without --format."""

OnPiece = Callable[[str], None]


def stream_line(
    model: Model,
    line: str,
    target: Language,
    on_piece: OnPiece,
    *,
    source: Language | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Translate one line, calling `on_piece` with each piece; returns what `translate_text` would."""
    if passes_through(line, source, target):
        return line
    stream = stream_translation(model, line, target, cancel=cancel)
    for piece in stream:
        on_piece(piece)
    return as_one_line(stream.completion.text if stream.completion else "")


def stream_text(
    model: Model,
    text: str,
    target: Language,
    on_piece: OnPiece,
    on_line: Callable[[str], None],
    *,
    source: Language | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Each line of `text` in turn (blank lines kept), so a translation keeps the source's layout."""
    for line in text.splitlines():
        if cancel is not None and cancel.is_set():
            return
        on_line(stream_line(model, line, target, on_piece, source=source, cancel=cancel))


# --- file mode ----------------------------------------------------------------------------------


def format_choices() -> list[tuple[str, str]]:
    """(label, value) for the format picker: the extension's guess, then every registered format."""
    registered = [(f"{f.name} ({' '.join(f.extensions)})", f.name) for f in FORMATS.values()]
    return [("from the extension", FROM_EXTENSION), *registered]


def formats_hint() -> str:
    """The registered formats, for the input's placeholder."""
    return ", ".join(FORMATS)


@dataclass(frozen=True)
class FileRequest:
    """What the file form holds; `options()` makes the `BatchOptions` the CLI would make from the same choices."""

    input: Path
    output: str | None
    format: str
    source: Language | None
    batch_size: int
    restart: bool
    memory: bool

    def options(self) -> BatchOptions:
        return BatchOptions(
            output=self.output,
            format=None if self.format == FROM_EXTENSION else self.format,
            source=self.source,
            detect_source=self.source is None,
            restart=self.restart,
            batch_size=self.batch_size,
            memory=default_memory_path() if self.memory else None,  # on unless unticked, as without --no-tm
        )


def planned_outputs(request: FileRequest, targets: list[Language]) -> str:
    """The files a run would write (one per target, or one shared), or why it cannot run, in one line."""
    if not targets:
        return "add a target language"
    try:
        chosen = get_format(request.format) if request.format != FROM_EXTENSION else format_for_path(request.input)
        outputs = output_paths(request.input, targets, request.output, chosen.one_file_per_target)
    except BaylingError as error:
        return str(error)
    return f"{chosen.name} → " + ", ".join(sorted({str(path) for path in outputs.values()}))


def memory_line(exact: int, fuzzy: int, fresh: int) -> str:
    return f"memory: {exact} exact hits · {fuzzy} fuzzy-assisted · {fresh} fresh translations"


def progress_memory_line(progress: BatchProgress) -> str:
    """While a run goes: its exact hits (already done) and how the rest is being translated."""
    return memory_line(progress.tm_exact, progress.tm_fuzzy, progress.fresh)


def report_memory_line(report: BatchReport) -> str:
    return memory_line(report.tm_exact, report.tm_fuzzy, report.fresh)
