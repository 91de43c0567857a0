"""Which backend decodes faster on which CPU class, as measured: the table `--backend auto` reads when this
machine's own `bench speed` records do not cover both artifacts of a model (bayling_local/families.py).

Both are data: CPU classes are rows matched by instruction sets, measured ratios are rows with their source.
A class without a measured row gets llama.cpp, the default, and says so: a figure from one class never
stands for another.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass

GGUF, ONNX = "gguf", "onnx"
BACKEND_OF_FORMAT = {GGUF: "llama.cpp", ONNX: "onnxruntime"}
"""The backend `--backend auto` loads each artifact format with."""


@dataclass(frozen=True)
class CpuClass:
    """A class of CPUs whose kernels (and so decode speeds) behave alike."""

    key: str
    label: str
    requires: tuple[str, ...]
    """Instruction sets (backends/device.py's names) every CPU of the class has."""
    system: str | None = None
    """`platform.system()` the class is limited to (Apple: Darwin)."""

    def matches(self, instruction_sets: tuple[str, ...], system: str) -> bool:
        return all(name in instruction_sets for name in self.requires) and self.system in (None, system)


# First match wins: the richest class first.
CPU_CLASSES = (
    CpuClass("amx", "x86 with AMX", ("AMX-INT8",)),
    CpuClass("avx512-vnni", "x86 with AVX-512 and VNNI, no AMX", ("AVX-512F", "AVX-512VNNI")),
    CpuClass("avx512", "x86 with AVX-512, no VNNI", ("AVX-512F",)),
    CpuClass("avx2", "x86 with AVX2, no AVX-512", ("AVX2",)),
    CpuClass("apple", "Apple silicon", ("NEON",), system="Darwin"),
    CpuClass("arm", "ARM (NEON)", ("NEON",)),
)
UNKNOWN_CPU = CpuClass("unknown", "a CPU whose instruction sets could not be read", ())


def cpu_class(instruction_sets: tuple[str, ...] | None = None, system: str | None = None) -> CpuClass:
    """The class of this CPU (or of one with `instruction_sets` under `system`)."""
    if instruction_sets is None:
        from bayling_local.backends.device import cpu_instruction_sets

        instruction_sets = cpu_instruction_sets()
    system = system or platform.system()
    return next((c for c in CPU_CLASSES if c.matches(tuple(instruction_sets), system)), UNKNOWN_CPU)


@dataclass(frozen=True)
class MeasuredRatio:
    """ONNX decode speed over llama.cpp's for one CPU class and weight width, and where it was measured."""

    cpu_class: str
    bits: int
    onnx_per_gguf: float
    """ONNX Runtime decode tok/s / llama.cpp decode tok/s."""
    pair: str
    source: str

    @property
    def faster_format(self) -> str:
        return ONNX if self.onnx_per_gguf > 1.0 else GGUF


MEASURED_RATIOS = (
    MeasuredRatio(
        "amx", 4, 1.53, "ONNX int4 vs llama.cpp Q4_0",
        "Intel Xeon with AVX-512, VNNI and AMX, SmolLM2-135M, symmetric int4 with a 4-bit output layer, 2 threads, "
        "bench speed -p 128 -n 128 in alternated processes on a quiet machine (median 134.9 vs 88.3 tok/s; 1.66x "
        "at 1 thread); llama.cpp without weight repacking, because its AMX kernels crash on Q4_0 there",
    ),
    MeasuredRatio(
        "amx", 8, 1.43, "ONNX int8 vs llama.cpp Q8_0",
        "Intel Xeon with AVX-512, VNNI and AMX, SmolLM2-135M, symmetric int8, 2 threads, bench speed -p 128 -n 128 "
        "in alternated processes on a quiet machine (median 107.0 vs 75.0 tok/s); llama.cpp without weight "
        "repacking, because its AMX kernels crash on Q8_0 there",
    ),
    MeasuredRatio(
        "avx2", 4, 0.83, "ONNX int4 vs llama.cpp Q4_0",
        "AMD EPYC, AVX2 without AVX-512/VNNI/AMX, SmolLM2-135M, 2 threads, bench speed -p 128 -n 128 "
        "on a quiet machine (issue 11; 0.93x at 1 thread; 0.88x at 1 thread under load, "
        "benchmarks/onnx_int4_profile.py); measured with the earlier export (zero points, 8-bit output layer)",
    ),
    MeasuredRatio(
        "avx512-vnni", 4, 0.93, "ONNX int4 vs llama.cpp Q4_0",
        "AMD EPYC with AVX-512 and VNNI, SmolLM2-135M, symmetric int4 with a 4-bit output layer, 2 threads, "
        "bench speed -p 128 -n 128 in alternated processes on a quiet machine (median 143 vs 154 tok/s; "
        "0.76x at 1 thread)",
    ),
    MeasuredRatio(
        "avx512-vnni", 8, 0.96, "ONNX int8 vs llama.cpp Q8_0",
        "AMD EPYC with AVX-512 and VNNI, SmolLM2-135M, symmetric int8, 2 threads, bench speed -p 128 -n 128 "
        "in alternated processes on a quiet machine (median 105 vs 109 tok/s)",
    ),
)


@dataclass(frozen=True)
class Pick:
    """The artifact format `--backend auto` runs, and the one line that says why."""

    format: str
    reason: str

    @property
    def backend(self) -> str:
        return BACKEND_OF_FORMAT[self.format]


def measured_ratio(cpu: CpuClass, bits: int | None) -> MeasuredRatio | None:
    return next((r for r in MEASURED_RATIOS if r.cpu_class == cpu.key and r.bits == bits), None)


def table_pick(cpu: CpuClass, bits: int | None) -> Pick:
    """The measured table's choice for `bits`-bit weights on `cpu`; llama.cpp where nothing was measured."""
    row = measured_ratio(cpu, bits)
    if row is None:
        width = f"{bits}-bit weights" if bits else "these weights"
        return Pick(GGUF, f"llama.cpp, the default: ONNX vs llama.cpp was not measured on {cpu.label} for {width}")
    return Pick(
        row.faster_format,
        f"{BACKEND_OF_FORMAT[row.faster_format]}: {row.pair} decodes at {row.onnx_per_gguf:.2f}x on {cpu.label} "
        f"(measured: {row.source})",
    )


def speed_pick(gguf_tps: float, onnx_tps: float, where: str) -> Pick:
    """The faster of two measured decode speeds (a tie goes to llama.cpp, the default)."""
    faster = ONNX if onnx_tps > gguf_tps else GGUF
    return Pick(
        faster,
        f"{BACKEND_OF_FORMAT[faster]}: ONNX decodes at {onnx_tps / gguf_tps:.2f}x llama.cpp "
        f"({onnx_tps:.1f} vs {gguf_tps:.1f} tok/s) {where}",
    )


def weight_bits(quant: str) -> int | None:
    """The weight width a quant name says: Q4_0, Q4_K_M, IQ4_XS, int4 -> 4; Q8_0, int8 -> 8; F16, BF16,
    fp16 -> 16; None for `unknown`. Artifacts are only swapped for one of the same width."""
    found = re.search(r"\d+", quant or "")
    return int(found.group()) if found else None
