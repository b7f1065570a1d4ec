"""The state of one kernel run, and the caching of values that only change with the lanes.

Vectorized loops bind their variable to an int64 array along an axis of its own: every lane value
has the kernel's ``rank`` axes (most of them of extent 1), the outermost vectorized loop's first and
each loop inside it the next, so that the innermost loops, which walk contiguous memory, are the
contiguous axes of the values, and values computed at an outer loop broadcast against inner ones.
Serial loops bind numpy int64 scalars. A value computed from lane variables only is cached until a
lane variable is bound to another array (re-entering a vectorized loop over the same range keeps
its array): the lane epoch changes then. A serial loop inside vectorized ones thus recomputes only
what depends on its variable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Fn = Callable[["Frame"], Any]
"""A compiled expression: its value (a numpy scalar, or an array over the lane axes) in a frame."""
Exec = Callable[["Frame"], None]
"""A compiled statement."""


class Frame:
    """One kernel run: variable bindings (``values`` by var id, and a local's row offsets by buffer
    id), the lane epoch (``epoch``: changes whenever a lane binding does), the extents of the active
    vectorized loops (``lanes``, outermost first), the lanes that run (``mask``: None for all; its
    generation ``mask_gen``), buffer memory (``views``: flat arrays by buffer id; ``rows``: a local's
    per-lane row), per-node caches and per-statement memos; ``rank`` is the number of lane axes of
    every value that varies over lanes. A GPU kernel also counts the barriers passed (``barriers``),
    numbers each block's epoch by the last it passed (``epochs``, by block) and keeps who accessed
    what (``races``, by buffer id), and its asynchronous copies not yet landed (``groups``: the
committed groups, oldest first, then the open one)."""

    def __init__(self, views: dict[int, np.ndarray], rank: int) -> None:
        self.rank = rank
        self.values: dict[int, Any] = {}
        self.epoch = 0
        self.tick = 0
        self.lanes: list[int] = []
        self.mask: np.ndarray | None = None
        self.mask_gen = 0
        self.views = views
        self.rows: dict[int, Any] = {}
        self.cache: dict[object, Any] = {}
        self.memo: dict[int, Any] = {}
        self.barriers = 0
        self.epochs = np.zeros(0, np.int64)
        self.races: dict[int, Any] = {}
        self.groups: list[list[Any]] = [[]]

    def lane_shape(self) -> tuple[int, ...]:
        """The shape of a value that varies over every active lane (1 on the axes of no active loop)."""
        return (*self.lanes, *(1,) * (self.rank - len(self.lanes)))

    def generation(self) -> int:
        self.tick += 1
        return self.tick


def cached(fn: Fn, slot: object) -> Fn:
    """``fn``, a function of lane variables (and locals' rows) only, computed once per lane epoch;
    computations that give the same value share a ``slot``."""
    def lookup(f: Frame) -> Any:
        hit = f.cache.get(slot)
        if hit is None or hit[0] != f.epoch:
            hit = f.cache[slot] = (f.epoch, fn(f))
        return hit[1]
    return lookup


def memoized(fn: Fn) -> Fn:
    """``fn`` computed once per statement run (a sub-expression the statement uses twice)."""
    slot = id(fn)

    def once(f: Frame) -> Any:
        memo = f.memo
        if slot not in memo:
            memo[slot] = fn(f)
        return memo[slot]
    return once
