"""ONNX Runtime on the CPU: its compute threads one per physical core, and the calling thread on a core of
its own while a run is in progress.

ONNX Runtime runs each operator on its intra-op pool plus the thread that called `run`. Left to choose the
thread count, it pins the pool's workers to cores; given a count, it pins nothing; in neither case does it
pin the caller ("ort does not set affinity on the main thread", its threading documentation). The
scheduler then moves the caller onto a worker's core now and then, and every operator of the step waits
for the slower of the two. On a 2-core Xeon VM, a plain ONNX Runtime loop decoding SmolLM2-135M int4 at
2 threads ran 2-5% faster with workers and caller pinned than with the count set and nothing pinned
(`benchmarks/onnx_int4_profile.py --variants shipped,unpinned` compares the two through this backend).

The caller is pinned only for the duration of each run and restored after: a thread a front end owns
keeps its own affinity, and threads it starts later do not inherit a single core.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bayling_local.backends.device import core_cpu_sets


@dataclass
class ThreadPlan:
    """How many intra-op threads a session gets and where they run."""

    threads: int
    """Intra-op threads, the caller included; 0 leaves the count to ONNX Runtime."""
    caller: frozenset[int] | None = None
    """The logical CPUs of the core the calling thread runs on during a run; None pins nothing."""
    workers: tuple[frozenset[int], ...] = ()
    """The logical CPUs of each worker's core (threads - 1 of them when pinned)."""
    reason: str = ""
    """Why nothing is pinned, for `runtime_settings`."""
    _running: int = field(default=0, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def pinned(self) -> bool:
        return self.caller is not None

    def ort_affinities(self) -> str:
        """`session.intra_op_thread_affinities`: per worker, its CPUs, 1-based, comma-separated; `;` between."""
        return ";".join(",".join(str(cpu + 1) for cpu in sorted(core)) for core in self.workers)

    def describe(self) -> str:
        if not self.pinned:
            return f"off ({self.reason})"
        workers = ", ".join(_cpu_list(core) for core in self.workers)
        return f"caller on CPU {_cpu_list(self.caller)} during runs, workers on CPU {workers}"

    @contextmanager
    def calling_thread(self) -> Iterator[None]:
        """The calling thread on its core for the block, then back on the CPUs it had. A run that starts
        while another is in progress (two threads scoring at once) is not pinned: two callers on one core
        would be slower than none."""
        with self._lock:
            alone = self._running == 0
            self._running += 1
        before = _pin_this_thread(self.caller) if alone and self.caller is not None else None
        try:
            yield
        finally:
            if before is not None:
                _pin_this_thread(before)
            with self._lock:
                self._running -= 1


def _pin_this_thread(cpus: frozenset[int] | set[int]) -> set[int] | None:
    """Move the calling thread onto `cpus`; the CPUs it had, or None where the system refuses (a cpuset
    changed since the plan was made)."""
    try:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
    except OSError:
        return None
    return before


def plan_threads(requested: int | None, pin: bool = True) -> ThreadPlan:
    """The plan for `requested` threads (None: one per physical core), pinned when `pin`, the platform can
    (Linux) and each thread gets a core of its own in the process's CPU affinity."""
    cores = core_cpu_sets()
    if cores is None or not hasattr(os, "sched_setaffinity"):
        return ThreadPlan(requested or 0, reason="no CPU topology or affinity on this platform")
    threads = requested or len(cores)
    if not pin:
        return ThreadPlan(threads, reason="pin_threads is false")
    if threads < 2:
        return ThreadPlan(threads, reason="one thread")
    if threads > len(cores):
        return ThreadPlan(threads, reason=f"{threads} threads on {len(cores)} physical cores")
    return ThreadPlan(threads, caller=cores[0], workers=tuple(cores[1:threads]))


def _cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))
