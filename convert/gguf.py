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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bayling_local.convert.checkpoint import Checkpoint, row_chunks
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
    sha256: str
    tool: str
    date: str


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
    """float32 rows in the output type's bytes (llama.cpp's reference rounding, from gguf.quants)."""
    import gguf

    if ggml_type == "F32":
        return np.ascontiguousarray(rows, dtype="<f4")
    if ggml_type == "F16":
        if rows.size and float(np.abs(rows).max()) > F16_MAX:
            raise InvalidModelFileError(
                f"a weight of magnitude {float(np.abs(rows).max()):.3g} does not fit in f16; convert to bf16 or f32"
            )
        return rows.astype("<f2")
    return gguf.quants.quantize(np.ascontiguousarray(rows, dtype=np.float32), gguf.GGMLQuantizationType[ggml_type])


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
    try:
        _add_metadata(writer, plan, vocab, name, provenance, chat_format)
        extra = _extra_tensors(plan.hp)
        for tensor in plan.tensors:
            writer.add_tensor_info(tensor.plan.gguf_name, tensor.plan.shape, np.dtype(np.float32), tensor.nbytes(),
                                   raw_dtype=gguf.GGMLQuantizationType[tensor.ggml_type])
        for tensor_name, values in extra.items():
            writer.add_tensor_info(tensor_name, values.shape, values.dtype, values.nbytes)
        writer.open_output_file(Path(temporary))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        stream = writer.fout[0]
        _write_tensor_data(stream, writer.data_alignment, checkpoint, plan, extra, progress)
        stream.flush()
        os.fsync(stream.fileno())
        writer.close()
        os.replace(temporary, destination)
    except BaseException:
        writer.close()
        Path(temporary).unlink(missing_ok=True)
        raise
    return destination


def _add_metadata(writer, plan: GGUFPlan, vocab: GGUFVocab, name: str, provenance: Provenance,
                  chat_format: str | None) -> None:
    import gguf

    hp = plan.hp
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type(plan.output.file_type)
    if plan.output.matrix_type not in ("F32", "F16", "BF16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_source_url(provenance.source)
    writer.add_string("general.source.sha256", provenance.sha256)
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
    for tensor in plan.tensors:
        source = checkpoint.tensors[tensor.plan.hf_name]
        for start, stop in row_chunks(tensor.rows, tensor.row_width):
            order = tensor.plan.row_order
            rows = source.read_rows(slice(start, stop) if order is None else order[start:stop])
            encoded = encode_rows(rows, tensor.ggml_type)
            stream.write(encoded.tobytes())
            done += encoded.nbytes
            if progress:
                progress(done, total)
        _pad(stream, alignment)
    for values in extra.values():
        stream.write(values.tobytes())
        done += values.nbytes
        _pad(stream, alignment)
    if progress:
        progress(total, total)


def _pad(stream, alignment: int) -> None:
    position = stream.tell()
    stream.write(b"\0" * ((-position) % alignment))
