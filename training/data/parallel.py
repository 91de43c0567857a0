"""Readers for parallel corpora: FLORES-style folders or archives (one file per language), TSV pairs,
and two aligned text files. Line N is the same sentence in every language of a corpus.

The FLORES-200 release itself (`dev/<code>.dev`, `devtest/<code>.devtest`, folder or archive) is read
through `bayling_local.evaldata`, the project's one FLORES reader; any other folder or archive with
one file per language (`<code>.<anything>`, e.g. a user's own corpus) is read here.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bayling_local.errors import UnknownLanguageError
from bayling_local.languages import resolve
from bayling_local.training.data.records import DataError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2")


@dataclass(frozen=True)
class ParallelCorpus:
    """Aligned lines per language (FLORES code -> lines)."""

    name: str
    lines: dict[str, list[str]]

    @property
    def languages(self) -> list[str]:
        return sorted(self.lines)

    def __len__(self) -> int:
        return len(next(iter(self.lines.values()))) if self.lines else 0


def detect_format(paths: list[Path]) -> str:
    """'aligned' for two files, 'tsv' for a .tsv file, 'flores' for a folder or archive."""
    if len(paths) == 2:
        return "aligned"
    if len(paths) == 1 and paths[0].suffix.lower() in (".tsv", ".tab"):
        return "tsv"
    if len(paths) == 1 and (paths[0].is_dir() or paths[0].name.lower().endswith(ARCHIVE_SUFFIXES)):
        return "flores"
    raise DataError(
        f"cannot tell the format of {', '.join(map(str, paths))}; set `format` to flores (a folder or archive "
        "with one file per language), tsv (two columns) or aligned (two text files)"
    )


def read_parallel(
    name: str,
    paths: list[Path],
    *,
    fmt: str,
    languages: list[str],
    split: str | None = None,
    max_lines: int | None = None,
    optional: list[str] = (),
) -> ParallelCorpus:
    """Read a corpus: the `languages` asked for (all when empty) plus the `optional` ones it has."""
    fmt = detect_format(paths) if fmt == "auto" else fmt
    wanted = [_code(language, name) for language in languages]
    if fmt == "flores":
        extra = [_code(language, name) for language in optional] if wanted else []
        lines = _read_flores(name, _single(paths, name, fmt), wanted, extra, split)
    else:
        lines = _read_two_columns(name, paths, fmt, wanted)
    _check_aligned(name, lines)
    if max_lines is not None:
        lines = {code: rows[:max_lines] for code, rows in lines.items()}
    return ParallelCorpus(name, lines)


def _code(language: str, source: str) -> str:
    try:
        return resolve(language).code
    except UnknownLanguageError as error:
        raise UnknownLanguageError(f"source '{source}': {error}") from None


def _single(paths: list[Path], name: str, fmt: str) -> Path:
    if len(paths) != 1:
        raise DataError(f"source '{name}': format '{fmt}' reads one path, got {len(paths)}")
    if not paths[0].exists():
        raise DataError(f"source '{name}': no such file or folder {paths[0]}")
    return paths[0]


def _read_flores(
    name: str, path: Path, wanted: list[str], extra: list[str], split: str | None
) -> dict[str, list[str]]:
    flores200 = _flores200_languages(path) if split is not None else set()
    if flores200:
        return _read_flores200(name, path, wanted, extra, split, flores200)
    return _read_language_files(name, path, wanted, extra, split)


def _flores200_languages(path: Path) -> set[str]:
    """The codes of a FLORES-200 folder or archive, or nothing when `path` is laid out otherwise."""
    from bayling_local import evaldata

    try:
        return set(evaldata.flores_languages(path))
    except evaldata.EvalDataError:
        return set()


def _read_flores200(
    name: str, path: Path, wanted: list[str], extra: list[str], split: str, available: set[str]
) -> dict[str, list[str]]:
    from bayling_local import evaldata

    _check_wanted(name, wanted, available)
    codes = [*wanted, *(code for code in extra if code in available)] if wanted else sorted(available)
    return evaldata.flores_parallel(path, list(dict.fromkeys(codes)), split)


def _read_language_files(
    name: str, path: Path, wanted: list[str], extra: list[str], split: str | None
) -> dict[str, list[str]]:
    found: dict[str, str] = {}  # code -> member path, to report two files for one language
    lines: dict[str, list[str]] = {}
    available: set[str] = set()
    for member, read_text in _language_files(path):
        if split is not None and not member.endswith(f".{split}"):
            continue
        code = _code_of_file(member)
        if code is not None:
            available.add(code)
        if code is None or (wanted and code not in wanted and code not in extra):
            continue
        if code in found:
            raise DataError(
                f"source '{name}': two files for {code} ({found[code]}, {member}); set `split` (e.g. dev or devtest)"
            )
        found[code] = member
        lines[code] = _split_lines(read_text())
    _check_wanted(name, wanted, available)
    return lines


def _language_files(path: Path) -> Iterator[tuple[str, object]]:
    """(relative name, text reader) for every regular file of a folder or tar archive, sorted."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            yield file.relative_to(path).as_posix(), (lambda f=file: _decode(f.read_bytes(), str(f)))
        return
    with _open_archive(path) as archive:
        for member in sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name):
            yield member.name, (lambda m=member: _decode(archive.extractfile(m).read(), f"{path}:{m.name}"))


def _open_archive(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path)
    except (tarfile.TarError, OSError) as error:
        raise DataError(f"{path}: not a readable archive ({error})") from None


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{where}: not UTF-8 ({error.reason} at byte {error.start})") from None


def _code_of_file(member: str) -> str | None:
    """The language a file stands for: `dev/swh_Latn.dev` -> swh_Latn; None for README and the like."""
    stem = member.rsplit("/", 1)[-1].split(".", 1)[0]
    if not stem or stem.startswith("."):
        return None
    try:
        return resolve(stem).code
    except UnknownLanguageError:
        return None


def _split_lines(text: str) -> list[str]:
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    return [row.rstrip("\r") for row in rows]


def _check_wanted(name: str, wanted: list[str], available: set[str]) -> None:
    missing = [code for code in wanted if code not in available]
    if missing:
        shown = sorted(available)
        have = ", ".join(shown[:12]) + (f" and {len(shown) - 12} more" if len(shown) > 12 else "") if shown else "none"
        raise DataError(
            f"source '{name}': no text for {missing[0]} (the corpus has: {have}); remove it from `languages` "
            "or add a file for it"
        )


def _read_two_columns(name: str, paths: list[Path], fmt: str, wanted: list[str]) -> dict[str, list[str]]:
    if len(wanted) != 2:
        raise DataError(f"source '{name}': format '{fmt}' needs `languages` with the two languages, in order")
    if fmt == "tsv":
        left, right = _read_tsv(name, _single(paths, name, fmt))
    else:
        left, right = _read_aligned(name, paths)
    return {wanted[0]: left, wanted[1]: right}


def _read_tsv(name: str, path: Path) -> tuple[list[str], list[str]]:
    left, right = [], []
    for number, row in enumerate(_split_lines(_decode(path.read_bytes(), str(path))), start=1):
        if not row.strip():
            continue
        columns = row.split("\t")
        if len(columns) != 2:
            raise DataError(f"{path}:{number}: expected two tab-separated columns, got {len(columns)}")
        left.append(columns[0].strip())
        right.append(columns[1].strip())
    return left, right


def _read_aligned(name: str, paths: list[Path]) -> tuple[list[str], list[str]]:
    if len(paths) != 2:
        raise DataError(f"source '{name}': format 'aligned' needs exactly two files in `paths`")
    for path in paths:
        if not path.is_file():
            raise DataError(f"source '{name}': no such file {path}")
    left, right = (_split_lines(_decode(p.read_bytes(), str(p))) for p in paths)
    return left, right


def _check_aligned(name: str, lines: dict[str, list[str]]) -> None:
    counts = {code: len(rows) for code, rows in lines.items()}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{code}: {count}" for code, count in sorted(counts.items()))
        raise DataError(f"source '{name}': files are not aligned (lines per language: {shown})")
    if not lines:
        raise DataError(f"source '{name}': no language files found")
