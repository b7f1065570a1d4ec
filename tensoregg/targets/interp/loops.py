"""How loops run: in order in Python (``serial_loop``), or vectorized, their variable an index
array along a lane axis of its own (``vector_loop``; a fused loop over its whole range with each part
along an axis of its own, ``split_loop``). A loop whose bounds differ between lanes runs over their
union with a mask of the lanes in range; in a GPU thread, such a loop runs each lane's own iterations
(``trip_loop``). Binding a lane variable to another array starts a new lane epoch (``frame``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tensoregg.targets.interp.frame import Exec, Fn, Frame
from tensoregg.targets.interp.numerics import c_div, c_rem


def row_index(lanes: Sequence[int], rank: int) -> np.ndarray:
    """Each lane's row (0 .. prod(lanes) - 1, in the loops' order) in a local allocated under
    vectorized loops of these extents (outermost first), shaped to broadcast over them."""
    row: Any = np.zeros((), np.int64)
    for level, n in enumerate(lanes):
        row = row * n + _axis(n, level, rank)
    return np.asarray(row)


def _axis(n: int, level: int, rank: int, start: int = 0) -> np.ndarray:
    """``start .. start + n - 1`` along lane axis ``level`` of a frame of ``rank`` axes."""
    shape = [1] * rank
    shape[level] = n
    return np.arange(start, start + n, dtype=np.int64).reshape(shape)


def _running(x: Any, mask: np.ndarray | None) -> np.ndarray:
    """The values of ``x`` in the lanes that run."""
    if mask is None:
        return np.ravel(x)
    shape = np.broadcast_shapes(np.shape(x), mask.shape)
    return np.broadcast_to(x, shape)[np.broadcast_to(mask, shape)]


Parts = list[tuple[int, int, bool]]
"""A fused loop's parts, innermost first: (var id, extent, whether it is the outermost)."""


def bind_lanes(f: Frame, binding: Sequence[tuple[int, Any]]) -> None:
    """Bind lane variables (or a local's row offsets) to these arrays; unless they already are,
    values cached from lane variables are stale: a new lane epoch begins."""
    if any(f.values.get(k) is not v for k, v in binding):
        f.values.update(binding)
        f.epoch = f.generation()


def _bind(values: dict[int, Any], vid: int, value: Any, parts: Parts) -> None:
    """Bind a loop variable (and the parts of a fused one, in mixed radix as codegen reads them)."""
    values[vid] = value
    rest = value
    scalar = not isinstance(value, np.ndarray)
    for pid, n, outermost in parts:
        if scalar:  # C's truncating division, on Python ints
            q = abs(int(rest)) // n * (1 if rest >= 0 else -1)
            values[pid] = np.int64(rest if outermost else rest - q * n)
            rest = q
        else:
            values[pid] = rest if outermost else c_rem(rest, np.int64(n))
            rest = c_div(rest, np.int64(n))


def serial_loop(start: Fn, stop: Fn, body: Exec, vid: int, parts: Parts) -> Exec:
    def run(f: Frame) -> None:
        a, b = start(f), stop(f)
        if np.ndim(a) == 0 and np.ndim(b) == 0:
            for i in range(int(a), int(b)):
                _bind(f.values, vid, np.int64(i), parts)
                body(f)
            return
        outer, outer_gen = f.mask, f.mask_gen
        lows, highs = _running(a, outer), _running(b, outer)
        if not lows.size:
            return
        for i in range(int(lows.min()), int(highs.max())):
            mask = (a <= i) & (b > i)
            if outer is not None:
                mask = mask & outer
            if not mask.any():
                continue
            f.mask, f.mask_gen = mask, f.generation()
            _bind(f.values, vid, np.int64(i), parts)
            body(f)
        f.mask, f.mask_gen = outer, outer_gen
    return run


def _same(x: Any, y: Any) -> bool:
    return x is y or (np.ndim(x) == 0 and np.ndim(y) == 0 and x == y)


def vector_loop(start: Fn, stop: Fn, body: Exec, vid: int, parts: Parts, level: int, slot: int) -> Exec:
    mask_slot = ("mask", slot)

    def run(f: Frame) -> None:
        a, b = start(f), stop(f)
        outer, outer_gen = f.mask, f.mask_gen
        ragged = np.ndim(a) > 0 or np.ndim(b) > 0
        if ragged:
            lows, highs = _running(a, outer), _running(b, outer)
            if not lows.size:
                return
            lo, hi = int(lows.min()), int(highs.max())
            ragged = lo != lows.max() or hi != highs.min()
        else:
            lo, hi = int(a), int(b)
        if hi <= lo:
            return
        hit = f.cache.get(slot)
        if hit is None or hit[0] != (lo, hi):
            index = _axis(hi - lo, level, f.rank, lo)
            bound: dict[int, Any] = {}
            _bind(bound, vid, index, parts)
            hit = f.cache[slot] = ((lo, hi), index, list(bound.items()))
        bind_lanes(f, hit[2])
        if ragged:
            old = f.cache.get(mask_slot)
            if old is None or not (old[0] == (outer_gen, lo, hi) and _same(old[1], a) and _same(old[2], b)):
                mask = (a <= hit[1]) & (hit[1] < b)
                mask = mask if outer is None else mask & outer
                old = f.cache[mask_slot] = ((outer_gen, lo, hi), a, b, mask, f.generation())
            f.mask, f.mask_gen = old[3], old[4]
        f.lanes.append(hi - lo)
        body(f)
        f.lanes.pop()
        f.mask, f.mask_gen = outer, outer_gen
    return run


def split_loop(body: Exec, vid: int, parts: list[int], extents: list[int], level: int, slot: int) -> Exec:
    """A vectorized fused loop over its whole range, each part along an axis of its own (outermost
    part outermost), the fused variable their mixed-radix sum: values addressed by the parts stay
    affine in the lanes."""
    def run(f: Frame) -> None:
        if not math.prod(extents):
            return
        if slot not in f.cache:  # the same arrays every time: the range is constant
            arrays = [_axis(n, level + k, f.rank) for k, n in enumerate(extents)]
            fused: Any = np.zeros((), np.int64)
            for a, n in zip(arrays, extents):
                fused = fused * n + a
            f.cache[slot] = [(vid, fused), *zip(parts, arrays)]
        bind_lanes(f, f.cache[slot])
        f.lanes.extend(extents)
        body(f)
        del f.lanes[-len(extents):]
    return run


def trip_loop(start: Fn, stop: Fn, body: Exec, vid: int, parts: Parts) -> Exec:
    """A GPU thread's own loop, whose bounds may differ between the lanes: iteration ``j`` binds
    ``start + j`` (an array over the lanes) and runs the lanes where that is below ``stop``, so each
    lane makes its own trip count of iterations (a guard of 0 or 1 iterations costs one)."""
    def run(f: Frame) -> None:
        a, b = start(f), stop(f)
        outer, outer_gen = f.mask, f.mask_gen
        trips = np.maximum(np.subtract(b, a), 0)
        live = _running(trips, outer)
        for j in range(int(live.max()) if live.size else 0):
            mask = trips > j
            f.mask, f.mask_gen = (mask if outer is None else mask & outer), f.generation()
            _bind(f.values, vid, a + np.int64(j), parts)
            body(f)
        f.mask, f.mask_gen = outer, outer_gen
    return run
