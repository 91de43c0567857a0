"""Read a GGUF file's header (metadata and tensor table) with the standard library alone.

The store uses it to describe an artifact (architecture, quant, chat template) and to refuse a
corrupt, truncated or foreign file with a clear message before llama.cpp sees it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bayling_local.errors import InvalidModelFileError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types -> struct format (scalars); 8 = string, 9 = array.
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

# ggml tensor types: id -> (name, elements per block, bytes per block). From ggml.h / gguf-py's
# GGML_QUANT_SIZES; used to compute where the data should end, so truncation is caught.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}

# general.file_type (llama_ftype) -> the quant name users know.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
    18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
    32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 40: "Q1_0", 41: "Q2_0",
}

# Arrays longer than this (token lists, merges) are skipped, not decoded: a header read stays fast.
_MAX_DECODED_ARRAY = 64


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int

    @property
    def type_name(self) -> str:
        """The ggml type, e.g. `Q4_1` (`type42` for one this reader does not know)."""
        entry = GGML_TYPES.get(self.type_id)
        return entry[0] if entry else f"type{self.type_id}"

    def nbytes(self) -> int | None:
        entry = GGML_TYPES.get(self.type_id)
        if entry is None:
            return None
        _, block, size = entry
        count = 1
        for dim in self.shape:
            count *= dim
        return count // block * size


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_size: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str | None:
        return self.metadata.get("general.name")

    @property
    def quant(self) -> str:
        file_type = self.metadata.get("general.file_type")
        if file_type is None:
            return "unknown"
        return FILE_TYPES.get(int(file_type), f"type{file_type}")

    @property
    def context_length(self) -> int:
        return int(self.metadata.get(f"{self.architecture}.context_length", 0))

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    def tensor_types(self) -> frozenset[str]:
        """The ggml types of the tensors (a Q4_1 file usually also holds F32 norms and a Q6_K output)."""
        return frozenset(t.type_name for t in self.tensors)

    def expected_size(self) -> int | None:
        """Bytes the file must have for every tensor's data to be present (None if unknown types)."""
        ends = [t.offset + t.nbytes() for t in self.tensors if t.nbytes() is not None]
        if len(ends) != len(self.tensors):
            return None
        return self.data_offset + max(ends, default=0)


class _Reader:
    """Little-endian cursor that turns a short read into a 'truncated' error."""

    def __init__(self, stream: BinaryIO, path: Path):
        self.stream, self.path = stream, path

    def read(self, size: int) -> bytes:
        data = self.stream.read(size)
        if len(data) != size:
            raise InvalidModelFileError(f"{self.path} is truncated: its GGUF header ends early")
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.scalar("Q")
        if length > 1 << 30:
            raise InvalidModelFileError(f"{self.path} is corrupt: a header string claims {length} bytes")
        return self.read(length).decode("utf-8", errors="replace")

    def value(self, type_id: int) -> Any:
        if type_id in _SCALAR_FORMATS:
            return self.scalar(_SCALAR_FORMATS[type_id])
        if type_id == _STRING:
            return self.string()
        if type_id == _ARRAY:
            return self.array()
        raise InvalidModelFileError(f"{self.path} is corrupt: unknown GGUF value type {type_id}")

    def array(self) -> Any:
        item_type, count = self.scalar("I"), self.scalar("Q")
        if item_type in _SCALAR_FORMATS and count > _MAX_DECODED_ARRAY:
            self.skip(count * struct.calcsize(_SCALAR_FORMATS[item_type]))
            return ArraySummary(item_type, count)
        if item_type == _STRING and count > _MAX_DECODED_ARRAY:
            for _ in range(count):
                self.skip(self.scalar("Q"))
            return ArraySummary(item_type, count)
        return [self.value(item_type) for _ in range(count)]

    def skip(self, size: int) -> None:
        self.stream.seek(size, 1)


@dataclass(frozen=True)
class ArraySummary:
    """A long metadata array (vocabulary, merges) that the header reader counts but does not keep."""

    item_type: int
    count: int

    def __len__(self) -> int:
        return self.count


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Parse the header of `path`, raising InvalidModelFileError for anything that is not a whole GGUF."""
    path = Path(path)
    if not path.is_file():
        raise InvalidModelFileError(f"{path} is not a file")
    file_size = path.stat().st_size
    with path.open("rb") as stream:
        reader = _Reader(stream, path)
        if file_size < 24 or stream.read(4) != GGUF_MAGIC:
            raise InvalidModelFileError(f"{path} is not a GGUF file (its first bytes are not 'GGUF')")
        header = _read_body(reader, path, file_size)
    _check_complete(header)
    return header


def _read_body(reader: _Reader, path: Path, file_size: int) -> GGUFHeader:
    version = reader.scalar("I")
    if version not in (2, 3):
        raise InvalidModelFileError(f"{path} is GGUF version {version}; versions 2 and 3 are supported")
    tensor_count, kv_count = reader.scalar("Q"), reader.scalar("Q")
    if tensor_count > 1 << 20 or kv_count > 1 << 20:
        raise InvalidModelFileError(f"{path} is corrupt: implausible tensor/metadata counts")
    metadata = {}
    for _ in range(kv_count):
        key = reader.string()
        metadata[key] = reader.value(reader.scalar("I"))
    tensors = tuple(_read_tensor_info(reader) for _ in range(tensor_count))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    position = reader.stream.tell()
    data_offset = (position + alignment - 1) // alignment * alignment
    return GGUFHeader(path, version, metadata, tensors, data_offset, file_size)


def _read_tensor_info(reader: _Reader) -> TensorInfo:
    name = reader.string()
    n_dims = reader.scalar("I")
    if n_dims > 8:
        raise InvalidModelFileError(f"{reader.path} is corrupt: tensor '{name}' has {n_dims} dimensions")
    shape = tuple(reader.scalar("Q") for _ in range(n_dims))
    return TensorInfo(name, shape, reader.scalar("I"), reader.scalar("Q"))


def _check_complete(header: GGUFHeader) -> None:
    expected = header.expected_size()
    if expected is not None and header.file_size < expected:
        raise InvalidModelFileError(
            f"{header.path} is truncated: {header.file_size:,} bytes of the {expected:,} its header "
            "describes; copy or download it again"
        )
