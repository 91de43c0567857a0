"""Readers for instruction sets: Alpaca (`instruction`/`input`/`output`), messages and ShareGPT JSONL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from bayling_local.errors import UnknownLanguageError
from bayling_local.languages import resolve
from bayling_local.training.data.records import DataError, Example, messages_from_record, read_jsonl_records

FORMAT_KEYS = {"alpaca": "instruction", "messages": "messages", "sharegpt": "conversations"}


def read_instructions(
    paths: list[Path], *, source: str, group: str, task: str, language: str | None, fmt: str = "auto"
) -> Iterator[Example]:
    """Every conversation of the files, labelled with its language (the line's own, else `language`)."""
    default_code = _language_code(language, f"source '{source}'") if language else None
    for path in paths:
        for where, record in read_jsonl_records(path):
            _check_format(record, fmt, where)
            messages = messages_from_record(record, where)
            code = _line_language(record, default_code, where, source)
            yield Example(messages, code, task, group, source)


def _check_format(record: object, fmt: str, where: str) -> None:
    if fmt == "auto" or not isinstance(record, dict):
        return
    if FORMAT_KEYS[fmt] not in record:
        raise DataError(f"{where}: the source is declared '{fmt}' but the line has no '{FORMAT_KEYS[fmt]}' field")


def _line_language(record: dict, default_code: str | None, where: str, source: str) -> str:
    if record.get("language"):
        return _language_code(str(record["language"]), where)
    if default_code is None:
        raise DataError(f"{where}: the line has no 'language' and source '{source}' sets no `language`; add one")
    return default_code


def _language_code(name: str, where: str) -> str:
    try:
        return resolve(name).code
    except UnknownLanguageError as error:
        raise UnknownLanguageError(f"{where}: {error}") from None
