"""JSON Lines: one object per line; `--field` is translated into `<field>_<code>` per target.

Other fields are kept in their order; blank lines are kept; `--skip-bad` copies a malformed line (or one
without the field) through untranslated and reports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from bayling_local.translate.document import (
    Document,
    ReadOptions,
    Segment,
    SkippedLine,
    bad_input,
    split_lines,
)

SKIP_HINT = "fix it, or pass --skip-bad to copy such lines through untranslated"


def output_field(field: str, code: str) -> str:
    return f"{field}_{code}"


def read_jsonl(text: str, options: ReadOptions) -> Document:
    document = Document([], {"field": options.field, "lines": []})
    for number, (content, ending) in enumerate(split_lines(text), start=1):
        if not content.strip():
            document.layout["lines"].append((content, ending))
            continue
        record, problem = _parse(content, options.field)
        if problem is None:
            document.layout["lines"].append((record, len(document.segments), ending))
            document.segments.append(Segment(record[options.field], number))
        elif options.skip_bad:
            document.skipped.append(SkippedLine(number, problem))
            document.layout["lines"].append((content, ending))
        else:
            raise bad_input(options, number, problem, SKIP_HINT)
    return document


def _parse(content: str, field: str) -> tuple[dict | None, str | None]:
    try:
        record = json.loads(content)
    except json.JSONDecodeError as error:
        return None, f"not valid JSON ({error.msg} at column {error.colno})"
    if not isinstance(record, dict):
        return None, f"a JSON {type(record).__name__}, not an object"
    if field not in record:
        fields = ", ".join(record) or "none"
        return None, f"no field {field!r} (fields: {fields}; choose one with --field)"
    if not isinstance(record[field], str):
        return None, f"field {field!r} is not a string"
    return record, None


def write_jsonl(document: Document, translations: Mapping[str, Sequence[str]]) -> str:
    field = document.layout["field"]
    out = []
    for line in document.layout["lines"]:
        if len(line) == 2:  # blank or skipped: copied as it was
            out.append(line[0] + line[1])
            continue
        record, index, ending = line
        added = {output_field(field, code): texts[index] for code, texts in translations.items()}
        out.append(json.dumps({**record, **added}, ensure_ascii=False) + ending)
    return "".join(out)
