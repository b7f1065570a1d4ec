"""Memory limits: what the compiler and the reference interpreter refuse to allocate.

A memory plan (weights, workspace, inputs and outputs), a reference result or temporary, beyond
``memory_limit()`` is a ``ResourceError`` naming the node, op and shape, raised before allocating
(instead of numpy's ``MemoryError``, ``OSError`` from a mapping, or the out-of-memory killer).
Constant folding keeps a node unfolded rather than materialize a constant larger than
``FOLD_BYTES`` and its inputs together (a few bytes of model must not become gigabytes of weights).
"""

from __future__ import annotations

import os

from tensoregg.errors import ParameterError, ResourceError

LIMIT_ENV = "TENSOREGG_MEMORY_LIMIT"
"""Environment variable overriding the limit: bytes, optionally with a K, M, G or T suffix (1024s)."""
DEFAULT_FRACTION = 0.5
"""The default limit, as a fraction of the machine's physical memory."""
FOLD_BYTES = 64 << 20
"""Constant folding materializes a value of at most this many bytes, or of its inputs' bytes."""
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def physical_memory() -> int:
    """Bytes of physical memory (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def memory_limit() -> int:
    """The most bytes one model may need: ``$TENSOREGG_MEMORY_LIMIT``, else ``DEFAULT_FRACTION`` of
    the physical memory (1 TiB where that is unknown)."""
    text = os.environ.get(LIMIT_ENV, "").strip().upper().removesuffix("B")
    if not text:
        return int(physical_memory() * DEFAULT_FRACTION) or 1 << 40
    digits, unit = (text[:-1], text[-1]) if text[-1] in _UNITS else (text, "")
    if not digits.isdigit():
        raise ParameterError(f"{LIMIT_ENV}={os.environ[LIMIT_ENV]!r}: expected a number of bytes, "
                             "optionally with a K, M, G or T suffix")
    return int(digits) * _UNITS[unit]


def check_memory(nbytes: int, what: str) -> None:
    """ResourceError unless ``nbytes`` fits the memory limit; ``what`` names the node, op and shape."""
    limit = memory_limit()
    if nbytes > limit:
        raise ResourceError(f"{what} needs {_size(nbytes)}, over the memory limit of {_size(limit)} "
                            f"(set {LIMIT_ENV} to change it)")


def _size(nbytes: int) -> str:
    return f"{nbytes / (1 << 30):.3g} GiB" if nbytes >= 1 << 30 else f"{nbytes} bytes"
