"""A loaded model's weights in 2 MiB pages (Linux transparent huge pages).

Every decode step reads every weight once. In 4 KiB pages the weights of even a 135M-parameter int4 model
span tens of thousands of pages, far more than the TLB holds, so each step pays a page walk for most of
them; in a VM each walk goes through two page tables. Most distributions set transparent huge pages to
`madvise`: memory gets 2 MiB pages only where the program asks, and ONNX Runtime does not ask for the
weights it prepacks at load. So after a session is created, the anonymous memory that appeared during the
load is collapsed into huge pages with `madvise(MADV_COLLAPSE)` (Linux 6.1+, synchronous, whatever the
THP sysfs mode). On older kernels `MADV_HUGEPAGE` lets khugepaged do it over time.

On a 2-core AMX Xeon VM, SmolLM2-135M int4 through this backend: 87-90 -> 95 tok/s at 1 thread,
144-147 -> 152 at 2, resident memory +0.5-2 MB (`benchmarks/onnx_int4_profile.py --variants
shipped,4k` measures it on any machine). Nothing here changes a number the model computes.

The collapse runs on a background thread: a large model's weights take seconds, and decoding may start
meanwhile (the kernel moves pages under running readers safely).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HUGE_PAGE = 2 << 20
MIN_REGION = 2 * HUGE_PAGE
"""Smaller regions hold at most one aligned huge page: not worth a system call."""
MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
_EINVAL = 22

Span = tuple[int, int]


def anonymous_memory() -> list[Span] | None:
    """The process's anonymous read-write memory regions ([start, end) addresses), or None where
    `/proc/self/maps` cannot be read (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lines = Path("/proc/self/maps").read_text("ascii", errors="replace").splitlines()
    except OSError:
        return None
    spans = []
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or not fields[1].startswith("rw"):
            continue
        if len(fields) > 5 and fields[5] != "[heap]":  # files, stacks, vdso
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        spans.append((start, end))
    return spans


def system_mode() -> str:
    """For `doctor`: the kernel's transparent-huge-page mode and what loading an ONNX model will do."""
    if not sys.platform.startswith("linux"):
        return "not Linux: weights stay in the pages the system gives"
    try:
        enabled = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "no transparent huge pages in this kernel: weights stay in 4 KiB pages"
    mode = next((word.strip("[]") for word in enabled.split() if word.startswith("[")), enabled.strip())
    return f"weights collapsed into 2 MiB pages after loading (system THP mode: {mode})"


def new_spans(before: Iterable[Span], after: Iterable[Span]) -> list[Span]:
    """The parts of `after` not covered by `before` (regions mapped or grown in between)."""
    old = sorted(before)
    result = []
    for start, end in sorted(after):
        cursor = start
        for old_start, old_end in old:
            if old_end <= cursor or old_start >= end:
                continue
            if old_start > cursor:
                result.append((cursor, old_start))
            cursor = max(cursor, old_end)
        if cursor < end:
            result.append((cursor, end))
    return result


def aligned(span: Span) -> Span | None:
    """The whole huge pages inside `span`, or None when it holds none worth asking for."""
    start = -(-span[0] // HUGE_PAGE) * HUGE_PAGE
    end = span[1] // HUGE_PAGE * HUGE_PAGE
    return (start, end) if end - start >= HUGE_PAGE and span[1] - span[0] >= MIN_REGION else None


@dataclass
class Collapse:
    """What was asked of the kernel for one model's memory, filled in by the background thread."""

    requested: int = 0
    """Bytes in whole huge pages of the memory that appeared while the model loaded."""
    collapsed: int = 0
    """Bytes the kernel put in huge pages at once (MADV_COLLAPSE)."""
    advised: int = 0
    """Bytes left to khugepaged (MADV_HUGEPAGE, kernels before 6.1)."""
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def describe(self) -> str:
        if not self.done.is_set():
            return f"collapsing {self.requested >> 20} MB into 2 MiB pages"
        if not self.requested:
            return "off (no new anonymous memory, or not Linux)"
        parts = [f"{self.collapsed >> 20} of {self.requested >> 20} MB collapsed into 2 MiB pages"]
        if self.advised:
            parts.append(f"{self.advised >> 20} MB left to khugepaged (MADV_HUGEPAGE)")
        return "; ".join(parts)


def collapse_new_memory(before: list[Span] | None) -> Collapse:
    """Start putting the anonymous memory mapped since `before` (from `anonymous_memory()`) into huge
    pages, on a daemon thread; returns at once."""
    result = Collapse()
    after = anonymous_memory()
    if before is None or after is None:
        result.done.set()
        return result
    spans = [s for s in map(aligned, new_spans(before, after)) if s is not None]
    result.requested = sum(end - start for start, end in spans)
    if not spans:
        result.done.set()
        return result
    threading.Thread(target=_advise, args=(spans, result), name="huge-pages", daemon=True).start()
    return result


def _advise(spans: list[Span], result: Collapse) -> None:
    # One huge page per call: a page the kernel refuses (EAGAIN: pages in use; ENOMEM: none free) leaves
    # the others collapsed, and the count stays exact.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for start, end in spans:
            for page in range(start, end, HUGE_PAGE):
                if libc.madvise(page, HUGE_PAGE, MADV_COLLAPSE) == 0:
                    result.collapsed += HUGE_PAGE
                elif ctypes.get_errno() == _EINVAL and page == spans[0][0]:  # a kernel without MADV_COLLAPSE
                    _advise_only(libc, spans, result)
                    return
    except (OSError, AttributeError):  # no libc to call: nothing is changed
        pass
    finally:
        result.done.set()


def _advise_only(libc, spans: list[Span], result: Collapse) -> None:
    for start, end in spans:
        if libc.madvise(start, end - start, MADV_HUGEPAGE) == 0:
            result.advised += end - start
