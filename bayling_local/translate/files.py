"""The files of a batch translation: reading the input, naming the outputs, writing them atomically."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from bayling_local.errors import InputTextError, UsageError
from bayling_local.languages import Language
from bayling_local.translate.journal import SUFFIX as JOURNAL_SUFFIX

LANG_PLACEHOLDER = "{lang}"
CODE_JOINER = "+"
"""Joins the target codes in a name that stands for several targets: `data.swh_Latn+yor_Latn.jsonl`."""


def read_input(path: Path) -> str:
    """The input file as text; a clear error when it is missing, a folder or not UTF-8."""
    return decode_utf8(read_input_bytes(path), str(path))


def read_input_bytes(path: Path) -> bytes:
    """The input file as bytes (a format that decodes them itself: DOCX, HTML); a clear error when it is
    missing or a folder."""
    if not path.exists():
        raise InputTextError(f"input file {path} does not exist")
    if path.is_dir():
        raise InputTextError(f"input {path} is a folder; give one file (loop over a folder in the shell)")
    return path.read_bytes()


def decode_utf8(data: bytes, what: str) -> str:
    """`data` as text, or a one-line error naming the line of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputTextError(
            f"{what} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); convert it first, "
            "e.g. `iconv -f LATIN1 -t UTF-8`"
        ) from None


def default_pattern(input_path: Path) -> str:
    """`notes.md` -> `notes.{lang}.md`, beside the input."""
    return str(input_path.with_name(f"{input_path.stem}.{LANG_PLACEHOLDER}{input_path.suffix}"))


def output_paths(
    input_path: Path, targets: Sequence[Language], pattern: str | None, one_file_per_target: bool
) -> dict[str, Path]:
    """Target code -> output file. `{lang}` in `pattern` is the code (or the joined codes of a shared file)."""
    pattern = pattern or default_pattern(input_path)
    if one_file_per_target and len(targets) > 1 and LANG_PLACEHOLDER not in pattern:
        raise UsageError(
            f"with several targets this format writes one file per target: put {LANG_PLACEHOLDER} in -o, "
            f"e.g. -o out.{LANG_PLACEHOLDER}{input_path.suffix}"
        )
    if one_file_per_target:
        outputs = {t.code: Path(pattern.replace(LANG_PLACEHOLDER, t.code)) for t in targets}
    else:
        shared = Path(pattern.replace(LANG_PLACEHOLDER, CODE_JOINER.join(t.code for t in targets)))
        outputs = {t.code: shared for t in targets}
    for output in set(outputs.values()):
        _check_output(input_path, output)
    return outputs


def journal_path(input_path: Path, targets: Sequence[Language], pattern: str | None) -> Path:
    """One journal per run, beside the output(s): `<output>.journal` (codes joined for several files)."""
    pattern = pattern or default_pattern(input_path)
    return Path(pattern.replace(LANG_PLACEHOLDER, CODE_JOINER.join(t.code for t in targets)) + JOURNAL_SUFFIX)


def _check_output(input_path: Path, output: Path) -> None:
    if output.exists() and input_path.exists() and os.path.samefile(output, input_path):
        raise UsageError(f"the output {output} is the input file; choose another -o")
    if output.is_dir():
        raise UsageError(f"the output {output} is a folder; give a file name (with {LANG_PLACEHOLDER} for several)")
    if not output.parent.is_dir():
        raise UsageError(f"the output folder {output.parent} does not exist; create it first")


def write_atomically(path: Path, content: str | bytes) -> None:
    """Write `path` so that it appears only complete: a temporary file beside it, then os.replace. Text is
    written as UTF-8; bytes as they are."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as for any new file (mkstemp would give 0600).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
