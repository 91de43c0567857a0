"""The machine a benchmark ran on: CPU model and cores, memory, GPUs, and memory measurements."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HardwareInfo:
    cpu: str
    physical_cores: int | None
    logical_cores: int | None
    ram_bytes: int | None
    gpus: tuple[str, ...]
    system: str
    python: str
    instruction_sets: tuple[str, ...] = ()
    """SIMD sets the kernels depend on (AVX2, AVX-512F, AVX-512VNNI, AMX-INT8, ...): results from one
    CPU class do not stand for another."""
    cpuid_note: str = ""
    """Set when the run's CPUID was masked to AVX2 on a CPU with more (an emulated class)."""

    def describe(self) -> str:
        """One line for report headers."""
        from bayling_local.backends.device import describe_instruction_sets

        cores = f"{self.physical_cores or '?'} cores / {self.logical_cores or '?'} threads"
        ram = f"{self.ram_bytes / 2**30:.1f} GiB RAM" if self.ram_bytes else "RAM unknown"
        gpus = "; GPU: " + ", ".join(self.gpus) if self.gpus else ""
        sets = describe_instruction_sets(self.instruction_sets) + self.cpuid_note
        return f"{self.cpu} [{sets}] ({cores}), {ram}{gpus}; {self.system}, Python {self.python}"


def detect_hardware() -> HardwareInfo:
    import psutil

    from bayling_local.backends.device import cpu_instruction_sets, cpuid_masked

    return HardwareInfo(
        cpu=cpu_model(),
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True),
        ram_bytes=psutil.virtual_memory().total,
        gpus=gpu_names(),
        system=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=platform.python_version(),
        instruction_sets=cpu_instruction_sets(),
        cpuid_note=" (CPUID masked to AVX2 for this run: the CPU itself has AVX-512)" if cpuid_masked() else "",
    )


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: ")) and ":" in line:
                name = line.split(":", 1)[1].strip()
                if name and not name.isdigit():
                    return name
    if sys.platform == "darwin":
        brand = _command_output(["sysctl", "-n", "machdep.cpu.brand_string"])
        if brand:
            return brand
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_names() -> tuple[str, ...]:
    """NVIDIA GPUs with their memory, from nvidia-smi (no heavy import); () when there are none."""
    if shutil.which("nvidia-smi") is None:
        return ()
    out = _command_output(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"])
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def _command_output(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def process_peak_rss_bytes() -> int:
    """The process's resident-memory high-water mark since it started (ru_maxrss; process-wide)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def gpu_memory_used_bytes(device: str) -> int | None:
    """Memory in use on the current CUDA device (device-wide, every process), or None off CUDA.

    Read through torch when it is installed with CUDA; llama.cpp's own allocations are not torch's,
    so torch's per-process allocator counters would miss them.
    """
    if device != "cuda" or ("torch" not in sys.modules and not _torch_installed()):
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return int(total - free)
    except Exception:
        return None


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


class PeakRssSampler:
    """Samples this process's resident memory in a background thread; `peak` is the highest seen.

    Unlike ru_maxrss it covers only the time it runs, so a later, smaller model in the same process
    is not charged with an earlier, larger one's peak.
    """

    def __init__(self, interval_s: float = 0.02):
        import psutil

        self._process = psutil.Process(os.getpid())
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = self._process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)
