"""A Hugging Face Llama checkpoint folder, read lazily: config, tokenizer files and weight shards.

Weights are memory-mapped from safetensors and read one slice at a time, so converting a model never
holds more than the rows being converted. Pickled weights (`.bin`, `.pt`) are refused unless asked
for, because unpickling runs code.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bayling_local.errors import InvalidModelFileError

SUPPORTED_ARCHITECTURE = "LlamaForCausalLM"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
SAFETENSORS_INDEX = "model.safetensors.index.json"
# Files that define the model; their bytes make the checkpoint's provenance hash.
PROVENANCE_PATTERNS = ("config.json", "*.safetensors", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                       "chat_template.jinja", "generation_config.json")

# safetensors dtype -> (numpy dtype of the stored bytes, how to widen to float32).
# bfloat16 has no numpy dtype: it is read as uint16 and shifted into the high half of a float32.
_SAFETENSORS_DTYPES = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"),
}


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's bytes are: a shard, a byte range, a dtype and a shape."""

    name: str
    shard: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def row_width(self) -> int:
        return int(np.prod(self.shape[1:])) if len(self.shape) > 1 else int(np.prod(self.shape))

    def read_rows(self, rows: slice | np.ndarray) -> np.ndarray:
        """The rows picked by `rows` (a slice or index array) as float32; a 1-D tensor is one row."""
        return as_float32(self.read_stored_rows(rows))

    def read_stored_rows(self, rows: slice | np.ndarray) -> np.ndarray:
        """The rows as stored: float32/float16/float64, or bfloat16 as its uint16 bit patterns."""
        stored = _SAFETENSORS_DTYPES[self.dtype]
        if isinstance(rows, slice) and rows.step in (None, 1):
            return self._read_range(*rows.indices(self.rows)[:2], stored)
        mapped = np.memmap(self.shard, dtype=stored, mode="r", offset=self.start, shape=(self.rows, self.row_width))
        return np.asarray(mapped[rows])

    def _read_range(self, first: int, stop: int, stored: np.dtype) -> np.ndarray:
        # A plain read, not a memory map: mapped pages that were touched count in the process's resident
        # set until it unmaps them, so streaming a 16 GB checkpoint through a map shows up as 16 GB of RSS.
        count = max(0, stop - first) * self.row_width
        offset = self.start + first * self.row_width * stored.itemsize
        return np.fromfile(self.shard, dtype=stored, count=count, offset=offset).reshape(-1, self.row_width)

    def read(self) -> np.ndarray:
        """The whole tensor as float32 (for small tensors and tests)."""
        return self.read_rows(slice(None)).reshape(self.shape)


@dataclass
class Checkpoint:
    """A checked Llama checkpoint folder."""

    path: Path
    config: dict
    tensors: dict[str, StoredTensor | PickledTensor]
    pickled: bool = False

    @property
    def tokenizer_json(self) -> Path | None:
        file = self.path / "tokenizer.json"
        return file if file.is_file() else None

    @property
    def sentencepiece_model(self) -> Path | None:
        file = self.path / "tokenizer.model"
        return file if file.is_file() else None

    @property
    def source_dtype(self) -> str:
        """The dtype most of the weights are stored in (F32, F16 or BF16)."""
        sizes: dict[str, int] = {}
        for tensor in self.tensors.values():
            sizes[tensor.dtype] = sizes.get(tensor.dtype, 0) + tensor.end - tensor.start
        return max(sizes, key=sizes.get) if sizes else "F32"

    def parameter_count(self) -> int:
        return sum(int(np.prod(t.shape)) for t in self.tensors.values())

    def weight_files(self) -> list[Path]:
        return sorted({t.shard for t in self.tensors.values()})

    def provenance_sha256(self, stop: Callable[[], bool] = lambda: False) -> str | None:
        """sha256 over the names and bytes of the files that define the model (weights, config, tokenizer);
        None if `stop()` turned true on the way."""
        digest = hashlib.sha256()
        files = {f for pattern in PROVENANCE_PATTERNS for f in self.path.glob(pattern) if f.is_file()}
        buffer = bytearray(1 << 22)  # one buffer refilled: hashing 16 GB allocates 4 MB
        view = memoryview(buffer)
        for file in sorted(files | set(self.weight_files())):
            digest.update(file.name.encode("utf-8") + b"\0")
            with file.open("rb", buffering=0) as reader:
                while read := reader.readinto(buffer):
                    if stop():
                        return None
                    digest.update(view[:read])  # hashlib releases the GIL on large buffers
        return digest.hexdigest()

    def provenance_sha256_in_background(self) -> Future:
        """`provenance_sha256` computed by a daemon thread while the caller goes on (a GGUF writer fills it
        in after the tensors); cancelling the future stops the hashing."""
        future: Future = Future()

        def run() -> None:
            try:
                digest = self.provenance_sha256(stop=future.cancelled)
            except BaseException as error:  # noqa: BLE001 (handed to whoever waits for the result)
                if not future.cancelled():
                    future.set_exception(error)
                return
            if digest is not None and not future.cancelled():
                future.set_result(digest)

        threading.Thread(target=run, daemon=True, name="provenance-sha256").start()
        return future


def open_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> Checkpoint:
    """Check a checkpoint folder (config, architecture, tokenizer, weights) and index its tensors."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InvalidModelFileError(f"{folder} is not a folder; convert takes a Hugging Face checkpoint folder")
    config = read_config(folder)
    _check_architecture(folder, config)
    _check_tokenizer(folder)
    shards = _safetensors_shards(folder)
    if shards:
        tensors = {}
        for shard in shards:
            tensors.update(read_safetensors_index(shard))
        _check_index_complete(folder, tensors)
        return Checkpoint(folder, config, tensors)
    return _pickled_checkpoint(folder, config, allow_pickle)


def read_config(folder: Path) -> dict:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidModelFileError(
            f"{folder} has no config.json; convert takes a Hugging Face checkpoint folder "
            "(config.json, *.safetensors, tokenizer files)"
        )
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidModelFileError(f"{config_path} is not readable JSON ({error})") from error
    if not isinstance(config, dict):
        raise InvalidModelFileError(f"{config_path} is not a JSON object")
    return config


def _check_architecture(folder: Path, config: dict) -> None:
    architectures = config.get("architectures") or []
    if config.get("model_type") != "llama" or SUPPORTED_ARCHITECTURE not in architectures:
        found = f"{config.get('model_type')} ({', '.join(map(str, architectures)) or 'no architectures'})"
        raise InvalidModelFileError(
            f"{folder} holds a '{found}' model; convert supports {SUPPORTED_ARCHITECTURE} only"
        )


def _check_tokenizer(folder: Path) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InvalidModelFileError(
            f"{folder} has no tokenizer (tokenizer.json or tokenizer.model); copy the tokenizer files "
            "of the original model into it"
        )


def _safetensors_shards(folder: Path) -> list[Path]:
    index = folder / SAFETENSORS_INDEX
    if not index.is_file():
        return sorted(folder.glob("*.safetensors"))
    try:
        weight_map = json.loads(index.read_text("utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InvalidModelFileError(f"{index} is not a valid safetensors index ({error})") from error
    shards = sorted({folder / name for name in weight_map.values()})
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise InvalidModelFileError(
            f"{folder} is missing the shard {missing[0]} named in {SAFETENSORS_INDEX}; copy it again"
        )
    return shards


def _check_index_complete(folder: Path, tensors: dict[str, StoredTensor]) -> None:
    index = folder / SAFETENSORS_INDEX
    if not index.is_file():
        return
    expected = json.loads(index.read_text("utf-8"))["weight_map"]
    absent = sorted(set(expected) - set(tensors))
    if absent:
        raise InvalidModelFileError(
            f"{SAFETENSORS_INDEX} in {folder} lists '{absent[0]}', which no shard holds; copy the shards again"
        )


def read_safetensors_index(shard: Path) -> dict[str, StoredTensor]:
    """The tensor table of one safetensors file, checked against its size (a truncated shard fails here)."""
    size = shard.stat().st_size
    with shard.open("rb") as reader:
        prefix = reader.read(8)
        if len(prefix) != 8:
            raise InvalidModelFileError(f"{shard} is truncated: it is shorter than a safetensors header")
        header_size = struct.unpack("<Q", prefix)[0]
        if header_size > min(size - 8, 1 << 28):
            raise InvalidModelFileError(f"{shard} is truncated or not safetensors (header of {header_size:,} bytes)")
        try:
            header = json.loads(reader.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InvalidModelFileError(f"{shard} has a corrupt safetensors header ({error})") from error
    base = 8 + header_size
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _stored_tensor(shard, name, entry, base, size)
    return tensors


def _stored_tensor(shard: Path, name: str, entry: dict, base: int, file_size: int) -> StoredTensor:
    dtype = entry.get("dtype")
    if dtype not in _SAFETENSORS_DTYPES:
        raise InvalidModelFileError(
            f"{shard.name}: tensor '{name}' is stored as {dtype}; convert reads F32, F16, BF16 and F64 weights"
        )
    begin, end = entry["data_offsets"]
    shape = tuple(int(d) for d in entry["shape"])
    if end - begin != int(np.prod(shape)) * _SAFETENSORS_DTYPES[dtype].itemsize:
        raise InvalidModelFileError(f"{shard.name}: tensor '{name}' has {end - begin} bytes for shape {shape}")
    if base + end > file_size:
        raise InvalidModelFileError(
            f"{shard} is truncated: tensor '{name}' ends at byte {base + end:,} of a {file_size:,}-byte file; "
            "copy or download it again"
        )
    return StoredTensor(name, shard, dtype, shape, base + begin, base + end)


def _pickled_checkpoint(folder: Path, config: dict, allow_pickle: bool) -> Checkpoint:
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise InvalidModelFileError(f"{folder} has no weights (*.safetensors); copy the model's weight files into it")
    if not allow_pickle:
        raise InvalidModelFileError(
            f"{folder} has only pickled weights ({pickles[0].name}), which can run code when loaded; "
            "convert them to safetensors or pass --allow-pickle"
        )
    tensors: dict = {}
    for pickled in pickles:
        tensors.update(_read_pickle(pickled))
    return Checkpoint(folder, config, tensors, pickled=True)


def _read_pickle(pickled: Path) -> dict[str, PickledTensor]:
    import torch

    try:  # memory-mapped, so a shard is paged in as its tensors are read, not all at once
        state = torch.load(pickled, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or foreign pickle
        raise InvalidModelFileError(f"{pickled} is not a readable PyTorch state dict ({error})") from error
    return {
        name: PickledTensor(name, pickled, _TORCH_DTYPES.get(str(value.dtype), str(value.dtype)), tuple(value.shape), value)
        for name, value in state.items()
        if isinstance(value, torch.Tensor)
    }


_TORCH_DTYPES = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float64": "F64"}


@dataclass(frozen=True)
class PickledTensor:
    """A tensor of a pickled (`.bin`) shard, with the same reading interface as `StoredTensor`."""

    name: str
    shard: Path
    dtype: str
    shape: tuple[int, ...]
    value: object = field(repr=False, compare=False)

    rows = StoredTensor.rows
    row_width = StoredTensor.row_width
    read = StoredTensor.read

    @property
    def start(self) -> int:
        return 0

    @property
    def end(self) -> int:
        return int(np.prod(self.shape)) * self.value.element_size()

    def read_rows(self, rows: slice | np.ndarray) -> np.ndarray:
        return as_float32(self.read_stored_rows(rows))

    def read_stored_rows(self, rows: slice | np.ndarray) -> np.ndarray:
        import torch

        flat = self.value.reshape(self.rows, self.row_width)
        picked = flat[rows] if isinstance(rows, slice) else flat[torch.from_numpy(np.asarray(rows))]
        if picked.dtype == torch.bfloat16:
            return picked.contiguous().view(torch.int16).numpy().view(np.uint16)
        return picked.numpy() if picked.dtype in (torch.float16, torch.float32, torch.float64) else picked.float().numpy()


def as_float32(stored: np.ndarray) -> np.ndarray:
    """Stored rows (float16/32/64, or bfloat16 bit patterns as uint16) as float32."""
    if stored.dtype == np.uint16:  # bfloat16 is the high half of a float32: widened and shifted in one pass
        return np.left_shift(stored, 16, dtype=np.uint32).view(np.float32)
    return stored.astype(np.float32, copy=False)


def row_chunks(rows: int, row_width: int, budget_bytes: int = 1 << 25) -> list[tuple[int, int]]:
    """Row ranges of about `budget_bytes` of float32 each: the unit a tensor is streamed in."""
    step = max(1, budget_bytes // max(1, row_width * 4))
    return [(start, min(rows, start + step)) for start in range(0, rows, step)]
