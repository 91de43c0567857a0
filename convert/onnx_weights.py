"""The weights of an ONNX export, streamed from the checkpoint into its external-data file as they are made.

A graph initializer here is a name, a type, a shape and a byte range of `model.onnx.data` (ONNX's external
data: `location`, `offset`, `length`); the protobuf itself holds none of the bytes. Each weight is read from
the checkpoint a few rows at a time (`checkpoint.row_chunks`), converted, transposed or packed into
`MatMulNBits` blocks, and written at its place in the file, so an 8B model exports in the memory of one
chunk (32 MB of float32) plus one weight's block scales.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnx import TensorProto, numpy_helper

from bayling_local.convert.checkpoint import row_chunks

INLINE_LIMIT = 1024
"""Tensors smaller than this stay inside the protobuf (what `onnx.save_model`'s `size_threshold` does)."""
LARGE_TENSOR = 1 << 20
LARGE_ALIGNMENT = 1 << 16
"""Tensors of LARGE_TENSOR bytes or more start at a multiple of 64 KiB (onnx's own external-data writer
aligns to the allocation granularity, so ONNX Runtime can map them); smaller ones at 16 bytes."""
SMALL_ALIGNMENT = 16
CHUNK_BYTES = 1 << 25
"""float32 bytes of checkpoint rows converted at a time."""
WEIGHT_ONLY_SYMMETRIC = True
"""Weight-only blocks have no zero point (like llama.cpp's Q4_0/Q8_0, and the ONNX Runtime GenAI builder):
ONNX Runtime's packer scales a symmetric block by its largest magnitude, which on SmolLM2-135M gave lower
KL to fp32 than its min/max blocks with zero points (convert/verify.py's 10 scripts: int4 0.509 -> 0.488,
int8 0.0147 -> 0.0131) and a smaller, faster decode (no zero-point term in the integer kernels).
Exports with zero points still load: the graph says which inputs a `MatMulNBits` has."""

# MatMulNBits `accuracy_level` (ONNX Runtime contrib_ops/cpu/quantization/matmul_nbits.cc): 0/1 compute in
# float32 (weights dequantized block by block), 4 quantizes the activations to int8 per block and runs MLAS's
# integer kernels (onnxruntime/core/mlas/lib/qnbitgemm.cpp: `MlasIsQNBitGemmAvailable`, SQNBIT_CompInt8).
#
# Why level 4 is right for 8-bit weights on AVX2 CPUs without VNNI too (read in ONNX Runtime 1.32's MLAS):
# CompInt8 quantizes each block of activations symmetrically to [-127, 127] (`QuantizeARow_CompInt8_avx2`,
# sqnbitgemm_kernel_avx2.cpp) and keeps the weights unsigned, folding the zero point in through block sums.
# Without VNNI the product is VPMADDUBSW (u8 x s8, each pair summed into a saturating int16):
#   - 4-bit weights are 0..15: a pair is at most 2 x 15 x 127 = 3810 (sqnbitgemm_kernel_avx2_int8_blklen*.h,
#     `accumulate_blklen*_avx2<vnni=false>`);
#   - 8-bit weights are 0..255, where a pair could reach 64770; the 8-bit kernels mask even and odd bytes
#     into two VPMADDUBSW ("2 x i8 x i8 may be larger than i16", `accumulate_q8_blklen64_*_avx2<vnni=false>`
#     in sqnbitgemm_kernel_avx2_int8_blklen64.h), so each int16 holds one product (<= 32385).
# VNNI CPUs use VPDPBUSDS (sqnbitgemm_kernel_avx2vnni.cpp, the avx512vnni files), which adds in int32.
# ONNX Runtime's *dynamic* quantization (MatMulInteger / DynamicQuantizeMatMul; QgemmU8S8KernelAvx2.asm)
# feeds full-range u8 activations and s8 weights to VPMADDUBSW unmasked: that broke our previous int8 on an
# AVX2-only EPYC (top-1 0.27 / KL 5.7 in English), and is why int8 is weight-only MatMulNBits now.
# Measured, not only read (benchmarks/onnx_avx2_check.py under `QEMU_CPU=Haswell qemu-x86_64`, whose CPUID has no
# AVX-512/VNNI so MLAS takes its AVX2 kernels; top-1 / KL against fp32, en de fr zh, block size 32):
#   previous dynamic int8   0.30/3.89  0.17/4.52  0.15/4.89  0.39/1.32   (native AVX-512 VNNI: KL 0.10-0.14)
#   8-bit MatMulNBits, 4    1.00/0.007 0.92/0.013 0.89/0.012 0.96/0.010  (native: 0.97/0.007 0.92/0.014 0.95/0.013 0.96/0.009)
#   int4, level 4           0.57/0.56  0.37/0.90  0.36/0.74  0.51/0.57   (native: the same within 0.03)
ACCURACY_LEVEL = 4
"""MatMulNBits `accuracy_level` of every int8/int4 export (recorded in bayling_onnx.json): int8 activations,
the fastest CPU kernel (8x the decode speed of level 0 for int4 on SmolLM2; KL to fp32 0.51 vs 0.49)."""


EMBEDDING_BITS = 8
"""The token embedding table in int8/int4 exports: 8-bit blocks read by `GatherBlockQuantized`, a quarter
of its float32 size (Llama-3-8B's 128k x 4096 table: 2.1 GB -> 0.5 GB)."""


_ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
               np.dtype(np.uint8): TensorProto.UINT8}


def pack_blocks(w: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(packed [N, blocks, block bytes], scales [N * blocks], zero points) of a [K, N] weight, blocks along K.

    Packs with ONNX Runtime's own kernel helpers (`quantize_matmul_4bits/8bits`), the ones its
    MatMulNBitsQuantizer calls; that class needs the `onnx_ir` package, which is not a dependency here.
    Each column is quantized on its own, so packing a weight column range by column range gives the bytes
    of packing it whole.
    """
    from onnxruntime.capi import _pybind_state

    k, n = w.shape
    blocks = (k + block_size - 1) // block_size
    packed = np.zeros((n, blocks, block_size * bits // 8), dtype=np.uint8)
    scales = np.zeros(n * blocks, dtype=w.dtype)
    zero_points = np.zeros(n * zero_point_bytes(k, bits, block_size), dtype=np.uint8)
    pack = getattr(_pybind_state, f"quantize_matmul_{bits}bits")
    pack(packed, np.ascontiguousarray(w), scales, zero_points, block_size, n, k, WEIGHT_ONLY_SYMMETRIC)
    return packed, scales, zero_points


def zero_point_bytes(k: int, bits: int, block_size: int) -> int:
    """Bytes of zero points per column of a [K, N] weight (packed `bits` to a byte, a column per row)."""
    return ((k + block_size - 1) // block_size * bits + 7) // 8


def block_names(name: str, bits: int) -> list[str]:
    """The initializers of weight `name` in `bits`-bit blocks: packed, scales[, zero points]."""
    names = [f"{name}_Q{bits}", f"{name}_scales"]
    return names if WEIGHT_ONLY_SYMMETRIC else [*names, f"{name}_zero_points"]


class ExternalData:
    """One `.onnx.data` file written by offset, and the initializers that point into it."""

    def __init__(self, path: Path):
        self.path = path
        self.initializers: list[TensorProto] = []
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._end = 0

    @property
    def size(self) -> int:
        return self._end

    def close(self) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, self._end)  # the last tensor may end in a hole
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ExternalData:  # noqa: PYI034 (Self needs Python 3.11)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Whole arrays

    def add(self, name: str, array: np.ndarray) -> str:
        """An array already in memory (norms, rotary tables, shapes); small ones stay in the protobuf."""
        array = np.ascontiguousarray(array)
        if array.nbytes < INLINE_LIMIT:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        offset = self._reserve(name, array.dtype, array.shape)
        self._write(offset, array)
        return name

    # Streamed from the checkpoint

    def add_rows(self, name: str, tensor, dtype) -> str:
        """A checkpoint tensor as it is stored, row order kept, in `dtype` (the embedding table)."""
        offset = self._reserve(name, np.dtype(dtype), tensor.shape)
        for rows in _chunks(tensor, dtype):
            self._write(offset, rows)
            offset += rows.nbytes
        return name

    def add_transposed(self, name: str, parts: Sequence, dtype) -> str:
        """The [K, N] weight of `MatMul(x, W)` from checkpoint tensors of [n_i, K] rows (a `Linear`'s
        weight, or q/k/v side by side): their rows become its columns, written in place row chunk by row
        chunk, so the transpose never needs the whole tensor in memory."""
        dtype = np.dtype(dtype)
        k, n = parts[0].row_width, sum(p.rows for p in parts)
        offset = self._reserve(name, dtype, (k, n))
        column = 0
        for part in parts:
            for rows in _chunks(part, dtype):
                self._write_columns(offset, n, column, np.ascontiguousarray(rows.T))
                column += rows.shape[0]
        return name

    def add_blocks(self, name: str, parts: Sequence, dtype, bits: int, block_size: int,
                   gather_layout: bool = False) -> list[str]:
        """Weight `name` in weight-only `bits`-bit blocks along K, from checkpoint tensors of [n_i, K] rows:
        `MatMulNBits`' B, scales and zero points; the packed blocks are written as each row chunk is packed.

        `gather_layout` shapes them as `GatherBlockQuantized` reads an embedding table ([vocab, hidden],
        [vocab, blocks]) instead of [N, blocks, block bytes] and flat scales.
        """
        dtype = np.dtype(dtype)
        k, n = parts[0].row_width, sum(p.rows for p in parts)
        blocks = (k + block_size - 1) // block_size
        names = block_names(name, bits)
        packed_shape = (n, blocks * block_size * bits // 8) if gather_layout else (n, blocks, block_size * bits // 8)
        offset = self._reserve(names[0], np.dtype(np.uint8), packed_shape)
        scales, zero_points = [], []
        for part in parts:
            for rows in _chunks(part, dtype):
                packed, chunk_scales, chunk_zero_points = pack_blocks(rows.T, bits, block_size)
                self._write(offset, packed)
                offset += packed.nbytes
                scales.append(chunk_scales)
                zero_points.append(chunk_zero_points)
        self.add(names[1], np.concatenate(scales).reshape((n, blocks) if gather_layout else (n * blocks,)))
        if not WEIGHT_ONLY_SYMMETRIC:
            zero_shape = (n, zero_point_bytes(k, bits, block_size)) if gather_layout else (-1,)
            self.add(names[2], np.concatenate(zero_points).reshape(zero_shape))
        return names

    # Bytes

    def _reserve(self, name: str, dtype: np.dtype, shape: Sequence[int]) -> int:
        """Place a tensor at the end of the file and add its initializer; its byte offset."""
        length = int(np.prod(shape)) * dtype.itemsize
        alignment = LARGE_ALIGNMENT if length >= LARGE_TENSOR else SMALL_ALIGNMENT
        offset = -(-self._end // alignment) * alignment
        self._end = offset + length
        self.initializers.append(external_tensor(name, _ONNX_TYPES[dtype], shape, self.path.name, offset, length))
        return offset

    def _write(self, offset: int, array: np.ndarray) -> None:
        view = memoryview(np.ascontiguousarray(array)).cast("B")
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def _write_columns(self, offset: int, width: int, column: int, block: np.ndarray) -> None:
        """Columns [column, column + block's width) of a row-major [K, width] tensor at `offset`."""
        itemsize = block.dtype.itemsize
        if column == 0 and block.shape[1] == width:
            self._write(offset, block)
            return
        for row, values in enumerate(block):
            self._write(offset + (row * width + column) * itemsize, values)


def external_tensor(name: str, onnx_type: int, shape: Sequence[int], location: str, offset: int,
                    length: int) -> TensorProto:
    """An initializer whose bytes are `length` bytes at `offset` of the file `location` beside the model."""
    proto = TensorProto(name=name, data_type=onnx_type, dims=[int(d) for d in shape])
    proto.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = proto.external_data.add()
        entry.key, entry.value = key, value
    return proto


def _chunks(tensor, dtype):
    """The tensor's rows [rows, row_width] in `dtype`, about CHUNK_BYTES of float32 at a time."""
    for start, stop in row_chunks(tensor.rows, tensor.row_width, CHUNK_BYTES):
        yield tensor.read_rows(slice(start, stop)).astype(dtype, copy=False)


def save_inline(proto, path: Path, data_path: Path, chunk: int = 1 << 22) -> None:
    """Save `proto` as one file holding its external initializers' bytes, copied from `data_path` a chunk at
    a time, never a whole tensor in memory.

    A protobuf parser merges a message field that occurs twice (repeated fields append): the graph is
    written without those initializers, and each follows as its own `ModelProto{graph{initializer}}`
    record, which onnx and ONNX Runtime read as one model with every initializer inline.
    """
    from onnx import ModelProto

    graph_only = ModelProto()
    graph_only.CopyFrom(proto)
    external = [t for t in graph_only.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    inline = [t for t in graph_only.graph.initializer if t.data_location != TensorProto.EXTERNAL]
    del graph_only.graph.initializer[:]
    graph_only.graph.initializer.extend(inline)
    with path.open("wb") as out, data_path.open("rb") as source:
        out.write(graph_only.SerializeToString())
        for tensor in external:
            where = {entry.key: entry.value for entry in tensor.external_data}
            offset, length = int(where["offset"]), int(where["length"])
            out.write(_inline_tensor_record(tensor, length))
            source.seek(offset)
            for start in range(0, length, chunk):
                out.write(source.read(min(chunk, length - start)))


# Protobuf wire format: a length-delimited field is its tag ((number << 3) | 2), a varint length, the bytes.
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9


def _inline_tensor_record(tensor: TensorProto, length: int) -> bytes:
    """The bytes of `ModelProto{graph{initializer: tensor with raw_data}}` up to the raw data itself."""
    header = TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims).SerializeToString()
    header += _field_start(_TENSOR_RAW_DATA, length)
    initializer = _field_start(_GRAPH_INITIALIZER, len(header) + length)
    graph_length = len(initializer) + len(header) + length
    return _field_start(_MODEL_GRAPH, graph_length) + initializer + header


def _field_start(number: int, length: int) -> bytes:
    return _varint((number << 3) | 2) + _varint(length)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
