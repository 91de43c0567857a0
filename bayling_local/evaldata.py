"""Readers for public evaluation sets, read in place: FLORES-200, XCOPA and Belebele.

Each reader takes a folder, a `.tar.xz`/`.tar.gz`/`.tar` archive (read member by member, never unpacked
to disk, because the maintainers ask that the text not be re-hosted in plain form) or a folder that
holds the archive under its usual name. Languages are anything `bayling_local.languages.resolve`
accepts (`sw`, `swh_Latn`, `Swahili`).
"""

from __future__ import annotations

import functools
import json
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bayling_local.errors import UsageError
from bayling_local.languages import resolve

FLORES_ARCHIVE = "flores200_dev_devtest_204langs.tar.xz"
XCOPA_ARCHIVE = "xcopa.tar.xz"
FLORES_SPLITS = ("dev", "devtest")
XCOPA_SPLITS = ("test", "val")
ARCHIVE_SUFFIXES = (".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar")
# XCOPA's `question` (cause/effect) is wrong for many th, tr and sw items upstream (and for four id/it
# items); these six languages agree item by item, so their majority is taken for every language.
XCOPA_QUESTION_SOURCES = ("et", "ht", "qu", "ta", "vi", "zh")


class EvalDataError(UsageError):
    """An evaluation set that is missing, lacks the language asked for, or cannot be parsed."""


@dataclass(frozen=True)
class XcopaItem:
    """One XCOPA item: which of two alternatives is the cause (or effect) of the premise."""

    idx: int
    premise: str
    choice1: str
    choice2: str
    question: str
    """`cause` or `effect` (corrected from the agreeing languages, see XCOPA_QUESTION_SOURCES)."""
    label: int
    """0 for choice1, 1 for choice2."""


@dataclass(frozen=True)
class BelebeleItem:
    """One Belebele item: a FLORES passage, a question and four answers."""

    passage: str
    question: str
    answers: tuple[str, str, str, str]
    label: int
    """0-based index of the correct answer (the file's `correct_answer_num` is 1-based)."""
    dialect: str = ""


# --- locating files: a folder or an archive -------------------------------------------------------


class _Source:
    """A folder or a tar archive, addressed by posix member paths relative to its root."""

    def __init__(self, path: Path):
        self.path = path
        self.is_archive = path.is_file()

    def names(self) -> tuple[str, ...]:
        if self.is_archive:
            return _archive_names(str(self.path), self.path.stat().st_mtime_ns)
        return tuple(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())

    def read(self, names: Iterable[str]) -> dict[str, bytes]:
        """The bytes of each member, in one pass over an archive."""
        wanted = set(names)
        if not self.is_archive:
            return {name: (self.path / name).read_bytes() for name in wanted}
        found: dict[str, bytes] = {}
        with _open_archive(self.path) as archive:
            for member in archive:
                if member.name in wanted and member.isfile():
                    found[member.name] = archive.extractfile(member).read()
                    if len(found) == len(wanted):
                        break
        return found


def _open_archive(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise EvalDataError(f"{path} is not a readable tar archive ({error})") from error


@functools.lru_cache(maxsize=8)
def _archive_names(path: str, mtime_ns: int) -> tuple[str, ...]:
    try:
        with _open_archive(Path(path)) as archive:
            return tuple(m.name for m in archive if m.isfile())
    except (tarfile.TarError, EOFError, OSError) as error:
        raise EvalDataError(f"{path} is truncated or corrupt ({error})") from error


def _source(path: str | Path, archive_name: str, what: str) -> _Source:
    path = Path(path).expanduser()
    if not path.exists():
        raise EvalDataError(f"{what} data not found: {path} does not exist")
    if path.is_dir() and (path / archive_name).is_file():
        path = path / archive_name
    if path.is_file() and not path.name.endswith(ARCHIVE_SUFFIXES):
        raise EvalDataError(f"{path} is not a folder or a tar archive of {what}")
    return _Source(path)


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise EvalDataError(f"{name} is not UTF-8 text (byte {error.start})") from None


# --- FLORES-200 -----------------------------------------------------------------------------------


def flores_languages(path: str | Path) -> list[str]:
    """FLORES-200 codes with a file in `path` (either split), sorted."""
    source = _source(path, FLORES_ARCHIVE, "FLORES-200")
    codes = {_flores_code(name) for name in source.names()}
    return sorted(code for code in codes if code)


def _flores_code(name: str) -> str | None:
    member = PurePosixPath(name)
    if member.parent.name in FLORES_SPLITS and member.suffix == f".{member.parent.name}":
        return member.stem
    return None


def flores_sentences(path: str | Path, code: str, split: str = "devtest", limit: int | None = None) -> list[str]:
    """The sentences of one language in one split (line N is the same sentence in every language)."""
    return flores_parallel(path, [code], split, limit)[resolve(code).code]


def flores_parallel(
    path: str | Path, codes: Iterable[str], split: str = "devtest", limit: int | None = None
) -> dict[str, list[str]]:
    """The sentences of several languages at once (one pass over an archive), keyed by FLORES code."""
    if split not in FLORES_SPLITS:
        raise EvalDataError(f"unknown FLORES-200 split '{split}'; choose {' or '.join(FLORES_SPLITS)}")
    source = _source(path, FLORES_ARCHIVE, "FLORES-200")
    languages = list(dict.fromkeys(resolve(code).code for code in codes))
    members = {code: _flores_member(source, code, split) for code in languages}
    contents = source.read(members.values())
    return {code: _lines(contents[members[code]], members[code], limit) for code in languages}


def _flores_member(source: _Source, code: str, split: str) -> str:
    suffix = f"{split}/{code}.{split}"
    matches = sorted((n for n in source.names() if n == suffix or n.endswith("/" + suffix)), key=len)
    if not matches:
        raise EvalDataError(
            f"{source.path} has no FLORES-200 {split} file for {code} ({suffix}); "
            "`bayling-local languages` lists the codes"
        )
    return matches[0]


def _lines(data: bytes, name: str, limit: int | None) -> list[str]:
    lines = _decode(data, name).splitlines()
    return lines[:limit] if limit is not None else lines


# --- XCOPA ----------------------------------------------------------------------------------------


def xcopa_languages(path: str | Path) -> list[str]:
    """XCOPA language codes (ISO 639-1, as the data names them) in `path`, sorted."""
    source = _source(path, XCOPA_ARCHIVE, "XCOPA")
    return sorted({lang for name in source.names() for lang in [_xcopa_lang(name)] if lang})


def _xcopa_lang(name: str) -> str | None:
    member = PurePosixPath(name)
    parts = member.name.split(".")
    if len(parts) == 3 and parts[2] == "jsonl" and parts[0] in XCOPA_SPLITS and parts[1] == member.parent.name:
        return parts[1]
    return None


def xcopa_items(
    path: str | Path, lang: str, split: str = "test", limit: int | None = None, *, fix_questions: bool = True
) -> list[XcopaItem]:
    """XCOPA items of one language; `question` is taken from the agreeing languages when present.

    `path` is the XCOPA folder or archive (`xcopa/data/<lang>/<split>.<lang>.jsonl`), or one JSONL file.
    """
    if split not in XCOPA_SPLITS:
        raise EvalDataError(f"unknown XCOPA split '{split}'; choose {' or '.join(XCOPA_SPLITS)}")
    file = Path(path).expanduser()
    if file.is_file() and file.suffix == ".jsonl":
        return _xcopa_from_file(file, limit)
    source = _source(path, XCOPA_ARCHIVE, "XCOPA")
    code = xcopa_code(source.path, lang)
    references = [r for r in XCOPA_QUESTION_SOURCES if r != code] if fix_questions else []
    members = {name: member for name in [code, *references] if (member := _xcopa_member(source, name, split))}
    contents = source.read(members.values())
    items = _xcopa_parse(contents[members[code]], members[code])
    questions = _majority_questions(
        [_xcopa_parse(contents[members[r]], members[r]) for r in references if r in members]
    )
    fixed = [_with_question(item, questions) for item in items]
    return fixed[:limit] if limit is not None else fixed


def xcopa_code(path: str | Path, lang: str) -> str:
    """The XCOPA folder name (ISO 639-1) for a language the user named any way."""
    available = xcopa_languages(path)
    if lang in available:
        return lang
    language = resolve(lang)
    code = language.iso639_1 or language.iso639_3
    if code not in available:
        raise EvalDataError(f"XCOPA has no {language.english_name} ({language.code}); it has: {', '.join(available)}")
    return code


def _xcopa_member(source: _Source, code: str, split: str) -> str | None:
    suffix = f"{code}/{split}.{code}.jsonl"
    matches = [n for n in source.names() if n == suffix or n.endswith("/" + suffix)]
    # `data/` holds the human translations; `data-gmt/` machine translations of the same items.
    preferred = [n for n in matches if PurePosixPath(n).parent.parent.name == "data"]
    return min(preferred or matches, key=len, default=None)


def _xcopa_from_file(file: Path, limit: int | None) -> list[XcopaItem]:
    items = _xcopa_parse(file.read_bytes(), str(file))
    return items[:limit] if limit is not None else items


def _xcopa_parse(data: bytes, name: str) -> list[XcopaItem]:
    rows = _jsonl(data, name)
    try:
        return [
            XcopaItem(
                int(row.get("idx", i)),
                row["premise"],
                row["choice1"],
                row["choice2"],
                row["question"],
                int(row["label"]),
            )
            for i, row in enumerate(rows)
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise EvalDataError(
            f"{name} is not XCOPA-style JSONL (premise, choice1, choice2, question, label): {error!r}"
        ) from None


def _majority_questions(references: list[list[XcopaItem]]) -> list[str | None]:
    if not references:
        return []
    length = min(len(items) for items in references)
    votes = [Counter(items[i].question for items in references) for i in range(length)]
    return [vote.most_common(1)[0][0] for vote in votes]


def _with_question(item: XcopaItem, questions: list[str | None]) -> XcopaItem:
    position = item.idx if 0 <= item.idx < len(questions) else None
    if position is None or questions[position] in (None, item.question):
        return item
    return XcopaItem(item.idx, item.premise, item.choice1, item.choice2, questions[position], item.label)


# --- Belebele -------------------------------------------------------------------------------------


def belebele_items(path: str | Path, lang: str | None = None, limit: int | None = None) -> list[BelebeleItem]:
    """Belebele items from a JSONL file, or from `<code>.jsonl` in a folder when `lang` is given."""
    file = belebele_file(path, lang)
    rows = _jsonl(file.read_bytes(), str(file))
    try:
        items = [
            BelebeleItem(
                row["flores_passage"],
                row["question"],
                (row["mc_answer1"], row["mc_answer2"], row["mc_answer3"], row["mc_answer4"]),
                int(row["correct_answer_num"]) - 1,
                row.get("dialect", ""),
            )
            for row in rows
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise EvalDataError(
            f"{file} is not Belebele-style JSONL (flores_passage, question, mc_answer1..4, "
            f"correct_answer_num): {error!r}"
        ) from None
    return items[:limit] if limit is not None else items


def belebele_file(path: str | Path, lang: str | None) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise EvalDataError(f"Belebele data not found: {path} does not exist")
    if path.is_file():
        return path
    if lang is None:
        raise EvalDataError(f"{path} is a folder: name the language(s) to read its <code>.jsonl files")
    code = resolve(lang).code
    file = path / f"{code}.jsonl"
    if not file.is_file():
        available = ", ".join(sorted(p.stem for p in path.glob("*.jsonl"))) or "none"
        raise EvalDataError(f"{path} has no {code}.jsonl (it has: {available})")
    return file


def belebele_languages(path: str | Path) -> list[str]:
    """The `<code>.jsonl` files of a Belebele folder, or the one file's name."""
    path = Path(path).expanduser()
    if not path.exists():
        raise EvalDataError(f"Belebele data not found: {path} does not exist")
    return [path.stem] if path.is_file() else sorted(p.stem for p in path.glob("*.jsonl"))


def _jsonl(data: bytes, name: str) -> list[dict]:
    rows = []
    for number, line in enumerate(_decode(data, name).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise EvalDataError(f"{name} line {number} is not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise EvalDataError(f"{name} line {number} is not a JSON object")
        rows.append(row)
    return rows
