"""How the GPU GEMM templates (``gemm``, ``mma``) fill their shared tiles: each k slice of A and B
copied by the block's threads, and the main loop over the slices with one shared stage (copy,
barrier, compute, barrier) or two, where the copies of slice k + 1 are asynchronous (``cp.async``,
``tensoregg.ir.intrinsics.AsyncCopy``) and fly while slice k is computed::

    copy slice 0 into stage 0; commit
    for k0 in 0..steps:
      if k0 + 1 < steps: copy slice k0 + 1 into stage (k0 + 1) % 2
      commit; wait until at most 1 group is in flight (slice k0's copies have landed)
      barrier                                   (everyone's have)
      compute on stage k0 % 2
      barrier                                   (stage k0 % 2 is free for slice k0 + 2)

An asynchronous copy moves ``width`` consecutive elements (16 bytes where the operand and the tile
are both contiguous along the same axis and aligned to it, else 4 or 8 bytes, one element of 4 bytes
or more: ``copy_width``); elements outside the matrices are zero-filled. Where the operand is no
plain load of a param (a fused prologue, a Conv's padded pixels, 16-bit elements read one at a
time), its slices are copied by ordinary loads and stores, into the other stage all the same.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tensoregg.ir.compute import Buffer, Expr, Load, Var, call, const, fresh, select
from tensoregg.ir.compute.expr import all_true, idx, in_range
from tensoregg.ir.contraction import Contraction, evaluate
from tensoregg.ir.intrinsics import ASYNC_BYTES, ASYNC_COMMIT, AsyncCopy, AsyncWait
from tensoregg.ir.loops import Barrier, For, Invoke, Ref, Stmt, Store, offset

Place = Callable[[Expr, Expr], Expr]
"""Where element (kk, line) of a k slice lies in its shared tile."""
SAMPLES = 64
"""Random (batch, line, k) points at which an operand's offsets are checked to be a sum of one
term per axis (the premise of ``copy_width``'s checks along each axis alone)."""


def copy_tile(c: Contraction, side: str, tile: Buffer, lines: int, place: Place, bk: int, threads: int,
              thread: Expr, first: Expr, k0: Expr, bi: Expr, read: Callable[[Expr], Expr] = lambda v: v,
              base: Expr | None = None) -> For:
    """The block's ``threads`` threads copying the k0-th ``bk``-wide slice of operand ``side`` (``a``:
    ``lines`` rows from ``first`` of A; ``b``: ``lines`` columns from ``first`` of B) into the shared
    ``tile`` at ``base + place(kk, line)``, in rounds: consecutive threads read consecutive k of A and
    consecutive n of B; outside the matrices they store 0. ``read`` maps a factor's value to the
    tile's (its dtype)."""
    m_or_n = c.m if side == "a" else c.n
    r = fresh("l")
    e = r * idx(threads) + thread
    kk, line = (call("rem", e, idx(bk)), call("div", e, idx(bk))) if side == "a" else \
        (call("div", e, idx(lines)), call("rem", e, idx(lines)))
    at_line, at_k = first + line, k0 * idx(bk) + kk
    inside = all_true([in_range(at_line, 0, m_or_n), in_range(at_k, 0, c.k)])
    safe_line, safe_k = call("min", at_line, idx(m_or_n - 1)), call("min", at_k, idx(c.k - 1))
    value = read(c.a(bi, safe_line, safe_k) if side == "a" else c.b(bi, safe_k, safe_line))
    at = place(kk, line) if base is None else base + place(kk, line)
    store = Store(tile, (at,), select(inside, value, const(0.0, tile.dtype)))
    return For(r, idx(0), idx(lines * bk // threads), [store])


def async_tile(c: Contraction, side: str, tile: Buffer, lines: int, place: Place, along: str, bk: int,
               threads: int, thread: Expr, first: Expr, k0: Expr, bi: Expr, stage: Expr,
               read: Callable[[Expr], Expr] = lambda v: v) -> For:
    """``copy_tile``'s copy into ``stage`` (0 or 1; the tile holds two) as asynchronous copies of
    ``copy_width`` elements along ``along`` (``k`` or ``line``: the axis ``place`` keeps
    contiguous), consecutive threads' vectors consecutive along it (single elements as
    ``copy_tile`` orders them); ``copy_tile``'s own where there is no such width."""
    size = tile.size // 2
    base = stage * idx(size)
    width = copy_width(c, side, tile.dtype, place, along, lines, bk, threads, size, read)
    if width == 0:
        return copy_tile(c, side, tile, lines, place, bk, threads, thread, first, k0, bi, read, base)
    m_or_n = c.m if side == "a" else c.n
    if width == 1:  # consecutive threads along the operand's rows (A) or columns (B), as copy_tile's
        along = "k" if side == "a" else "line"
    r = fresh("l")
    e = r * idx(threads) + thread
    per = (bk if along == "k" else lines) // width  # vectors along the contiguous axis
    step, other = call("rem", e, idx(per)) * idx(width), call("div", e, idx(per))
    kk, line = (step, other) if along == "k" else (other, step)
    at_line, at_k = first + line, k0 * idx(bk) + kk
    if along == "k":
        count = select(in_range(at_line, 0, m_or_n), _clamp(idx(c.k) - at_k, width), idx(0))
        safe_line = call("min", at_line, idx(m_or_n - 1))
        safe_k = call("min", at_k, idx((c.k - 1) // width * width))
    else:
        count = select(in_range(at_k, 0, c.k), _clamp(idx(m_or_n) - at_line, width), idx(0))
        safe_line = call("min", at_line, idx((m_or_n - 1) // width * width))
        safe_k = call("min", at_k, idx(c.k - 1))
    value = read(c.a(bi, safe_line, safe_k) if side == "a" else c.b(bi, safe_k, safe_line))
    assert isinstance(value, Load)  # copy_width's premise
    copy = Invoke(AsyncCopy(width, tile.dtype),
                  (Ref(tile, base + place(kk, line)), Ref(value.buffer, offset(value.buffer, value.index)),
                   count), width)
    return For(r, idx(0), idx(lines * bk // width // threads), [copy])


def _clamp(x: Expr, high: int) -> Expr:
    return call("max", call("min", x, idx(high)), idx(0))


def copy_width(c: Contraction, side: str, dtype: np.dtype, place: Place, along: str, lines: int, bk: int,
               threads: int, stage: int, read: Callable[[Expr], Expr] = lambda v: v) -> int:
    """The most elements of ``dtype`` an asynchronous copy of operand ``side`` into its tile may
    move at once (16, 8 or 4 bytes), or 0 (copy it by loads and stores): the operand a load of a
    param in ``dtype``, the slice an exact number of rounds of ``threads`` copies, the tile's
    ``stage`` (elements) a multiple of the width, and for more than
    one element, the operand's offsets and ``place`` both consecutive along ``along`` within each
    aligned run of that many elements (runs not straddling the operand's edge), and aligned to it
    (the operand checked along each axis over its whole extent, and as a sum of one term per axis
    at ``SAMPLES`` points)."""
    m_or_n = c.m if side == "a" else c.n
    bv, lv, kv = Var("b"), Var("line"), Var("k")
    value = read(c.a(bv, lv, kv) if side == "a" else c.b(bv, kv, lv))
    if not isinstance(value, Load) or value.buffer.dtype != dtype:
        return 0
    at = offset(value.buffer, value.index)
    axes = {"b": (bv, c.batch), "line": (lv, m_or_n), "k": (kv, c.k)}
    zeros = {id(v): np.zeros(1, np.int64) for v, _ in axes.values()}
    along_axis = {name: evaluate(at, {**zeros, id(v): np.arange(n)}, {}) for name, (v, n) in axes.items()}
    rng = np.random.default_rng(0)
    points = {id(v): rng.integers(0, n, SAMPLES) for v, n in axes.values()}
    sampled = evaluate(at, points, {})
    if sampled is None or any(a is None for a in along_axis.values()):
        return 0
    terms = {name: np.asarray(a, np.int64) for name, a in along_axis.items()}
    origin = int(terms["k"][0])
    summed = origin + sum(terms[name][points[id(axes[name][0])]] - origin for name in axes)
    if not np.array_equal(np.asarray(sampled, np.int64), summed):
        return 0
    tile = _tile_offsets(place, along, lines, bk)
    for nbytes in sorted(ASYNC_BYTES, reverse=True):
        width = nbytes // dtype.itemsize
        if (width * dtype.itemsize != nbytes or (bk if along == "k" else lines) % width
                or (lines * bk // width) % threads or stage % width):
            continue
        if width == 1 or (tile is not None and _runs(tile, width) and _runs(terms[along], width)
                          and all(np.all(t % width == 0) for name, t in terms.items() if name != along)):
            return width
    return 0


def _tile_offsets(place: Place, along: str, lines: int, bk: int) -> np.ndarray | None:
    """``place``'s offsets over the slice, ``along`` the last axis."""
    kk, line = Var("kk"), Var("line")
    grid = np.meshgrid(np.arange(bk), np.arange(lines), indexing="ij" if along == "line" else "xy")
    at = evaluate(place(kk, line), {id(kk): grid[0], id(line): grid[1]}, {})
    return None if at is None else np.asarray(at, np.int64)


def _runs(offsets: np.ndarray, width: int) -> bool:
    """Whether ``offsets`` (along their last axis) are consecutive within each aligned run of
    ``width`` and each run starts at a multiple of ``width`` (a run cut short by the axis's end
    included)."""
    n = offsets.shape[-1]
    head = offsets[..., np.arange(n) // width * width]
    return bool(np.all(offsets == head + np.arange(n) % width) and np.all(head % width == 0))


def pipeline(copies: Callable[[Expr, Expr], list[Stmt]], compute: Callable[[Expr], list[Stmt]], steps: int,
             stages: int) -> list[Stmt]:
    """The main loop over ``steps`` k slices (module docstring): ``copies(k0, stage)`` fill stage
    ``stage`` with slice ``k0``, ``compute(stage)`` reads it."""
    k0 = fresh("k0")
    if stages == 1:
        return [For(k0, idx(0), idx(steps), [*copies(k0, idx(0)), Barrier(), *compute(idx(0)), Barrier()])]
    ahead, guard = k0 + idx(1), fresh("g")
    prefetch = For(guard, idx(0), select(call("lt", ahead, idx(steps)), idx(1), idx(0)),
                   copies(ahead, call("rem", ahead, idx(2))))
    wait = [Invoke(ASYNC_COMMIT, ()), Invoke(AsyncWait(1), ()), Barrier()]
    return [*copies(idx(0), idx(0)), Invoke(ASYNC_COMMIT, ()),
            For(k0, idx(0), idx(steps), [prefetch, *wait, *compute(call("rem", k0, idx(2))), Barrier()])]
