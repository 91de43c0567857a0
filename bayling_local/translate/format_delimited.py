"""TSV and CSV with a header row: `--column` is translated into a `<column>_<code>` column per target.

TSV is split on tabs exactly (no quoting, as most TSV tools write it); CSV goes through the `csv` module
(quoted cells may hold commas and line breaks) and is written with minimal quoting. A row too short to
hold the column is an error, or with `--skip-bad` is copied through untranslated and reported.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bayling_local.errors import InputTextError
from bayling_local.translate.document import (
    Document,
    ReadOptions,
    Segment,
    SkippedLine,
    bad_input,
    first_line_ending,
    split_lines,
)
from bayling_local.translate.format_jsonl import SKIP_HINT, output_field


@dataclass
class Table:
    header: list[str]
    column: str
    rows: list[tuple[list[str], int | None]]
    """Cells of each data row and the segment of its column (None: copied as it was)."""
    line_ending: str
    final_ending: bool
    """Whether the input's last line ends with a line break (kept as it was)."""


def read_tsv(text: str, options: ReadOptions) -> Document:
    records = [(number, content.split("\t")) for number, (content, _) in enumerate(split_lines(text), 1)]
    return _read_records(records, text, options)


def read_csv(text: str, options: ReadOptions) -> Document:
    reader = csv.reader(io.StringIO(text, newline=""))
    records, start = [], 1
    try:
        for cells in reader:
            records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as error:
        raise bad_input(options, start, f"not valid CSV ({error})", "fix the quoting") from None
    return _read_records(records, text, options)


def _read_records(records: list[tuple[int, list[str]]], text: str, options: ReadOptions) -> Document:
    if not records:
        raise InputTextError(f"{options.name} is empty; a header row naming the columns is needed")
    header = records[0][1]
    if options.column not in header:
        raise InputTextError(
            f"{options.name} has no column {options.column!r} in its header row (columns: "
            f"{', '.join(header)}); choose one with --column"
        )
    position = header.index(options.column)
    table = Table(header, options.column, [], first_line_ending(text), text.endswith(("\n", "\r")))
    document = Document([], table)
    for number, cells in records[1:]:
        if cells == [] or cells == [""]:
            document.layout.rows.append((cells, None))
        elif len(cells) <= position:
            problem = f"{len(cells)} cells, no {options.column!r} column"
            if not options.skip_bad:
                raise bad_input(options, number, problem, SKIP_HINT)
            document.skipped.append(SkippedLine(number, problem))
            document.layout.rows.append((cells, None))
        else:
            document.layout.rows.append((cells, len(document.segments)))
            document.segments.append(Segment(cells[position], number))
    return document


def _translated_rows(table: Table, translations: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Header and rows with a column per target (replacing one of that name from an earlier run)."""
    names = [output_field(table.column, code) for code in translations]
    header = table.header + [name for name in names if name not in table.header]
    places = [header.index(name) for name in names]
    rows = [header]
    for cells, index in table.rows:
        if index is None:
            rows.append(cells)
            continue
        row = cells + [""] * (len(header) - len(cells))
        for place, texts in zip(places, translations.values()):
            row[place] = texts[index]
        rows.append(row)
    return rows


def write_tsv(document: Document, translations: Mapping[str, Sequence[str]]) -> str:
    table = document.layout
    lines = ["\t".join(_tsv_cell(cell) for cell in row) for row in _translated_rows(table, translations)]
    return _joined(lines, table)


def _tsv_cell(cell: str) -> str:
    # A tab or line break inside a translation would shift the columns.
    return " ".join(cell.split()) if "\t" in cell or "\n" in cell or "\r" in cell else cell


def write_csv(document: Document, translations: Mapping[str, Sequence[str]]) -> str:
    table = document.layout
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator=table.line_ending).writerows(_translated_rows(table, translations))
    text = buffer.getvalue()
    return text if table.final_ending else text.removesuffix(table.line_ending)


def _joined(lines: list[str], table: Table) -> str:
    text = table.line_ending.join(lines)
    return text + table.line_ending if table.final_ending else text
