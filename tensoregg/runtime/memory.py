"""Memory for compiled models: 64-byte aligned buffers, and zeroed mappings on huge pages for
weights and workspaces (the plan of what lives where is ``tensoregg.ir.memory_plan``)."""

from __future__ import annotations

import contextlib
import mmap

import numpy as np

ALIGN = 64


def aligned_empty(nbytes: int) -> np.ndarray:
    """Uninitialized bytes starting at a 64-byte boundary."""
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + max(nbytes, 1)]


HUGE_PAGE = 2 << 20


def huge_zeros(nbytes: int) -> np.ndarray:
    """Zeroed bytes from an anonymous mapping, 2 MiB aligned and advised to use transparent huge pages
    where the system allows (a model's weights and workspace: one TLB entry per 2 MiB instead of per
    4 KiB; a cold run of a large model otherwise spends much of its memory time in page walks).
    The mapping is private: Python's default, a shared anonymous mapping, is shmem, which gets no
    transparent huge pages (measured here: 7.7 GB/s streaming it on one core, 16.7 private)."""
    mapping = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):  # not supported here: ordinary pages
            mapping.madvise(mmap.MADV_HUGEPAGE)
    raw = np.frombuffer(mapping, np.uint8)
    start = (-raw.ctypes.data) % HUGE_PAGE
    return raw[start:start + max(nbytes, 1)]
