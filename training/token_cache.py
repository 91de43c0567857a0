"""Tokenized SFT data on disk: built once, then memory-mapped by every process of a run.

Holding input ids, labels and positions as Python lists costs tens of GB per rank at BayLing 2's 3.2M
examples. Instead the conversations are streamed through `encode_conversations` into flat binary columns
(rows are runs of consecutive tokens, so greedy packing only decides where a row starts), and the
dataset the Trainer sees slices one row out of the map when asked. The folder is named by a key over the
data files' bytes, the tokenizer, the chat format and the settings, so `--resume` and the other ranks
reuse it. The first process to take the lock builds it into a temporary folder and renames it into
place; the others wait on the lock (torch.distributed is not up yet at this point of a run) and map it.

Columns: tokens.bin (int32), learned.bin (uint8: 1 where the label is the token, else -100),
example_starts.bin and row_starts.bin (int64 offsets into tokens, with the total at the end), meta.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bayling_local.prompts import ChatFormat, Message
from bayling_local.training.tokenization import (
    IGNORE_INDEX,
    EncodedExample,
    check_max_length,
    encode_conversations,
    iter_conversations,
)

CACHE_FORMAT = 1
META_FILE = "meta.json"
FLUSH_ITEMS = 1 << 20  # values buffered per column before a write: a few MB, whatever the data size
PROGRESS_EVERY = 50_000  # conversations between progress lines (a few seconds to a minute apart)
# Columns: file name -> array typecode (native order; numpy reads the same codes).
COLUMNS = {"tokens": "i", "learned": "B", "example_starts": "q", "row_starts": "q"}
# Conversations whose rendering fingerprints a chat format (with and without a system message).
PROBES: tuple[tuple[Message, ...], ...] = (
    ({"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}),
    ({"role": "system", "content": "s"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
     {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}),
)


@dataclass(frozen=True)
class CacheSpec:
    """What a tokenized cache is made from; `key()` names its folder."""

    paths: tuple[Path, ...]
    max_length: int
    packing: bool

    def key(self, tokenizer, chat_format: ChatFormat) -> str:
        digest = hashlib.sha256()
        settings = {"format": CACHE_FORMAT, "max_length": self.max_length, "packing": self.packing}
        digest.update(json.dumps(settings, sort_keys=True).encode())
        digest.update(tokenizer_fingerprint(tokenizer).encode())
        digest.update(chat_format_fingerprint(chat_format).encode())
        for path in self.paths:
            digest.update(file_sha256(path).encode())
        return digest.hexdigest()[:24]


def file_sha256(path: Path) -> str:
    from bayling_local.training.data.records import DataError

    digest = hashlib.sha256()
    try:
        with path.open("rb") as data:
            for block in iter(lambda: data.read(1 << 22), b""):
                digest.update(block)
    except FileNotFoundError:
        raise DataError(f"no data file at {path}") from None
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """The whole tokenizer.json (vocabulary, merges, added tokens) and the special-token settings."""
    backend = tokenizer.backend_tokenizer.to_str()
    special = json.dumps({k: str(v) for k, v in tokenizer.special_tokens_map.items()}, sort_keys=True)
    return hashlib.sha256((backend + special).encode()).hexdigest()


def chat_format_fingerprint(chat_format: ChatFormat) -> str:
    rendered = [chat_format.render(list(probe)) for probe in PROBES]
    return json.dumps([chat_format.id, rendered, list(chat_format.stop_tokens)])


# --- building ---------------------------------------------------------------------------------------


class _Column:
    """An append-only binary file written in bounded chunks."""

    def __init__(self, path: Path, typecode: str):
        self.file = path.open("wb")
        self.typecode = typecode
        self.buffer = array(typecode)

    def extend(self, values: Iterable[int]) -> None:
        self.buffer.extend(values)
        if len(self.buffer) >= FLUSH_ITEMS:
            self.flush()

    def flush(self) -> None:
        self.buffer.tofile(self.file)
        self.buffer = array(self.typecode)

    def close(self) -> None:
        self.flush()
        self.file.close()


class _RowWriter:
    """Writes examples end to end and marks where rows start (greedy packing, or one example a row)."""

    def __init__(self, folder: Path, max_length: int, packing: bool):
        self.columns = {name: _Column(folder / f"{name}.bin", code) for name, code in COLUMNS.items()}
        self.max_length, self.packing = max_length, packing
        self.written = self.row_start = 0
        self.examples = self.rows = 0

    def add(self, example: EncodedExample) -> None:
        length = len(example.input_ids)
        row_length = self.written - self.row_start
        if row_length and (not self.packing or row_length + length > self.max_length):
            self.row_start = self.written
        if self.written == self.row_start:
            self.columns["row_starts"].extend((self.written,))
            self.rows += 1
        self.columns["example_starts"].extend((self.written,))
        self.columns["tokens"].extend(example.input_ids)
        self.columns["learned"].extend(map(IGNORE_INDEX.__ne__, example.labels))
        self.written += length
        self.examples += 1

    def close(self) -> None:
        self.columns["row_starts"].extend((self.written,))
        self.columns["example_starts"].extend((self.written,))
        for column in self.columns.values():
            column.close()


def write_cache(
    folder: Path, conversations: Iterable[Sequence[Message]], tokenizer, chat_format: ChatFormat,
    max_length: int, packing: bool, *, progress: Callable[[str], None] | None = None,
) -> dict:
    """Tokenize `conversations` into `folder` (streaming); returns the metadata written beside them.
    `progress(text)` is told every PROGRESS_EVERY conversations how far the build is and how fast."""
    check_max_length(tokenizer, chat_format, max_length)
    folder.mkdir(parents=True, exist_ok=True)
    writer, dropped, started = _RowWriter(folder, max_length, packing), 0, time.perf_counter()
    try:
        for done, example in enumerate(encode_conversations(conversations, tokenizer, chat_format, max_length), 1):
            if example is None:
                dropped += 1
            else:
                writer.add(example)
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(_progress_line(done, writer.written, time.perf_counter() - started))
    finally:
        writer.close()
    meta = {"format": CACHE_FORMAT, "examples": writer.examples, "dropped": dropped, "rows": writer.rows,
            "tokens": writer.written, "max_length": max_length, "packing": packing}
    (folder / META_FILE).write_text(json.dumps(meta, indent=1), "utf-8")
    return meta


def _progress_line(conversations: int, tokens: int, seconds: float) -> str:
    return (f"tokenized {conversations:,} conversations, {tokens:,} tokens in {seconds:.0f} s "
            f"({conversations / seconds:,.0f} conversations/s)")


def build_or_open(
    cache_root: Path, spec: CacheSpec, tokenizer, chat_format: ChatFormat, *, announce=None
) -> TokenCache:
    """The cache for `spec` under `cache_root`: mapped if complete, else built first (one process builds,
    the others wait on the lock). `announce(text)` is told when this process builds, and how it goes."""
    from filelock import FileLock

    folder = cache_root / spec.key(tokenizer, chat_format)
    cache_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / META_FILE).is_file():
            if announce is not None:
                announce(f"tokenizing {', '.join(map(str, spec.paths))} into {folder}")
            staging = folder.with_name(folder.name + f".partial-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                write_cache(staging, iter_conversations(spec.paths), tokenizer, chat_format,
                            spec.max_length, spec.packing, progress=announce)
                os.replace(staging, folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return TokenCache(folder)


# --- reading ----------------------------------------------------------------------------------------


class TokenCache:
    """A built cache as the HF Trainer wants a dataset: len and rows by index, read from the map lazily.

    Pickles as its folder (DataLoader workers map it again instead of copying arrays)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META_FILE).read_text("utf-8"))
        self._arrays: dict | None = None

    @property
    def examples(self) -> int:
        return self.meta["examples"]

    @property
    def dropped(self) -> int:
        return self.meta["dropped"]

    def tokens(self) -> int:
        return self.meta["tokens"]

    def __len__(self) -> int:
        return self.meta["rows"]

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "meta": self.meta, "_arrays": None}

    def _columns(self) -> dict:
        if self._arrays is None:
            import numpy as np

            self._arrays = {
                name: np.memmap(self.folder / f"{name}.bin", dtype=np.dtype(code), mode="r")
                for name, code in COLUMNS.items()
            }
        return self._arrays

    def __getitem__(self, index: int) -> dict:
        import numpy as np

        if not 0 <= index < len(self):
            raise IndexError(index)
        columns = self._columns()
        start, stop = (int(value) for value in columns["row_starts"][index : index + 2])
        ids = np.asarray(columns["tokens"][start:stop], dtype=np.int64)
        learned = np.asarray(columns["learned"][start:stop], dtype=bool)
        labels = np.where(learned, ids, IGNORE_INDEX)
        offsets = np.arange(start, stop)
        starts = columns["example_starts"]
        positions = offsets - starts[np.searchsorted(starts, offsets, side="right") - 1]
        return {"input_ids": ids.tolist(), "labels": labels.tolist(), "position_ids": positions.tolist()}
