"""The translation memory: every translated segment, reused instead of paid for again.

SQLite at `$BAYLING_HOME/memory.sqlite` (or `--tm PATH`), in WAL mode with a busy timeout so that several
`translate` runs (or the TUI and the CLI) share it. A unit is keyed by the normalized source text, the source
and target languages and the context (PO msgctxt); human translations (imported TMX, reviewed XLIFF/PO)
outrank machine ones. Exact hits are reused without the model; fuzzy hits (rapidfuzz ratio at or above a
threshold) become examples in the prompt. Answers the integrity check rejected are remembered as `rejected`
so a rerun does not ask the model again, and are never reused as translations or exported.
"""

from __future__ import annotations

import sqlite3
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bayling_local.errors import UsageError

if TYPE_CHECKING:  # typing.Self is Python 3.11+; annotations are not evaluated here
    from typing import Self

HUMAN, MACHINE, REJECTED = "human", "machine", "rejected"
RANK = {HUMAN: 0, MACHINE: 1, REJECTED: 2}
DEFAULT_FUZZY = 0.75
MAX_EXAMPLES = 2
FILE_NAME = "memory.sqlite"
BUSY_TIMEOUT_S = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    source_key TEXT NOT NULL,
    source_lang TEXT NOT NULL,
    target_lang TEXT NOT NULL,
    context TEXT NOT NULL,
    origin TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    PRIMARY KEY (source_key, source_lang, target_lang, context, origin)
);
CREATE INDEX IF NOT EXISTS units_pair ON units (source_lang, target_lang);
"""


@dataclass(frozen=True)
class MemoryUnit:
    source: str
    target: str
    source_lang: str
    target_lang: str
    context: str = ""
    origin: str = MACHINE
    model: str = ""


@dataclass(frozen=True)
class FuzzyMatch:
    source: str
    target: str
    score: float


def default_path() -> Path:
    from bayling_local.store import bayling_home

    return bayling_home() / FILE_NAME


def normalized(text: str) -> str:
    """What two sources must share to be the same: NFC, whitespace runs as one space, ends trimmed."""
    return " ".join(unicodedata.normalize("NFC", text).split())


class TranslationMemory:
    def __init__(self, connection: sqlite3.Connection, path: Path):
        self.connection = connection
        self.path = path

    @classmethod
    def open(cls, path: Path | None = None) -> TranslationMemory:
        path = Path(path) if path is not None else default_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise UsageError(
                f"cannot open the translation memory {path} ({error}); pass --tm PATH or --no-tm"
            ) from None
        return cls(connection, path)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, units: Iterable[MemoryUnit]) -> int:
        """Store `units` in one transaction (a newer unit of the same key and origin replaces the older)."""
        rows = [
            (
                normalized(u.source),
                u.source_lang,
                u.target_lang,
                u.context,
                u.origin,
                u.source,
                u.target,
                u.model,
                time.time(),
            )
            for u in units
        ]
        with self.connection:
            self.connection.execute("BEGIN IMMEDIATE")  # take the write lock now: the busy timeout applies
            self.connection.executemany("INSERT OR REPLACE INTO units VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def exact(self, source: str, source_lang: str, target_lang: str, context: str = "") -> MemoryUnit | None:
        """The best unit for exactly this source: human before machine before rejected, newest first."""
        rows = self.connection.execute(
            "SELECT source, target, origin, model, created FROM units "
            "WHERE source_key = ? AND source_lang = ? AND target_lang = ? AND context = ?",
            (normalized(source), source_lang, target_lang, context),
        ).fetchall()
        if not rows:
            return None
        best = min(rows, key=lambda row: (RANK.get(row[2], 9), -row[4]))
        return MemoryUnit(best[0], best[1], source_lang, target_lang, context, best[2], best[3])

    def fuzzy(
        self, source: str, source_lang: str, target_lang: str, threshold: float = DEFAULT_FUZZY
    ) -> list[FuzzyMatch]:
        """Up to MAX_EXAMPLES good units whose source is similar (rapidfuzz ratio >= threshold), best first."""
        from rapidfuzz import fuzz, process

        rows = self.connection.execute(
            "SELECT source_key, source, target, origin FROM units "
            "WHERE source_lang = ? AND target_lang = ? AND origin != ?",
            (source_lang, target_lang, REJECTED),
        ).fetchall()
        if not rows:
            return []
        key = normalized(source)
        candidates = [row[0] for row in rows]
        found = process.extract(
            key, candidates, scorer=fuzz.ratio, score_cutoff=threshold * 100, limit=MAX_EXAMPLES * 3
        )
        matches, seen = [], set()
        for _, score, index in sorted(found, key=lambda f: (-f[1], RANK.get(rows[f[2]][3], 9))):
            if rows[index][0] != key and rows[index][0] not in seen:
                seen.add(rows[index][0])
                matches.append(FuzzyMatch(rows[index][1], rows[index][2], score / 100))
        return matches[:MAX_EXAMPLES]

    def units(self, include_rejected: bool = False) -> list[MemoryUnit]:
        rows = self.connection.execute(
            "SELECT source, target, source_lang, target_lang, context, origin, model FROM units ORDER BY created"
        ).fetchall()
        return [MemoryUnit(*row) for row in rows if include_rejected or row[5] != REJECTED]

    def stats(self) -> dict:
        rows = self.connection.execute(
            "SELECT source_lang, target_lang, origin, COUNT(*) FROM units GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
        return {
            "path": str(self.path),
            "units": sum(row[3] for row in rows),
            "pairs": [{"source": r[0], "target": r[1], "origin": r[2], "units": r[3]} for r in rows],
        }
