"""Which accelerators this install can use, per backend (for `--device auto` and `doctor`)."""

from __future__ import annotations

import functools
import importlib.util
import platform
from dataclasses import dataclass


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

    Its AMX matmul (an "extra buffer type") segfaults on the Sapphire Rapids machines we test on
    (llama-cpp-python 0.3.36, Q4_1 weights); the backend turns extra buffer types off when it is in.
    """
    import llama_cpp

    return "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")


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
    return BackendReport("llama.cpp", True, llama_cpp.__version__, devices, _cpu_features(llama_cpp))


def _cpu_features(llama_cpp) -> str:
    info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    flags = [part.split("=")[0].split(":")[-1].strip() for part in info.split("|") if part.strip().endswith("= 1")]
    return "CPU features: " + (", ".join(flags) if flags else "baseline")


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


def machine_summary() -> str:
    return f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
