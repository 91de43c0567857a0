"""Which accelerators this install can use, per backend (for `--device auto` and `doctor`)."""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

# The x86 instruction sets that change which kernels llama.cpp and ONNX Runtime run: int8 dot products
# without VNNI go through VPMADDUBSW, which saturates; llama.cpp repacks weights differently per class.
# (name shown, /proc/cpuinfo flag, macOS sysctl feature name)
X86_INSTRUCTION_SETS = (
    ("AVX2", "avx2", "AVX2"),
    ("FMA", "fma", "FMA"),
    ("F16C", "f16c", "F16C"),
    ("AVX-VNNI", "avx_vnni", "AVXVNNI"),
    ("AVX-512F", "avx512f", "AVX512F"),
    ("AVX-512BW", "avx512bw", "AVX512BW"),
    ("AVX-512VNNI", "avx512_vnni", "AVX512VNNI"),
    ("AVX-512BF16", "avx512_bf16", "AVX512BF16"),
    ("AMX-INT8", "amx_int8", "AMXINT8"),
    ("AMX-BF16", "amx_bf16", "AMXBF16"),
)


@functools.lru_cache(maxsize=1)
def llama_cpp_gpu_backend() -> str | None:
    """`cuda` or `metal` when the installed llama.cpp build offloads to that GPU, else None."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        return None
    system = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").upper()
    for marker, device in (("CUDA", "cuda"), ("METAL", "metal")):
        if marker in system:
            return device
    return "gpu"


@functools.lru_cache(maxsize=1)
def llama_cpp_has_amx() -> bool:
    """Whether the llama.cpp build runs Intel AMX kernels.

    Its AMX matmul (an "extra buffer type") segfaults on the quantized types it takes (llama-cpp-python
    0.3.36: Q4_1 on Sapphire Rapids, all of them on newer Xeons); the backend loads such files without
    extra buffer types.
    """
    return "AMX_INT8" in llama_cpp_cpu_features()


@functools.lru_cache(maxsize=1)
def llama_cpp_cpu_features() -> tuple[str, ...]:
    """The CPU features llama.cpp's build reports (`llama_print_system_info`): AVX2, AVX512, AMX_INT8,
    REPACK (weight repacking), OPENMP, ...; () when llama-cpp-python is not installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        return ()
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    return tuple(part.split("=")[0].split(":")[-1].strip() for part in info.split("|") if part.strip().endswith("= 1"))


# llama.cpp's CPU_FEATURES flag -> the extra buffer type it brings (ggml-cpu.cpp, in their order of use).
EXTRA_BUFFER_FEATURES = (("AMX_INT8", "AMX"), ("KLEIDIAI", "KleidiAI"), ("REPACK", "CPU_REPACK"))


def llama_cpp_extra_buffers_default(features: tuple[str, ...] | None = None) -> str:
    """What the llama.cpp backend does with extra buffer types on this machine (or on a build with
    `features`), for `doctor`."""
    features = llama_cpp_cpu_features() if features is None else features
    kinds = [name for flag, name in EXTRA_BUFFER_FEATURES if flag in features]
    if not kinds:
        return "this build has no extra buffer types (no weight repacking)"
    default = f"on ({', '.join(kinds)}), as in a stock llama.cpp"
    if "AMX_INT8" in features:
        default += "; off for GGUFs with Q4_0/Q4_1/Q8_0/K-quant weights, which llama.cpp's AMX kernels crash on"
    return default


@functools.lru_cache(maxsize=1)
def cpu_instruction_sets() -> tuple[str, ...]:
    """The SIMD instruction sets of this CPU that our backends' kernels depend on, e.g.
    ("AVX2", "FMA", "F16C", "AVX-512F", ...); ("NEON",) on ARM; () when they cannot be read."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return ("NEON",)
    flags = cpu_flags()
    if cpuid_masked():
        flags = {flag for flag in flags if not flag.startswith(MASKED_FLAG_PREFIXES)}
    return tuple(name for name, linux, darwin in X86_INSTRUCTION_SETS if linux in flags or darwin in flags)


MASKED_FLAG_PREFIXES = ("avx512", "avx_vnni", "amx")
"""What a CPUID-masked run hides (tests/support/cpuid_avx2.c): every set past AVX2."""


@functools.lru_cache(maxsize=1)
def cpuid_masked() -> bool:
    """True when this process's CPUID reports no AVX-512 on a CPU that has it (/proc/cpuinfo): a run
    under the AVX2 emulation that tests and benchmarks use. ONNX Runtime and numpy pick kernels by
    CPUID, so the instruction sets that matter are the masked ones; hardware lines say so."""
    if "avx512f" not in cpu_flags():
        return False
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as runtime
    except ImportError:
        try:  # numpy 1.x
            from numpy.core._multiarray_umath import __cpu_features__ as runtime
        except ImportError:
            return False
    return runtime.get("AVX512F") is False


def describe_instruction_sets(found: tuple[str, ...] | None = None) -> str:
    """One phrase for hardware lines: "AVX2 FMA F16C AVX-512F ...; no VNNI, no AMX" (this CPU's sets
    unless `found` gives a recorded machine's)."""
    found = cpu_instruction_sets() if found is None else tuple(found)
    if not found:
        return "instruction sets unknown"
    missing = [
        label for label, names in (("AVX-512", ("AVX-512F",)), ("VNNI", ("AVX-VNNI", "AVX-512VNNI")), ("AMX", ("AMX-INT8",)))
        if not any(name in found for name in names)
    ]
    return " ".join(found) + ("; no " + ", no ".join(missing) if missing and found != ("NEON",) else "")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel lists them (/proc/cpuinfo; sysctl on macOS), raw names such
    as `avx512f` or `cpuid_fault`; an empty set where they cannot be read."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags") and ":" in line:
                return set(line.split(":", 1)[1].split())
        return set()
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                                 capture_output=True, text=True, timeout=5, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return set()
        return set(out.replace("\n", " ").split())
    return set()


@dataclass(frozen=True)
class BackendReport:
    """One backend as `doctor` shows it."""

    name: str
    installed: bool
    version: str | None
    devices: tuple[str, ...]
    note: str = ""


def llama_cpp_report() -> BackendReport:
    if importlib.util.find_spec("llama_cpp") is None:
        return BackendReport("llama.cpp", False, None, (), "pip install 'bayling-local[llama]'")
    import llama_cpp

    gpu = llama_cpp_gpu_backend()
    devices = ("cpu", gpu) if gpu else ("cpu",)
    features = llama_cpp_cpu_features()
    note = "CPU features: " + (", ".join(features) if features else "baseline")
    return BackendReport("llama.cpp", True, llama_cpp.__version__, devices, note)


def transformers_report() -> BackendReport:
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
        return BackendReport("transformers", False, None, (), "pip install 'bayling-local[convert]'")
    import torch
    import transformers

    devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    return BackendReport("transformers", True, transformers.__version__, devices, f"torch {torch.__version__}")


def onnxruntime_report() -> BackendReport:
    if importlib.util.find_spec("onnxruntime") is None:
        return BackendReport("onnxruntime", False, None, (), "pip install 'bayling-local[onnx]'")
    import onnxruntime

    from bayling_local.backends.onnxrt import PROVIDER_FOR_DEVICE

    providers = onnxruntime.get_available_providers()
    devices = tuple(d for d, p in PROVIDER_FOR_DEVICE.items() if p in providers)
    note = "providers: " + ", ".join(providers) + "; no Metal provider (Apple GPU: use GGUF with llama.cpp)"
    return BackendReport("onnxruntime", True, onnxruntime.__version__, devices, note)


def available_memory_bytes() -> int | None:
    """Memory the kernel says a new allocation can take without swapping (Linux `MemAvailable`), or
    None where that is not known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may run on: its CPU affinity, with SMT siblings counted once
    (llama.cpp's own default thread count, `cpu_get_num_physical_cores`). llama-cpp-python's default,
    half the logical CPUs, is half the cores on a machine without SMT (most VMs, 2-core boxes): decode
    then runs on one core of two."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            return _physical_cores_elsewhere(len(allowed))
    return max(1, len(cores))


def _physical_cores_elsewhere(logical: int) -> int:
    """Without Linux's sysfs topology (macOS, Windows): psutil's count where installed, else the
    logical CPUs."""
    try:
        import psutil
    except ImportError:
        return max(1, logical)
    return max(1, min(logical, psutil.cpu_count(logical=False) or logical))


def machine_summary() -> str:
    return f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
