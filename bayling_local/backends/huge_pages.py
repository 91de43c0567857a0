"""A loaded model's weights in 2 MiB pages (Linux transparent huge pages).

Every decode step reads every weight once. In 4 KiB pages the weights of even a 135M-parameter int4 model
span tens of thousands of pages, far more than the TLB holds, so each step pays a page walk for most of
them; in a VM each walk goes through two page tables. Most distributions set transparent huge pages to
`madvise`: memory gets 2 MiB pages only where the program asks, and ONNX Runtime does not ask for the
weights it prepacks at load. So after a session is created, the process's large, densely used anonymous
memory (the weights, wherever the allocator put them, reused memory of an unloaded model included) is
collapsed into huge pages with `madvise(MADV_COLLAPSE)` (Linux 6.1+, synchronous, whatever the THP sysfs
mode). On older kernels `MADV_HUGEPAGE` lets khugepaged do it over time. Sparse regions are left alone:
collapsing fills a whole 2 MiB page, which would grow resident memory.

On a 2-core AMX Xeon VM, SmolLM2-135M int4 through this backend decoded 87.7 -> 94.4 tok/s at 1 thread
and 144.1 -> 150.6 at 2 (`benchmarks/onnx_int4_profile.py --variants shipped,4k`, which measures it on
any machine); 330 MB collapsed in 0.8 s for 1 MB more resident memory. Nothing here changes a number the
model computes.

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
DENSE = 0.9
"""Collapsed only where this share of a region is resident: a sparse one would grow to whole pages."""
MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
_EINVAL = 22

Span = tuple[int, int]


def dense_anonymous_memory() -> list[Span] | None:
    """The process's anonymous read-write regions ([start, end) addresses) of MIN_REGION or more that are
    at least DENSE resident and not yet all in huge pages; None where `/proc/self/smaps` cannot be read
    (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        text = Path("/proc/self/smaps").read_text("ascii", errors="replace")
    except OSError:
        return None
    spans = []
    for region in _regions(text):
        header, fields = region
        parts = header.split()
        anonymous = len(parts) < 6 or parts[5] == "[heap]"  # not a file, stack or vdso
        start, end = (int(x, 16) for x in parts[0].split("-"))
        size, resident = end - start, fields.get("Rss", 0)
        if (anonymous and parts[1].startswith("rw") and size >= MIN_REGION and resident >= DENSE * size
                and fields.get("AnonHugePages", 0) < resident):
            spans.append((start, end))
    return spans


def _regions(smaps: str) -> Iterable[tuple[str, dict[str, int]]]:
    """(header line, {field: bytes}) per region of /proc/self/smaps."""
    header, fields = None, {}
    for line in smaps.splitlines():
        name, _, rest = line.partition(":")
        if " " not in name and rest.strip().endswith("kB"):
            fields[name] = int(rest.split()[0]) * 1024
        elif "-" in line.split(" ", 1)[0]:
            if header is not None:
                yield header, fields
            header, fields = line, {}
    if header is not None:
        yield header, fields


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


def aligned(span: Span) -> Span | None:
    """The whole huge pages inside `span`, or None when it holds none worth asking for."""
    start = -(-span[0] // HUGE_PAGE) * HUGE_PAGE
    end = span[1] // HUGE_PAGE * HUGE_PAGE
    return (start, end) if end - start >= HUGE_PAGE and span[1] - span[0] >= MIN_REGION else None


@dataclass
class Collapse:
    """What was asked of the kernel for one model's memory, filled in by the background thread."""

    requested: int = 0
    """Bytes in whole huge pages of the large, dense anonymous memory found once the model was loaded."""
    collapsed: int = 0
    """Bytes the kernel put in huge pages at once (MADV_COLLAPSE)."""
    advised: int = 0
    """Bytes left to khugepaged (MADV_HUGEPAGE, kernels before 6.1)."""
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def describe(self) -> str:
        if not self.done.is_set():
            return f"collapsing {self.requested >> 20} MB into 2 MiB pages"
        if not self.requested:
            return "nothing to collapse (no large dense anonymous memory, or not Linux)"
        parts = [f"{self.collapsed >> 20} of {self.requested >> 20} MB collapsed into 2 MiB pages"]
        if self.advised:
            parts.append(f"{self.advised >> 20} MB left to khugepaged (MADV_HUGEPAGE)")
        return "; ".join(parts)


def collapse_dense_memory() -> Collapse:
    """Start putting the process's large, dense anonymous memory (a model just loaded) into huge pages, on
    a daemon thread; returns at once."""
    result = Collapse()
    regions = dense_anonymous_memory()
    spans = [s for s in map(aligned, regions or []) if s is not None]
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
