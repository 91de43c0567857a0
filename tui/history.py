"""Conversation history for the TUI: SQLite at `$BAYLING_HOME/tui.sqlite3`, versioned by migrations.

Each migration is a row of `MIGRATIONS`; opening a database applies the ones it lacks, in one
transaction each, and refuses a database written by a newer version.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from bayling_local.errors import BaylingError
from bayling_local.prompts import Message
from bayling_local.store import bayling_home

DB_NAME = "tui.sqlite3"
TITLE_LENGTH = 40

MIGRATIONS: tuple[str, ...] = (
    # 1: conversations (with their own system prompt and sampling settings) and their messages.
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        model TEXT,
        system TEXT,
        temperature REAL NOT NULL,
        max_tokens INTEGER NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        model TEXT,
        created TEXT NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    """,
    # 2: app settings that outlive a session (theme, last model).
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

Clock = Callable[[], datetime]


class HistoryError(BaylingError):
    """The history database cannot be used (newer schema, corrupt file)."""


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model: str | None
    system: str | None
    temperature: float
    max_tokens: int
    created: str
    updated: str


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str
    content: str
    model: str | None
    created: str

    def as_message(self) -> Message:
        return {"role": self.role, "content": self.content}


def default_path() -> Path:
    return bayling_home() / DB_NAME


def title_from(text: str) -> str:
    """A conversation title from its first prompt: the first line, cut at a word."""
    line = " ".join(text.strip().split("\n", 1)[0].split()) or "Untitled"
    if len(line) <= TITLE_LENGTH:
        return line
    return line[:TITLE_LENGTH].rsplit(" ", 1)[0].rstrip(",.;:") + "…"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "conversation"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class History:
    """Conversations and messages; every method is one short transaction on the caller's thread."""

    def __init__(self, path: Path | None = None, *, clock: Clock = _utc_now):
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            migrate(self._db)
        except sqlite3.DatabaseError as error:
            raise HistoryError(f"{self.path} is not a usable history database ({error}); move it away to start afresh")

    def close(self) -> None:
        self._db.close()

    def _now(self) -> str:
        return self._clock().isoformat(timespec="seconds")

    # --- conversations ------------------------------------------------------------------------

    def conversations(self) -> list[Conversation]:
        rows = self._db.execute("SELECT * FROM conversations ORDER BY updated DESC, id DESC")
        return [Conversation(**dict(row)) for row in rows]

    def conversation(self, conversation_id: int) -> Conversation:
        row = self._db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise HistoryError(f"no conversation {conversation_id} in {self.path}")
        return Conversation(**dict(row))

    def create(
        self, title: str, *, model: str | None, system: str | None, temperature: float, max_tokens: int
    ) -> Conversation:
        now = self._now()
        cursor = self._db.execute(
            "INSERT INTO conversations (title, model, system, temperature, max_tokens, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (title, model, system, temperature, max_tokens, now, now),
        )
        return self.conversation(int(cursor.lastrowid))

    def update(self, conversation_id: int, **fields) -> Conversation:
        """Change `title`, `model`, `system`, `temperature` or `max_tokens`."""
        allowed = {"title", "model", "system", "temperature", "max_tokens"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown conversation fields: {sorted(unknown)}")
        if fields:
            columns = ", ".join(f"{name} = ?" for name in fields)
            self._db.execute(f"UPDATE conversations SET {columns} WHERE id = ?", (*fields.values(), conversation_id))
        return self.conversation(conversation_id)

    def delete(self, conversation_id: int) -> None:
        self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --- messages -----------------------------------------------------------------------------

    def add_messages(self, conversation_id: int, messages: Iterable[tuple[str, str, str | None]]) -> None:
        """Append (role, content, model) rows and mark the conversation as just used."""
        now = self._now()
        with _transaction(self._db):
            self._db.executemany(
                "INSERT INTO messages (conversation_id, role, content, model, created) VALUES (?, ?, ?, ?, ?)",
                [(conversation_id, role, content, model, now) for role, content, model in messages],
            )
            self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        rows = self._db.execute(
            "SELECT id, role, content, model, created FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        )
        return [StoredMessage(**dict(row)) for row in rows]

    # --- settings -----------------------------------------------------------------------------

    def setting(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_setting(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- export -------------------------------------------------------------------------------

    def export(self, conversation_id: int, fmt: str, folder: Path | None = None) -> Path:
        """Write the conversation as `md` or `json` under `folder` (default `$BAYLING_HOME/exports`)."""
        conversation = self.conversation(conversation_id)
        messages = self.messages(conversation_id)
        render = {"md": to_markdown, "json": to_json}[fmt]
        target_folder = folder or bayling_home() / "exports"
        target_folder.mkdir(parents=True, exist_ok=True)
        target = target_folder / f"{conversation.id}-{slug(conversation.title)}.{fmt}"
        temporary = target.with_suffix(f".{fmt}.tmp")
        temporary.write_text(render(conversation, messages), encoding="utf-8")
        temporary.replace(target)
        return target


def to_markdown(conversation: Conversation, messages: Sequence[StoredMessage]) -> str:
    lines = [f"# {conversation.title}", ""]
    if conversation.model:
        lines += [f"Model: {conversation.model}", ""]
    if conversation.system:
        lines += ["## System", "", conversation.system, ""]
    for message in messages:
        heading = "User" if message.role == "user" else f"Assistant ({message.model or 'model'})"
        lines += [f"## {heading}", "", message.content, ""]
    return "\n".join(lines)


def to_json(conversation: Conversation, messages: Sequence[StoredMessage]) -> str:
    data = {**asdict(conversation), "messages": [asdict(m) for m in messages]}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def schema_version(db: sqlite3.Connection) -> int:
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Apply the migrations a database lacks; returns its version afterwards."""
    version = schema_version(db)
    if version > len(migrations):
        raise HistoryError(
            f"the history database has schema version {version}, newer than this bayling-local "
            f"understands ({len(migrations)}); upgrade bayling-local"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        with _transaction(db):
            for statement in _statements(script):
                db.execute(statement)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    return len(migrations)


def _statements(script: str) -> list[str]:
    # executescript() commits on its own; running statements one by one keeps a migration atomic.
    return [statement.strip() for statement in script.split(";") if statement.strip()]


class _transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
