"""The TUI's conversation history: SQLite schema version, migrations, CRUD and export."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import pytest

from bayling_local.tui.history import (
    MIGRATIONS,
    SCHEMA_VERSION,
    History,
    HistoryError,
    migrate,
    schema_version,
    title_from,
)

FIXED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def history(tmp_path):
    opened = History(tmp_path / "tui.sqlite3", clock=lambda: FIXED)
    yield opened
    opened.close()


def _conversation(history: History, title: str = "Rivers of Africa"):
    return history.create(title, model="smollm2-135m-instruct", system="Be brief.", temperature=0.2, max_tokens=64)


def test_a_new_database_is_created_at_the_latest_schema_version(history):
    assert schema_version(history._db) == SCHEMA_VERSION == len(MIGRATIONS)


def test_messages_are_kept_in_order_and_the_conversation_moves_to_the_top(history):
    first, second = _conversation(history, "first"), _conversation(history, "second")
    history.add_messages(first.id, [("user", "Hi", None), ("assistant", "Hello!", "smollm2-135m-instruct")])
    later = datetime(2026, 1, 3, tzinfo=timezone.utc)
    history._clock = lambda: later
    history.add_messages(first.id, [("user", "Again", None)])
    assert [m.content for m in history.messages(first.id)] == ["Hi", "Hello!", "Again"]
    assert [c.title for c in history.conversations()] == ["first", "second"]
    assert history.messages(second.id) == []


def test_rename_update_and_delete_cascade_to_messages(history):
    conversation = _conversation(history)
    history.add_messages(conversation.id, [("user", "Hi", None)])
    assert history.update(conversation.id, title="Renamed", temperature=0.9).title == "Renamed"
    with pytest.raises(ValueError, match="unknown conversation fields"):
        history.update(conversation.id, colour="red")
    history.delete(conversation.id)
    assert history.conversations() == []
    assert history._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_export_writes_markdown_and_json_with_every_message(history, tmp_path):
    conversation = _conversation(history)
    history.add_messages(conversation.id, [("user", "Name a river.", None), ("assistant", "The **Nile**.", "smollm2")])
    markdown = history.export(conversation.id, "md", tmp_path / "out").read_text("utf-8")
    assert markdown.startswith("# Rivers of Africa")
    assert "## System\n\nBe brief." in markdown and "## Assistant (smollm2)\n\nThe **Nile**." in markdown
    data = json.loads(history.export(conversation.id, "json", tmp_path / "out").read_text("utf-8"))
    assert data["title"] == "Rivers of Africa" and data["created"] == "2026-01-02T03:04:05+00:00"
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        ("user", "Name a river."),
        ("assistant", "The **Nile**."),
    ]


def test_a_version_1_database_is_migrated_without_losing_conversations(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, MIGRATIONS[:1])
    db.execute(
        "INSERT INTO conversations (title, temperature, max_tokens, created, updated) VALUES ('kept', 0.7, 512, 'x', 'x')"
    )
    db.close()
    history = History(path)
    assert schema_version(history._db) == SCHEMA_VERSION
    assert [c.title for c in history.conversations()] == ["kept"]
    history.set_setting("theme", "textual-light")  # the table migration 2 added
    assert history.setting("theme") == "textual-light"
    history.close()


def test_a_database_from_a_newer_version_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "new.sqlite3"
    History(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="newer than this bayling-local understands"):
        History(path)


def test_a_file_that_is_not_sqlite_is_an_error_that_names_the_fix(tmp_path):
    path = tmp_path / "tui.sqlite3"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(HistoryError, match="move it away"):
        History(path)


def test_a_failed_migration_leaves_the_database_at_its_old_version(tmp_path):
    db = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        migrate(db, (MIGRATIONS[0], "CREATE TABLE ok (a); CREATE TABLE broken ("))
    assert schema_version(db) == 1
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'ok'").fetchone() is None


def test_titles_come_from_the_first_line_cut_at_a_word():
    assert title_from("  Hello\nsecond line") == "Hello"
    long = title_from("Tell me everything about the history of the Swahili coast and its trade")
    assert long.endswith("…") and len(long) <= 41 and " " in long
