"""The resume journal of a batch translation: `<output>.journal`, JSON Lines, fsync'd per batch.

The first line holds the settings that change the output (model, targets, glossary, prompt,
generation); each further line is one finished piece, keyed by segment index, piece index, target and
a hash of the source text. A rerun with the same settings skips what the journal holds; a journal of
other settings is refused (or deleted with `--restart`). The journal is removed once the output is
complete, so its presence means "unfinished".
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bayling_local.errors import UsageError

JOURNAL_VERSION = 1
SUFFIX = ".journal"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def settings_hash(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class JournalEntry:
    segment: int
    piece: int
    target: str
    source: str
    """`text_hash` of the piece's source text: an edited input line is translated again."""
    text: str
    tokens: int = 0
    flag: str = ""
    """Why the integrity check rejected `text` (a placeholder lost); empty when the translation is sound."""

    @property
    def key(self) -> tuple[int, int, str, str]:
        return (self.segment, self.piece, self.target, self.source)


class Journal:
    """An open journal: what earlier runs finished, and an append-only record of this run."""

    def __init__(self, path: Path, entries: dict[tuple, JournalEntry]):
        self.path = path
        self.entries = entries
        self._file = path.open("a", encoding="utf-8")

    @classmethod
    def open(cls, path: Path, settings: Mapping[str, Any], *, restart: bool = False) -> Journal:
        """Continue the journal at `path` if it has the same settings, else start one."""
        if restart:
            path.unlink(missing_ok=True)
        header, entries = _read(path)
        if header is not None and header.get("settings_hash") != settings_hash(settings):
            raise UsageError(_mismatch_message(path, header.get("settings", {}), settings))
        if header is None:
            _start(path, settings)
        return cls(path, {entry.key: entry for entry in entries})

    def get(self, key: tuple[int, int, str, str]) -> JournalEntry | None:
        return self.entries.get(key)

    def record(self, entries: list[JournalEntry]) -> None:
        """Append a finished batch in one write, on disk before returning."""
        self._file.write("".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in entries))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.entries.update((entry.key, entry) for entry in entries)

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _read(path: Path) -> tuple[dict | None, list[JournalEntry]]:
    """The header and entries of an existing journal; (None, []) when there is none worth keeping."""
    if not path.exists():
        return None, []
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        # A kill in the middle of a write leaves part of a line: drop it so appends start clean.
        data = data[: data.rfind(b"\n") + 1]
        os.truncate(path, len(data))
    lines = data.decode("utf-8", errors="replace").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
        entries = [JournalEntry(**json.loads(line)) for line in lines[1:]]
    except (ValueError, TypeError) as error:
        raise UsageError(f"journal {path} is damaged ({error}); pass --restart to start over") from None
    if header is None:  # killed before the header was on disk: nothing to continue
        path.unlink()
        return None, []
    if not isinstance(header, dict) or header.get("journal") != JOURNAL_VERSION:
        raise UsageError(f"journal {path} is not a bayling-local journal; move it away or pass --restart")
    return header, entries


def _start(path: Path, settings: Mapping[str, Any]) -> None:
    header = {"journal": JOURNAL_VERSION, "settings_hash": settings_hash(settings), "settings": settings}
    with path.open("w", encoding="utf-8") as file:
        file.write(json.dumps(header, ensure_ascii=False) + "\n")
        file.flush()
        os.fsync(file.fileno())
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a new file's name durable too (POSIX; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _mismatch_message(path: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key)) or ["settings"]
    return (
        f"journal {path} is from a run with other settings ({', '.join(changed)} differ); rerun that "
        "command to finish it, or pass --restart to start over"
    )
