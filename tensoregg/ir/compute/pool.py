"""Compute definitions of pools: MaxPool (and its Indices), AveragePool, LpPool and the global pools.

Windows follow the reference's geometry (``tensoregg.ir.ops.nn._window``): output position ``o``
reads input coordinate ``o * stride - begin + k * dilation`` for each tap ``k``. A tap outside X is
never read: along an axis where some window leaves X, the load's coordinate is clamped into range and
a select puts the combiner's neutral value (-inf for max, 0 for sums) in place of the value (axes
where every window stays inside X load as they are, which keeps the loops vectorizable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from tensoregg.ir.compute.expr import (
    Buffer,
    ComputeCtx,
    Expr,
    all_of,
    call,
    cast,
    clamp_index,
    const,
    define,
    idx,
    in_range,
    reduce,
    select,
)
from tensoregg.ir.compute.indexing import SCATTER_BUDGET
from tensoregg.ir.compute.linalg import padded, wide
from tensoregg.ir.compute.reductions import by_rows, count, power
from tensoregg.ir.compute.shape import ravel, unravel
from tensoregg.ir.ops.nn import ConvWindow, conv_window, lowest_value, unpooled_shape


def geometry(ctx: ComputeCtx) -> ConvWindow:
    x = ctx.input(0)
    return conv_window(dict(ctx.attrs), x.shape[2:], tuple(ctx.attrs["kernel_shape"]))


def coords(win: ConvWindow, out: Sequence[Expr], taps: Sequence[Expr]) -> list[Expr]:
    """The input coordinates that output position ``out`` reads at kernel ``taps``."""
    return [o * idx(s) - idx(b) + t * idx(d)
            for o, t, s, b, d in zip(out, taps, win.strides, win.begin, win.dilations)]


def leaves(win: ConvWindow, low: Sequence[int], high: Sequence[int]) -> list[bool]:
    """Per spatial axis: whether some window reads a coordinate outside [low, high)."""
    return [-b < lo or (o - 1) * s - b + sp > hi
            for b, o, s, sp, lo, hi in zip(win.begin, win.out, win.strides, win.span, low, high)]


def inside(win: ConvWindow, at: Sequence[Expr], low: Sequence[int], high: Sequence[int]) -> Expr | None:
    """Whether coordinates ``at`` lie in [low, high) (None: always, for every window)."""
    checks = leaves(win, low, high)
    return all_of([in_range(a, lo, hi) for a, lo, hi, check in zip(at, low, high, checks) if check])


def window_value(ctx: ComputeCtx, x: Buffer, win: ConvWindow, index: Sequence[Expr], combiner: str,
                 term: Callable[[Expr], Expr], neutral: float) -> Expr:
    """``combiner`` of ``term(x)`` over the taps of the window at output ``index`` (N, C, *out), taps
    outside x counting as ``neutral`` (with ``term(neutral) == neutral``).

    Where some window leaves x and windows move by 1 along the last axis, the taps read a copy of x
    padded with ``neutral``: loads that need no clamping stay contiguous along the output row, so
    they vectorize (a 3x3 AveragePool: 3.5x faster). At larger strides the loads are strided either
    way, and the copy costs more than it saves (a 3x3 MaxPool at stride 2: 0.43 -> 0.59 ms)."""
    n, c, *out = index
    spatial = x.shape[2:]
    if win.strides[-1] == 1 and any(leaves(win, [0] * len(spatial), spatial)):
        need = [(o - 1) * s + sp for o, s, sp in zip(win.out, win.strides, win.span)]
        x, win = padded(ctx, x, win.begin, need, fill=neutral), replace(win, begin=(0,) * len(spatial))
        spatial = x.shape[2:]
    edges = leaves(win, [0] * len(spatial), spatial)

    def body(*taps: Expr) -> Expr:
        at = coords(win, out, taps)
        ok = inside(win, at, [0] * len(spatial), spatial)
        clamped = (clamp_index(a, size) if edge else a for a, size, edge in zip(at, spatial, edges))
        value = term(x[(n, c, *clamped)])
        return value if ok is None else select(ok, value, const(neutral, value.dtype))
    return reduce(combiner, win.kernel, body, neutral)


@define("MaxPool")
def _max_pool(ctx: ComputeCtx) -> Sequence[Expr]:
    x, win = ctx.input(0), geometry(ctx)

    def peak_at(*o: Expr) -> Expr:
        return window_value(ctx, x, win, o, "max", lambda v: v, lowest_value(x.dtype))
    if len(ctx.outputs) == 1:
        return [peak_at(*ctx.index())]
    peak = ctx.stage("max", ctx.outputs[0].shape, peak_at)
    return [peak[ctx.index(0)], _argmax(ctx, x, win, peak)]


def _argmax(ctx: ComputeCtx, x: Buffer, win: ConvWindow, peak: Buffer) -> Expr:
    """MaxPool's Indices: the flat index into X of the first tap (row-major over the kernel) that
    reads X and holds the window's max (or NaN, if the max is); no such tap: tap 0, its coordinates
    clipped into X. Spatial axes column-major if storage_order is 1."""
    n, c, *out = ctx.index(1)
    spatial, kernel = x.shape[2:], win.kernel
    taps = int(np.prod(kernel, dtype=np.int64))
    kstride = [int(np.prod(kernel[a + 1:], dtype=np.int64)) for a in range(len(kernel))]

    def term(*t: Expr) -> Expr:
        at = coords(win, out, t)
        v, m = x[(n, c, *(clamp_index(a, size) for a, size in zip(at, spatial)))], peak[(n, c, *out)]
        hit = call("eq", v, m)
        if x.dtype.kind == "f":
            hit = call("or", hit, call("and", call("isnan", v), call("isnan", m)))
        ok = inside(win, at, [0] * len(spatial), spatial)
        number = sum((k * idx(s) for k, s in zip(t, kstride)), idx(0))
        return select(hit if ok is None else call("and", ok, hit), number, idx(taps))
    first = reduce("min", kernel, term, taps)
    first = select(call("eq", first, idx(taps)), idx(0), first)
    tap = [call("rem", call("div", first, idx(s)), idx(k)) for s, k in zip(kstride, kernel)]
    at = [clamp_index(a, size) for a, size in zip(coords(win, out, tap), spatial)]
    fastest_first = range(len(spatial)) if ctx.attrs["storage_order"] else reversed(range(len(spatial)))
    flat, stride = idx(0), 1
    for a in fastest_first:
        flat, stride = flat + at[a] * idx(stride), stride * spatial[a]
    return (n * idx(x.shape[1]) + c) * idx(stride) + flat


@define("AveragePool")
def _average_pool(ctx: ComputeCtx) -> Sequence[Expr]:
    """The window's sum (in the accumulation dtype) over the number of taps inside X (or inside the
    padded X, with count_include_pad). The reference divides in float64 (numpy's sum / int64 count);
    a float32 sum divided by its count in float32 rounds to the same value (the count is exact, and
    float64 carries more than 2 x 24 + 2 bits, so rounding twice changes nothing) at a quarter of
    the cost (float32 division is 16 lanes wide)."""
    x, win = ctx.input(0), geometry(ctx)
    spatial = x.shape[2:]
    total = window_value(ctx, x, win, ctx.index(), "add", lambda v: cast(v, wide(x.dtype)), 0)
    exact = np.result_type(total.dtype, np.float32)
    low, high = [0] * len(spatial), list(spatial)
    if ctx.attrs["count_include_pad"]:
        low, high = [-b for b in win.begin], [s + e for s, e in zip(spatial, win.end)]
    if any(leaves(win, low, high)):
        def taps_in(*o: Expr) -> Expr:
            return reduce("add", win.kernel, lambda *t: select(inside(win, coords(win, o, t), low, high),
                                                              idx(1), idx(0)), 0)
        counted = ctx.stage("count", win.out, taps_in)
        divisor = cast(counted[tuple(ctx.index()[2:])], exact)
    else:
        divisor = const(np.prod(win.kernel), exact)
    return [cast(cast(total, exact) / divisor, x.dtype)]


def _p(ctx: ComputeCtx) -> int:
    p = int(ctx.attrs["p"])
    if p < 1:
        raise ctx.unsupported(f"p={p} (< 1)")
    return p


@define("LpPool")
def _lp_pool(ctx: ComputeCtx) -> Sequence[Expr]:
    x, win, p = ctx.input(0), geometry(ctx), _p(ctx)
    total = window_value(ctx, x, win, ctx.index(), "add",
                         lambda v: power(call("abs", cast(v, wide(x.dtype))), p), 0)
    return [cast(power(total, 1.0 / p), x.dtype)]


@define("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(ctx: ComputeCtx) -> Sequence[Expr]:
    x = ctx.input(0)
    axes, acc = tuple(range(2, len(x.shape))), wide(x.dtype)

    def total(combiner: str, term: Callable[[Expr], Expr]) -> Expr:
        return by_rows(ctx, "rows", combiner, x.shape, axes, ctx.index(), True, lambda at: term(x[at]))
    if ctx.op == "GlobalMaxPool":
        return [total("max", lambda v: v)]
    if ctx.op == "GlobalAveragePool":
        return [cast(total("add", lambda v: cast(v, acc)) / const(count(x.shape, axes), acc), x.dtype)]
    p = _p(ctx)
    return [cast(power(total("add", lambda v: power(call("abs", cast(v, acc)), p)), 1.0 / p), x.dtype)]



@define("MaxUnpool")
def _max_unpool(ctx: ComputeCtx) -> Sequence[Expr]:
    """The reference's scatter (X's element q to the flat position I[q], negative counting from the
    end, the last of duplicates winning) as a gather: each output element inside the unpooled shape
    takes the last q whose index names it, or 0. That compares every pair of output and input
    elements, so large unpools are left unsupported."""
    x, indices = ctx.input(0), ctx.input(1)
    out = ctx.outputs[0].shape
    if ctx.outputs[0].size * x.size > SCATTER_BUDGET:
        raise ctx.unsupported(f"an unpool of {x.size} values into {ctx.outputs[0].size} elements (stated "
                              "as a gather, it compares every pair; too many)")
    unpooled = unpooled_shape(dict(ctx.attrs), x.shape)
    total = int(np.prod(unpooled, dtype=np.int64))
    index = ctx.index()
    flat = ravel(index, unpooled)

    def hit(*q: Expr) -> Expr:
        i: Expr = indices[q]
        i = select(call("lt", i, idx(0)), i + idx(total), i)
        return select(call("eq", i, flat), ravel(q, x.shape), idx(-1))
    last = reduce("max", x.shape, hit, -1)
    value = select(call("ge", last, idx(0)), x[tuple(unravel(call("max", last, idx(0)), x.shape))],
                   const(0, x.dtype))
    inside = all_of([in_range(i, 0, n) for i, n, m in zip(index, unpooled, out) if m > n])
    return [value if inside is None else select(inside, value, const(0, x.dtype))]
