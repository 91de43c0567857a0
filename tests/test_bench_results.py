"""The results log: appended one whole line per run, readable after a crash tore the last line."""

from __future__ import annotations

import json

from bayling_local.bench.results import SCHEMA_VERSION, RunRecord, append_record, read_records, results_path


def _record(model: str = "m", kind: str = "speed") -> RunRecord:
    return RunRecord(
        kind, model, "Q4_1", "llama.cpp", {"cpu": "x"}, {"prompt_tokens": 8}, {"generation_tps": {"mean": 1.0}}
    )


def test_each_run_appends_one_line_with_schema_version(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(_record("a"), path)
    append_record(_record("b"), path)
    lines = path.read_text("utf-8").splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert [r["model"] for r in rows] == ["a", "b"]
    for row in rows:
        assert row["schema_version"] == SCHEMA_VERSION
        for key in ("kind", "model", "quant", "backend", "hardware", "settings", "results", "timestamp"):
            assert key in row


def test_default_log_lives_in_bayling_home(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYLING_HOME", str(tmp_path / "home"))
    written = append_record(_record())
    assert written == results_path() == tmp_path / "home" / "results.jsonl"
    assert len(read_records().records) == 1


def test_truncated_last_line_is_skipped_and_counted(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(_record("whole"), path)
    with path.open("ab") as log:  # what a crash in the middle of a write would leave
        log.write(json.dumps(_record("torn").to_json()).encode()[:40])
    loaded = read_records(path)
    assert [r.model for r in loaded.records] == ["whole"]
    assert loaded.bad_lines == 1


def test_append_after_a_torn_line_starts_a_new_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"kind": "speed", "mod')
    append_record(_record("after"), path)
    loaded = read_records(path)
    assert [r.model for r in loaded.records] == ["after"]
    assert loaded.bad_lines == 1


def test_non_record_lines_are_counted_not_fatal(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('[1, 2]\n{"no": "kind"}\n\n', encoding="utf-8")
    append_record(_record("ok"), path)
    loaded = read_records(path)
    assert [r.model for r in loaded.records] == ["ok"]
    assert loaded.bad_lines == 2


def test_missing_log_reads_as_empty(tmp_path):
    loaded = read_records(tmp_path / "none.jsonl")
    assert loaded.records == [] and loaded.bad_lines == 0
