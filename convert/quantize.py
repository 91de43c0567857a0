"""Every llama.cpp quantization type, described as data, and quantization through libllama.

`llama_cpp.llama_model_quantize` does the work (K-quants, IQ types and the `_S`/`_M`/`_L` mixes are
llama.cpp's own); parameters start from `llama_model_quantize_default_params()` because the struct
changes between versions. An importance matrix is handed over as the C array of
`llama_model_imatrix_data {name, data, size}` that the vendored llama.cpp reads.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bayling_local.errors import BackendUnavailableError, InvalidModelFileError, UsageError


@dataclass(frozen=True)
class QuantType:
    """One output type: its llama_ftype, the ggml type of most weights, and what it needs."""

    name: str
    file_type: int
    """general.file_type (llama_ftype)."""
    weight_type: str
    """ggml type of most weight matrices (mixes keep some tensors at a higher precision)."""
    block_bits: float
    """Bits per weight of `weight_type` (block bytes x 8 / block size); a file's real figure is higher
    for mixes and lower-precision-friendly tensors; the fidelity report measures it."""
    description: str
    requires_imatrix: bool = False
    """llama.cpp refuses to make it without an importance matrix."""
    benefits_from_imatrix: bool = False
    """`--imatrix auto` computes one for it when calibration text is given."""

    @property
    def bits_per_weight(self) -> float:
        return self.block_bits


def _q(name, ftype, weight, bits, description, requires=False, benefits=False) -> QuantType:
    return QuantType(name, ftype, weight, bits, description, requires, benefits or requires)


# llama_ftype values from llama.h; bits from ggml's block sizes. Ordered by size, as llama-quantize lists them.
#
# `requires=True` marks exactly the types libllama's quantizer refuses without an importance matrix
# ("this quantization requires an imatrix!"). ggml-org/llama.cpp src/llama-quant.cpp (commit 007dbbf3):
# `tensor_requires_imatrix()` says yes for tensors it makes IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S or IQ3_XXS,
# and Q2_K only in a Q2_K_S file (never for token_embd/output); `llama_model_quantize_impl()` checks it in its
# "preliminary iteration over all weights" before writing anything. Per file type that is: iq1_s, iq1_m,
# iq2_xxs, iq2_xs, iq2_s (IQ2_XS weights), iq2_m (IQ2_S), q2_k_s, iq3_xxs, and iq3_xs, whose mix makes
# attn_q/attn_k and the middle layers' ffn_gate/ffn_up IQ3_XXS (`llama_tensor_get_type_impl()`). This is
# wider than the llama-quantize tool's own up-front refusal (tools/quantize/quantize.cpp, "Please do not use
# IQ1_S, IQ1_M, IQ2_S, IQ2_XXS, IQ2_XS or Q2_K_S quantization without an importance matrix"), which we do not
# call. Caveat: a row width that is not a multiple of 256 falls back to IQ4_NL/Q4_0 first
# (`tensor_type_fallback()`), so a very small model may get through; every BayLing width is a multiple of 256.
# tests/test_convert_quantize.py checks this column against the vendored libllama.
QUANT_TYPES: dict[str, QuantType] = {
    t.name: t
    for t in (
        _q("iq1_s", 24, "IQ1_S", 1.5625, "1.56 bpw importance quantization", requires=True),
        _q("iq1_m", 31, "IQ1_M", 1.75, "1.75 bpw importance quantization", requires=True),
        _q("iq2_xxs", 19, "IQ2_XXS", 2.0625, "2.06 bpw importance quantization", requires=True),
        _q("iq2_xs", 20, "IQ2_XS", 2.3125, "2.31 bpw importance quantization", requires=True),
        _q("iq2_s", 28, "IQ2_XS", 2.3125, "2.5 bpw mix on IQ2_XS", requires=True),
        _q("iq2_m", 29, "IQ2_S", 2.5625, "2.7 bpw mix on IQ2_S", requires=True),
        _q("q2_k_s", 21, "Q2_K", 2.625, "Q2_K, small mix", requires=True),
        _q("q2_k", 10, "Q2_K", 2.625, "2-bit K-quant mix", benefits=True),
        _q("iq3_xxs", 23, "IQ3_XXS", 3.0625, "3.06 bpw importance quantization", requires=True),
        _q("iq3_xs", 22, "IQ3_XXS", 3.0625, "3.3 bpw mix on IQ3_XXS/IQ3_S", requires=True),
        _q("iq3_s", 26, "IQ3_S", 3.4375, "3.44 bpw importance quantization", benefits=True),
        _q("iq3_m", 27, "IQ3_S", 3.4375, "3.66 bpw mix on IQ3_S", benefits=True),
        _q("q3_k_s", 11, "Q3_K", 3.4375, "3-bit K-quant, small mix", benefits=True),
        _q("q3_k_m", 12, "Q3_K", 3.4375, "3-bit K-quant, medium mix", benefits=True),
        _q("q3_k_l", 13, "Q3_K", 3.4375, "3-bit K-quant, large mix", benefits=True),
        _q("iq4_xs", 30, "IQ4_XS", 4.25, "4.25 bpw non-linear quantization", benefits=True),
        _q("iq4_nl", 25, "IQ4_NL", 4.5, "4.5 bpw non-linear, blocks of 32", benefits=True),
        _q("q4_0", 2, "Q4_0", 4.5, "4-bit blocks of 32, scale only", benefits=True),
        _q("q4_1", 3, "Q4_1", 5.0, "4-bit blocks of 32, scale and minimum", benefits=True),
        _q("q4_k_s", 14, "Q4_K", 4.5, "4-bit K-quant, small mix"),
        _q("q4_k_m", 15, "Q4_K", 4.5, "4-bit K-quant, medium mix (the usual laptop choice)"),
        _q("q5_0", 8, "Q5_0", 5.5, "5-bit blocks of 32, scale only", benefits=True),
        _q("q5_1", 9, "Q5_1", 6.0, "5-bit blocks of 32, scale and minimum"),
        _q("q5_k_s", 16, "Q5_K", 5.5, "5-bit K-quant, small mix"),
        _q("q5_k_m", 17, "Q5_K", 5.5, "5-bit K-quant, medium mix"),
        _q("q6_k", 18, "Q6_K", 6.5625, "6-bit K-quant"),
        _q("q8_0", 7, "Q8_0", 8.5, "8-bit blocks of 32 (written directly, no quantizer)"),
        _q("bf16", 32, "BF16", 16.0, "bfloat16 (written directly)"),
        _q("f16", 1, "F16", 16.0, "16-bit float (written directly)"),
        _q("f32", 0, "F32", 32.0, "32-bit float, exact (written directly)"),
        _q("tq1_0", 36, "TQ1_0", 1.6875, "ternary, for ternary-trained (BitNet) models only"),
        _q("tq2_0", 37, "TQ2_0", 2.0625, "ternary, for ternary-trained (BitNet) models only"),
        _q("q1_0", 40, "Q1_0", 1.125, "1-bit blocks of 128, for models trained at low bit widths"),
        _q("q2_0", 41, "Q2_0", 2.25, "2-bit blocks, for models trained at low bit widths"),
    )
}
# Not offered: MXFP4_MOE (38) quantizes only mixture-of-experts tensors, which a dense Llama has none
# of, and NVFP4 (39), which this llama.cpp's quantizer refuses ("invalid output file type").
GGML_TYPES_NEWER_THAN_GGUF_PY = {42: "Q2_0"}
"""ggml types llama.cpp writes that the installed `gguf` package does not name yet."""


def ggml_type_name(type_id: int) -> str:
    import gguf

    try:
        return gguf.GGMLQuantizationType(type_id).name
    except ValueError:
        return GGML_TYPES_NEWER_THAN_GGUF_PY.get(type_id, f"type{type_id}")
ALIASES = {"q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"}


def quant_type(name: str) -> QuantType:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in QUANT_TYPES:
        raise UsageError(f"unknown quant type '{name}'; `bayling-local convert --list-quants` lists them")
    return QUANT_TYPES[key]


def quant_table() -> list[dict]:
    """The types as rows of data (what `--list-quants` prints)."""
    return [
        {
            "name": t.name,
            "bits_per_weight": t.block_bits,
            "weight_type": t.weight_type,
            "imatrix": "required" if t.requires_imatrix else ("helps" if t.benefits_from_imatrix else ""),
            "description": t.description,
        }
        for t in QUANT_TYPES.values()
    ]


class QuantizeError(InvalidModelFileError):
    """llama.cpp's quantizer refused or failed; the message carries its own error line."""


def quantize_gguf(
    source: Path,
    destination: Path,
    quant: str,
    *,
    imatrix: Mapping[str, np.ndarray] | None = None,
    threads: int | None = None,
) -> Path:
    """Quantize the f32/f16/bf16 GGUF `source` to `destination` (written to a temporary name first)."""
    target = quant_type(quant)
    if target.requires_imatrix and not imatrix:
        raise UsageError(
            f"{target.name} needs an importance matrix; pass --imatrix FILE, or --calibration PATH with "
            "--imatrix auto to compute one"
        )
    return run_llama_quantizer(source, destination, target, imatrix=imatrix, threads=threads)


QUANTIZER_BUFFER_BYTES = 256 << 20
"""Bytes of rows libllama converts at a time (`max_buf_size`). Its default, 8 GiB, holds Llama-3-8B's whole
128k x 4096 embedding table as float32 plus its output: 3.5 GiB peak RSS quantizing a bf16 GGUF with that
vocabulary to q4_k_m, 1.3 GiB with 256 MiB. Rows are quantized independently: the output is the same bytes."""


def run_llama_quantizer(
    source: Path,
    destination: Path,
    target: QuantType,
    *,
    imatrix: Mapping[str, np.ndarray] | None = None,
    threads: int | None = None,
) -> Path:
    """libllama's `llama_model_quantize` as it is, with none of our own checks: llama.cpp decides what it refuses."""
    low_level = _llama_cpp()
    params = low_level.llama_model_quantize_default_params()
    params.ftype = target.file_type
    params.nthread = threads or 0
    params.max_buf_size = QUANTIZER_BUFFER_BYTES
    keep_alive = _attach_imatrix(low_level, params, imatrix) if imatrix else None
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent)
    os.close(handle)
    try:
        with _captured_llama_log(low_level) as log:
            status = low_level.llama_model_quantize(
                str(source).encode("utf-8"), str(temporary).encode("utf-8"), ctypes.byref(params)
            )
        if status != 0:
            reason = log.error_line() or f"status {status}"
            raise QuantizeError(f"llama.cpp could not quantize {source.name} to {target.name}: {reason}")
        os.replace(temporary, destination)
    finally:
        Path(temporary).unlink(missing_ok=True)
        del keep_alive
    return destination


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as error:
        raise BackendUnavailableError(
            "quantizing needs llama-cpp-python; run `pip install 'bayling-local[llama]'`"
        ) from error
    return llama_cpp


def _attach_imatrix(low_level, params, imatrix: Mapping[str, np.ndarray]) -> list:
    """Point `params.imatrix` at a NULL-terminated array of {name, data, size}; returns what must stay alive."""
    arrays = [np.ascontiguousarray(values, dtype=np.float32) for values in imatrix.values()]
    names = [name.encode("utf-8") for name in imatrix]
    entries = (low_level.llama_model_imatrix_data * (len(arrays) + 1))()
    for entry, name, values in zip(entries, names, arrays):
        entry.name = name
        entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entry.size = values.size
    params.imatrix = ctypes.cast(entries, ctypes.POINTER(low_level.llama_model_imatrix_data))
    return [entries, arrays, names]


class _LlamaLog:
    def __init__(self):
        self.errors: list[str] = []

    def error_line(self) -> str | None:
        """llama.cpp's own reason ("failed to quantize: ..."), else its warning and error lines."""
        for line in reversed(self.errors):
            if "failed to quantize:" in line:
                return line.split("failed to quantize:", 1)[1].strip()
        text = " ".join(line.strip() for line in self.errors if line.strip() and "=====" not in line)
        return text[:400] or None


_LOG_LOCK = threading.Lock()


class _captured_llama_log:
    """Collect llama.cpp's error lines during one call instead of printing its per-tensor chatter."""

    def __init__(self, low_level):
        self.low_level = low_level

    def __enter__(self) -> _LlamaLog:
        _LOG_LOCK.acquire()
        log = _LlamaLog()

        def collect(level: int, text: bytes, user_data) -> None:
            # ggml's levels were renumbered between versions (ERROR is 3 or 4); keep WARN and above.
            if level in (3, 4):
                log.errors.append(text.decode("utf-8", errors="replace"))

        self.callback = self.low_level.llama_log_callback(collect)
        self.low_level.llama_log_set(self.callback, ctypes.c_void_p(0))
        return log

    def __exit__(self, *exc) -> None:
        try:
            from llama_cpp import _logger

            self.low_level.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        finally:
            _LOG_LOCK.release()


def read_gguf_bits_per_weight(path: Path) -> float:
    """Bits per weight of a GGUF's tensor data (bytes x 8 / parameters; alignment padding included)."""
    from bayling_local.gguf_header import read_gguf_header

    header = read_gguf_header(path)
    parameters = sum(int(np.prod(t.shape)) for t in header.tensors)
    return (header.file_size - header.data_offset) * 8 / parameters if parameters else 0.0
