"""Files in and out of the translation memory: `tm import` (TMX, reviewed XLIFF/PO) and `tm export` (TMX).

An import reads and checks the whole file first and then stores its units in one transaction, so a file that
is refused leaves the memory as it was (and a memory that did not exist is not created).
"""

from __future__ import annotations

from pathlib import Path

from bayling_local.errors import UsageError
from bayling_local.languages import Language
from bayling_local.translate.files import read_input, write_atomically
from bayling_local.translate.memory import MemoryUnit, TranslationMemory
from bayling_local.translate.reviewed import read_reviewed_po, read_reviewed_xliff
from bayling_local.translate.tmx import ReadUnits, pair_units, read_tmx, write_tmx

READERS = {
    ".tmx": read_tmx,
    ".xlf": read_reviewed_xliff,
    ".xliff": read_reviewed_xliff,
    ".po": read_reviewed_po,
}
"""File extension -> reader of the units it holds for one language pair."""


def read_units(path: Path, source: Language, target: Language) -> ReadUnits:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UsageError(f"cannot import {path.name}: give a .tmx, .xlf/.xliff or .po file")
    return reader(read_input(path), path.name, source, target)


def import_file(memory_path: Path, path: Path, source: Language, target: Language) -> ReadUnits:
    """Store the units of `path` for `source` -> `target` in the memory at `memory_path` (one transaction)."""
    read = read_units(path, source, target)
    if read.units:
        with TranslationMemory.open(memory_path) as memory:
            memory.add(read.units)
    return read


def export_tmx(memory_path: Path, path: Path, source: Language, target: Language) -> int:
    """Write the memory's `source` -> `target` units (human and machine, never rejected) to a TMX 1.4 file."""
    from bayling_local import __version__

    units = pair_units(open_units(memory_path), source.code, target.code)
    if not units:
        raise UsageError(f"the memory {memory_path} holds no {source.code} -> {target.code} units; see `tm stats`")
    if not path.parent.is_dir():
        raise UsageError(f"the output folder {path.parent} does not exist; create it first")
    write_atomically(path, write_tmx(units, source.code, target.code, __version__))
    return len(units)


def open_units(memory_path: Path) -> list[MemoryUnit]:
    with existing_memory(memory_path) as memory:
        return memory.units()


def existing_memory(memory_path: Path) -> TranslationMemory:
    """The memory at `memory_path`; a one-line error rather than an empty new memory when there is none."""
    if not memory_path.is_file():
        raise UsageError(f"no translation memory at {memory_path}; fill one with `translate -i` or `tm import`")
    return TranslationMemory.open(memory_path)
