"""The GGUF writer: a Hugging Face `LlamaForCausalLM` checkpoint to a llama.cpp GGUF file.

Written on the `gguf` package's GGUFWriter for the header, metadata and tensor table; the tensor data
is streamed a few rows at a time from the memory-mapped shards, so peak memory stays near one chunk
(32 MB of float32) plus the vocabulary, whatever the model's size. Output types written here: f32,
f16, bf16 and q8_0; every other type goes through llama.cpp's quantizer (`quantize.py`).
The file is written under a temporary name and renamed on success, so a failed or interrupted run
leaves nothing at the destination.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bayling_local.convert.checkpoint import Checkpoint, as_float32, row_chunks
from bayling_local.convert.llama_layout import (
    ROPE_WRITERS,
    LlamaHyperParameters,
    TensorPlan,
    llama3_rope_factors,
    plan_tensors,
)
from bayling_local.convert.vocab import GGUFVocab
from bayling_local.errors import InvalidModelFileError
from bayling_local.prompts import GGUF_CHAT_FORMAT_KEY

Progress = Callable[[int, int], None]
"""(bytes written, bytes total)."""

F16_MAX = 65504.0
ENCODE_THREADS = 2
"""Chunks read and converted at once: numpy and file reads release the GIL, so on two cores one chunk is
converted while the previous one is written (the f16 time of an 8B checkpoint is conversion-bound)."""


@dataclass(frozen=True)
class OutputType:
    """An output type the writer produces itself: its llama_ftype and the ggml type of its matrices."""

    name: str
    file_type: int
    """general.file_type (llama_ftype)."""
    matrix_type: str
    """ggml type of 2-D weights; 1-D tensors (norms) stay F32, as llama.cpp expects."""
    description: str


WRITTEN_TYPES: dict[str, OutputType] = {
    t.name: t
    for t in (
        OutputType("f32", 0, "F32", "32-bit float, exact"),
        OutputType("f16", 1, "F16", "16-bit float"),
        OutputType("bf16", 32, "BF16", "bfloat16, exact for bf16 checkpoints"),
        OutputType("q8_0", 7, "Q8_0", "8-bit blocks of 32 with an f16 scale"),
    )
}


@dataclass(frozen=True)
class Provenance:
    """Where an artifact came from; written into its metadata."""

    source: str
    digest: str | Future
    """The checkpoint's sha256, or a Future of it still being computed: the writer then leaves a
    placeholder of the same length in the header and fills it in after the tensors, so hashing a 16 GB
    checkpoint overlaps converting it instead of coming first."""
    tool: str
    date: str

    @property
    def sha256(self) -> str:
        return self.digest.result() if isinstance(self.digest, Future) else self.digest

    @property
    def sha256_pending(self) -> bool:
        return isinstance(self.digest, Future) and not self.digest.done()


SOURCE_SHA256_KEY = "general.source.sha256"
SHA256_PLACEHOLDER = "0" * 64


@dataclass(frozen=True)
class _OutputTensor:
    plan: TensorPlan
    ggml_type: str

    @property
    def row_width(self) -> int:
        return int(np.prod(self.plan.shape[1:])) if len(self.plan.shape) > 1 else int(self.plan.shape[0])

    @property
    def rows(self) -> int:
        return self.plan.shape[0] if len(self.plan.shape) > 1 else 1

    def nbytes(self) -> int:
        return self.rows * row_bytes(self.ggml_type, self.row_width)


def row_bytes(ggml_type: str, width: int) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    return width // block * size


def encode_rows(rows: np.ndarray, ggml_type: str) -> np.ndarray:
    """Rows as the checkpoint stores them (float16/32/64, or bfloat16 bit patterns as uint16) in the output
    type's bytes, with llama.cpp's reference rounding (gguf.quants). A bf16 or f16 checkpoint written as
    itself is copied; bf16 to f16 is one torch conversion instead of two numpy passes through float32."""
    import gguf

    if rows.dtype == np.uint16 and ggml_type == "BF16":
        return _quieted_bf16_nans(rows)
    if rows.dtype == np.float16 and ggml_type == "F16":
        return rows
    if rows.dtype == np.uint16 and ggml_type == "F16":
        return _bf16_to_f16(rows)
    rows = as_float32(rows)
    if ggml_type == "F32":
        return np.ascontiguousarray(rows, dtype="<f4")
    if ggml_type == "F16":
        # max and min read the rows without the temporary array abs() makes
        largest = max(float(rows.max()), -float(rows.min())) if rows.size else 0.0
        if largest > F16_MAX:
            _refuse_f16(largest)
        return rows.astype("<f2")
    return gguf.quants.quantize(np.ascontiguousarray(rows, dtype=np.float32), gguf.GGMLQuantizationType[ggml_type])


BF16_EXPONENT_BITS = 0x7F80
BF16_F16_OVERFLOW = 0x4780
"""bf16 magnitudes (sign cleared) from this one up (2^16 and beyond, infinity) do not fit in f16; the
largest below it, 65280, does, and converts exactly."""


def _bf16_to_f16(bits: np.ndarray) -> np.ndarray:
    import torch

    if (bits & 0x7FFF).max(initial=0) >= BF16_F16_OVERFLOW:  # too large, infinite or NaN: the float32 way
        return encode_rows(as_float32(bits), "F16")  # (refuses, or keeps NaN payloads as numpy does)
    converted = torch.from_numpy(np.ascontiguousarray(bits).view(np.int16)).view(torch.bfloat16).to(torch.float16)
    return converted.numpy()


def _quieted_bf16_nans(bits: np.ndarray) -> np.ndarray:
    # gguf.quants' float32 -> bf16 rounding sets the quiet bit of a NaN; every other bf16 value is kept
    nans = (bits & 0x7FFF) > BF16_EXPONENT_BITS
    return np.where(nans, bits | 0x0040, bits) if nans.any() else bits


def _refuse_f16(largest: float) -> None:
    raise InvalidModelFileError(f"a weight of magnitude {largest:.3g} does not fit in f16; convert to bf16 or f32")


def tensor_type(plan: TensorPlan, output: OutputType) -> str:
    """The ggml type one tensor gets: F32 for 1-D; the matrix type when its rows fit whole blocks, else F16."""
    import gguf

    if len(plan.shape) < 2:
        return "F32"
    block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[output.matrix_type]]
    return output.matrix_type if plan.shape[-1] % block == 0 else "F16"


@dataclass(frozen=True)
class GGUFPlan:
    """What will be written: metadata inputs and every tensor with its type."""

    hp: LlamaHyperParameters
    output: OutputType
    tensors: tuple[_OutputTensor, ...]

    def tensor_bytes(self) -> int:
        return sum(t.nbytes() for t in self.tensors)


def plan_gguf(checkpoint: Checkpoint, output_type: str) -> GGUFPlan:
    """Check the checkpoint against its config and decide every output tensor (nothing is read yet)."""
    if output_type not in WRITTEN_TYPES:
        raise InvalidModelFileError(f"the writer makes {', '.join(WRITTEN_TYPES)}, not '{output_type}'")
    hp = LlamaHyperParameters.from_config(checkpoint.config)
    hp.check_supported(checkpoint.config)
    shapes = {name: t.shape for name, t in checkpoint.tensors.items()}
    plans = plan_tensors(hp, set(checkpoint.tensors), shapes)
    output = WRITTEN_TYPES[output_type]
    return GGUFPlan(hp, output, tuple(_OutputTensor(p, tensor_type(p, output)) for p in plans))


def write_gguf(
    checkpoint: Checkpoint,
    plan: GGUFPlan,
    vocab: GGUFVocab,
    destination: Path,
    *,
    name: str,
    provenance: Provenance,
    chat_format: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write the GGUF to `destination` (via a temporary file in the same folder)."""
    import gguf

    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent)
    os.close(handle)
    writer = gguf.GGUFWriter(None, "llama")
    pending = provenance.sha256_pending
    try:
        _add_metadata(writer, plan, vocab, name, provenance, chat_format, pending)
        extra = _extra_tensors(plan.hp)
        for tensor in plan.tensors:
            writer.add_tensor_info(tensor.plan.gguf_name, tensor.plan.shape, np.dtype(np.float32), tensor.nbytes(),
                                   raw_dtype=gguf.GGMLQuantizationType[tensor.ggml_type])
        for tensor_name, values in extra.items():
            writer.add_tensor_info(tensor_name, values.shape, values.dtype, values.nbytes)
        writer.open_output_file(Path(temporary))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        stream = writer.fout[0]
        metadata_end = stream.tell()
        writer.write_ti_data_to_file()
        _write_tensor_data(stream, writer.data_alignment, checkpoint, plan, extra, progress)
        stream.flush()
        if pending:
            fill_in_source_sha256(Path(temporary), stream.fileno(), metadata_end, provenance.sha256)
        os.fsync(stream.fileno())
        writer.close()
        os.replace(temporary, destination)
    except BaseException:
        if isinstance(provenance.digest, Future):
            provenance.digest.cancel()  # nothing will wait for it now
        writer.close()
        Path(temporary).unlink(missing_ok=True)
        raise
    return destination


def fill_in_source_sha256(path: Path, fd: int, metadata_end: int, sha256: str) -> None:
    """Replace the SHA256_PLACEHOLDER value of `general.source.sha256` in the metadata of the GGUF `path`,
    open for writing as `fd` (its metadata ends at byte `metadata_end`), by `sha256`: same length, in place."""
    import gguf

    key = SOURCE_SHA256_KEY.encode()
    entry = (struct.pack("<Q", len(key)) + key + struct.pack("<I", gguf.GGUFValueType.STRING)
             + struct.pack("<Q", len(SHA256_PLACEHOLDER)) + SHA256_PLACEHOLDER.encode())
    with path.open("rb") as reader:
        metadata = reader.read(metadata_end)
    found = metadata.find(entry)
    if found < 0 or metadata.find(entry, found + 1) >= 0 or len(sha256) != len(SHA256_PLACEHOLDER):
        raise RuntimeError("the GGUF metadata has no single placeholder for general.source.sha256")
    os.pwrite(fd, sha256.encode(), found + len(entry) - len(SHA256_PLACEHOLDER))


def _add_metadata(writer, plan: GGUFPlan, vocab: GGUFVocab, name: str, provenance: Provenance,
                  chat_format: str | None, sha256_pending: bool = False) -> None:
    import gguf

    hp = plan.hp
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type(plan.output.file_type)
    if plan.output.matrix_type not in ("F32", "F16", "BF16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_source_url(provenance.source)
    writer.add_string(SOURCE_SHA256_KEY, SHA256_PLACEHOLDER if sha256_pending else provenance.sha256)
    writer.add_quantized_by(provenance.tool)
    writer.add_string("general.date", provenance.date)
    if chat_format:
        # Read back when the GGUF is opened by path (bayling_local.model.artifact_chat_format).
        writer.add_string(GGUF_CHAT_FORMAT_KEY, chat_format)
    writer.add_vocab_size(hp.vocab_size)
    writer.add_context_length(hp.context_length)
    writer.add_embedding_length(hp.hidden_size)
    writer.add_feed_forward_length(hp.intermediate_size)
    writer.add_block_count(hp.block_count)
    writer.add_head_count(hp.head_count)
    writer.add_head_count_kv(hp.head_count_kv)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
    if hp.head_dim != hp.hidden_size // hp.head_count:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    ROPE_WRITERS[hp.rope_type](writer, hp)
    vocab.write(writer)


def _extra_tensors(hp: LlamaHyperParameters) -> dict[str, np.ndarray]:
    """Tensors llama.cpp wants that the checkpoint does not store (Llama-3.1 rope frequencies)."""
    if hp.rope_type == "llama3":
        return {"rope_freqs.weight": llama3_rope_factors(hp)}
    return {}


def _write_tensor_data(stream, alignment: int, checkpoint: Checkpoint, plan: GGUFPlan,
                       extra: dict[str, np.ndarray], progress: Progress | None) -> None:
    total = plan.tensor_bytes() + sum(v.nbytes for v in extra.values())
    done = 0
    _pad(stream, alignment)
    current = None
    for tensor, encoded in _encoded_chunks(checkpoint, plan):
        if current is not None and tensor is not current:
            _pad(stream, alignment)
        current = tensor
        stream.write(memoryview(encoded).cast("B"))
        done += encoded.nbytes
        if progress:
            progress(done, total)
    if current is not None:
        _pad(stream, alignment)
    for values in extra.values():
        stream.write(values.tobytes())
        done += values.nbytes
        _pad(stream, alignment)
    if progress:
        progress(total, total)


def _encoded_chunks(checkpoint: Checkpoint, plan: GGUFPlan) -> Iterator[tuple[_OutputTensor, np.ndarray]]:
    """(tensor, its next chunk of rows in the output type), in file order; up to ENCODE_THREADS chunks are
    read and converted ahead of the one being written."""
    jobs = ((tensor, start, stop) for tensor in plan.tensors for start, stop in row_chunks(tensor.rows, tensor.row_width))
    with ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="gguf-encode") as pool:
        ahead: deque = deque()
        for tensor, start, stop in jobs:
            ahead.append((tensor, pool.submit(_encode_chunk, checkpoint, tensor, start, stop)))
            if len(ahead) >= ENCODE_THREADS:
                tensor, future = ahead.popleft()
                yield tensor, future.result()
        while ahead:
            tensor, future = ahead.popleft()
            yield tensor, future.result()


def _encode_chunk(checkpoint: Checkpoint, tensor: _OutputTensor, start: int, stop: int) -> np.ndarray:
    source = checkpoint.tensors[tensor.plan.hf_name]
    order = tensor.plan.row_order
    rows = source.read_stored_rows(slice(start, stop) if order is None else order[start:stop])
    return encode_rows(rows, tensor.ggml_type)


def _pad(stream, alignment: int) -> None:
    position = stream.tell()
    stream.write(b"\0" * ((-position) % alignment))
