"""Glossaries for `translate --glossary`: required translations of terms, checked in the output.

The file is UTF-8 text, one term a line, cells separated by a tab; blank lines and lines starting with
`#` are ignored:

    source<TAB>swh_Latn<TAB>zho_Hans     optional header: `source`, then target languages
    Nairobi<TAB>Nairobi<TAB>内罗毕        with a header: one cell per language (empty: no requirement)
    bank<TAB>benki                      without a header: the target term, for every target
    BayLing                             one cell: a name to keep verbatim in every target

A segment's prompt carries BayLing's constrained-translation hint with the target terms of the source
terms it contains (matched as whole words, ignoring case), and the output is checked for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bayling_local.errors import BaylingError, InputTextError
from bayling_local.languages import Language, resolve

HEADER_WORD = "source"
EVERY_TARGET = "*"
# Characters of scripts written without spaces: no word boundary is required next to them.
UNSPACED_CHARS = re.compile(
    r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
)


@dataclass(frozen=True)
class GlossaryTerm:
    source: str
    target: str


@dataclass(frozen=True)
class GlossaryRow:
    source: str
    targets: Mapping[str, str]
    """Target language code (or `*` for every target) -> the required term."""


@dataclass(frozen=True)
class Glossary:
    rows: tuple[GlossaryRow, ...]

    def terms_for(self, text: str, target: Language) -> list[GlossaryTerm]:
        """The required terms for the source terms `text` contains."""
        terms = []
        for row in self.rows:
            required = row.targets.get(target.code) or row.targets.get(EVERY_TARGET)
            if required and term_occurs(row.source, text):
                terms.append(GlossaryTerm(row.source, required))
        return terms

    def as_data(self) -> list:
        """A JSON-ready form (for the settings fingerprint of a resume journal)."""
        return [[row.source, sorted(row.targets.items())] for row in self.rows]


def load_glossary(path: str | Path) -> Glossary:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputTextError(f"glossary {path} does not exist") from None
    except IsADirectoryError:
        raise InputTextError(f"glossary {path} is a folder; give a TSV file") from None
    except UnicodeDecodeError:
        raise InputTextError(f"glossary {path} is not UTF-8 text; convert it first") from None
    return parse_glossary(text, path.name)


def parse_glossary(text: str, name: str = "glossary") -> Glossary:
    rows = [(n, line.split("\t")) for n, line in enumerate(text.splitlines(), 1) if _is_row(line)]
    languages: list[str] | None = None
    if rows and rows[0][1][0].strip().lower() == HEADER_WORD:
        number, header = rows.pop(0)
        languages = [_header_language(cell, name, number) for cell in header[1:]]
    return Glossary(tuple(_row(cells, languages, name, number) for number, cells in rows))


def _is_row(line: str) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith("#")


def _header_language(cell: str, name: str, number: int) -> str:
    try:
        return resolve(cell.strip()).code
    except BaylingError as error:
        raise InputTextError(f"{name} line {number}: header: {error}") from None


def _row(cells: list[str], languages: list[str] | None, name: str, number: int) -> GlossaryRow:
    cells = [cell.strip() for cell in cells]
    source, rest = cells[0], cells[1:]
    if not source:
        raise InputTextError(f"{name} line {number}: the first cell (the source term) is empty")
    if not rest or not any(rest):
        return GlossaryRow(source, {EVERY_TARGET: source})
    if languages is None:
        if len(rest) > 1:
            raise InputTextError(
                f"{name} line {number}: {len(cells)} cells without a header; start the file with "
                "`source<TAB>LANGUAGE<TAB>...` to give a term per target language"
            )
        return GlossaryRow(source, {EVERY_TARGET: rest[0]})
    if len(rest) > len(languages):
        raise InputTextError(f"{name} line {number}: {len(cells)} cells, but the header names {len(languages) + 1}")
    return GlossaryRow(source, {code: term for code, term in zip(languages, rest) if term})


def term_occurs(term: str, text: str) -> bool:
    """Whether `term` is in `text` as a whole word (ignoring case); any substring in unspaced scripts."""
    before = "" if UNSPACED_CHARS.match(term[0]) else r"(?<!\w)"
    after = "" if UNSPACED_CHARS.match(term[-1]) else r"(?!\w)"
    return re.search(before + re.escape(term) + after, text, re.IGNORECASE) is not None


def missing_terms(terms: list[GlossaryTerm], translation: str) -> list[GlossaryTerm]:
    return [term for term in terms if not term_occurs(term.target, translation)]
