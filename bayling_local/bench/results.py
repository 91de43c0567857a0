"""The results log, `$BAYLING_HOME/results.jsonl`: one JSON object per benchmark run, appended.

Each record is written with one `write` of a whole line, then flushed and fsynced, so a crash leaves
either the whole line or none of it; readers skip lines that do not parse (and count them), so even
a file cut by a full disk stays readable. The TUI reads the same file through `read_records`.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bayling_local.store import bayling_home

SCHEMA_VERSION = 1
RESULTS_FILE = "results.jsonl"
KINDS = ("speed", "translate", "choice")


@dataclass
class RunRecord:
    """One benchmark run of one model."""

    kind: str
    """`speed`, `translate` or `choice`."""
    model: str
    quant: str
    backend: str
    hardware: dict
    settings: dict
    results: dict
    model_details: dict = field(default_factory=dict)
    """Artifact path, format, size in bytes, device, context length, backend build."""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    """Shared by the records of one command (e.g. several models benchmarked together)."""
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        return to_jsonable(self)

    @classmethod
    def from_json(cls, data: dict) -> RunRecord:
        missing = [name for name in ("kind", "model", "results") if name not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{"quant": "", "backend": "", "hardware": {}, "settings": {}, **known})

    @property
    def size_bytes(self) -> int | None:
        return self.model_details.get("size_bytes")


@dataclass
class LoadedRecords:
    records: list[RunRecord]
    bad_lines: int
    """Lines that were not a JSON record (a torn last line, hand edits); skipped."""
    path: Path


def new_record(kind: str, model, hardware, settings: dict, results: dict, run_id: str | None = None) -> RunRecord:
    """A record for `model` (a `jobs.ModelSummary`) on `hardware` (a `hardware.HardwareInfo`)."""
    details = to_jsonable(model)
    record = RunRecord(
        kind=kind,
        model=details.pop("name"),
        quant=details.pop("quant"),
        backend=details.pop("backend"),
        hardware=to_jsonable(hardware),
        settings=to_jsonable(settings),
        results=to_jsonable(results),
        model_details=details,
    )
    if run_id:
        record.run_id = run_id
    return record


def results_path() -> Path:
    return bayling_home() / RESULTS_FILE


def append_record(record: RunRecord, path: Path | None = None) -> Path:
    """Append one record as one line (single write, then flush and fsync)."""
    path = path or results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
    data = line.encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # read: to check the last byte
    try:
        if not _ends_with_newline(fd):
            data = b"\n" + data  # a torn line from a crash stays a line of its own, skipped by readers
        written = os.write(fd, data)  # unbuffered: nothing is left to flush in this process
        while written < len(data):  # a short write (signal, quota) continues where it stopped
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _ends_with_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def read_records(path: Path | None = None) -> LoadedRecords:
    """Every record in the file, oldest first; bad lines are counted, never fatal."""
    path = path or results_path()
    records, bad = [], 0
    if not path.is_file():
        return LoadedRecords([], 0, path)
    with path.open("rb") as lines:
        for raw in lines:
            if not raw.strip():
                continue
            record = _parse_line(raw)
            if record is None:
                bad += 1
            else:
                records.append(record)
    return LoadedRecords(records, bad, path)


def _parse_line(raw: bytes) -> RunRecord | None:
    try:
        data = json.loads(raw.decode("utf-8"))
        return RunRecord.from_json(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and paths as plain JSON values."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):  # NaN is not JSON
        return None
    return value
