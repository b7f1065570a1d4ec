"""Compute definitions of the sampling ops: GridSample and AffineGrid.

GridSample follows its reference step by step: each grid coordinate is unnormalized, rounded
(nearest), and clipped (border) or reflected (reflection) in the grid's dtype, into a float64 stage
per spatial axis; each output element then sums, in float64 and in the reference's order, its taps'
weights times X at the taps (clamped into X, zero outside it with zeros padding). AffineGrid applies
theta to the regular grid's coordinates, which are compile-time constants (numpy's linspace).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from tensoregg.ir.compute.elementwise import c
from tensoregg.ir.compute.expr import (
    INDEX,
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
    select,
)

F64 = np.dtype(np.float64)
CUBIC_A = -0.75


def reflect(x: Expr, lo: float, hi: float) -> Expr:
    """Coordinate ``x`` reflected off the borders lo and hi until it falls inside [lo, hi], in x's
    dtype (as the reference's ``_reflect``)."""
    span = hi - lo
    if span <= 0:
        return c(x, lo)
    below, above = call("lt", x, lo), call("gt", x, hi)
    dist = select(below, lo - x, x - hi)
    bounces = call("floor", dist / span)
    rest = dist - bounces * span
    even = call("eq", call("rem", bounces, 2), 0)
    near, far = lo + rest, hi - rest
    reflected = select(below, select(even, near, far), select(even, far, near))
    return select(call("or", below, above), reflected, x)


def _keys_cubic(t: Expr) -> Expr:
    """Keys' cubic kernel (a = -0.75) at distance ``t`` (float64)."""
    a = CUBIC_A
    d = call("abs", t)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return select(call("le", d, 1), near, select(call("lt", d, 2), far, c(d, 0)))


def _taps(mode: str, x: Expr) -> tuple[list[Expr], list[Expr]]:
    """The taps (float64 coordinates) and weights along one axis at coordinate ``x``."""
    if mode == "nearest":
        return [call("round", x)], [c(x, 1)]
    base = call("floor", x)
    t = x - base
    if mode == "linear":
        return [base, base + 1], [1 - t, t]
    offsets = (-1, 0, 1, 2)
    return [base + k for k in offsets], [_keys_cubic(t - k) for k in offsets]


def _truncated(x: Expr) -> Expr:
    return select(call("lt", x, 0), call("ceil", x), call("floor", x))


@define("GridSample")
def _grid_sample(ctx: ComputeCtx) -> Sequence[Expr]:
    x, grid = ctx.input(0), ctx.input(1)
    dims, r = x.shape[2:], len(x.shape) - 2
    mode, padding, align = ctx.attrs["mode"], ctx.attrs["padding_mode"], ctx.attrs["align_corners"]
    bounds = [(0.0, n - 1.0) if align else (-0.5, n - 0.5) for n in dims]

    def coordinate(axis: int, n: Expr, *out: Expr) -> Expr:
        g = grid[(n, *out, idx(r - 1 - axis))]
        size, (lo, hi) = dims[axis], bounds[axis]
        at = (g + 1) / 2.0 * (size - 1) if align else ((g + 1) * size - 1) / 2.0
        if mode == "nearest":
            at = call("round", at)
        if padding == "border":
            outside = call("or", call("lt", at, lo), call("gt", at, hi))
            at = select(outside, call("min", call("max", at, 0), size - 1), at)
        elif padding == "reflection":
            at = reflect(at, lo, hi)
        return cast(at, F64)
    coords = [ctx.stage(f"coord{a}", grid.shape[:-1], lambda *i, a=a: coordinate(a, *i)) for a in range(r)]
    n, ch, *out = ctx.index()
    taps, weights = [], []
    for axis, (lo, hi) in enumerate(bounds):
        t, w = _taps(mode, coords[axis][(n, *out)])
        if padding == "reflection":
            t = [_truncated(reflect(i, lo, hi)) for i in t]
        taps.append([cast(i, INDEX) for i in t])
        weights.append(w)
    total: Expr = const(0, F64)
    for combo in itertools.product(*[range(len(t)) for t in taps]):
        at = [taps[a][j] for a, j in enumerate(combo)]
        weight = weights[0][combo[0]]
        for a in range(1, r):
            weight = weight * weights[a][combo[a]]
        term = weight * cast(x[(n, ch, *(clamp_index(i, size) for i, size in zip(at, dims)))], F64)
        if padding == "zeros":
            inside = all_of([in_range(i, 0, size) for i, size in zip(at, dims)])
            assert inside is not None
            term = select(inside, term, c(term, 0))
        total = total + term
    return [cast(total, x.dtype)]


@define("AffineGrid")
def _affine_grid(ctx: ComputeCtx) -> Sequence[Expr]:
    """grid[n, *p, j] = sum over k of point(p)[k] * theta[n, j, k] in float64, point(p) being the
    regular grid's coordinates (x, y[, z], 1) at p."""
    theta, size = ctx.input(0), ctx.value(1)
    assert size is not None  # a static input
    dims = [int(d) for d in size[2:]]
    r = len(dims)
    if ctx.attrs["align_corners"]:
        axes = [np.linspace(-1.0, 1.0, d) for d in dims]
    else:
        axes = [(2 * np.arange(d) + 1) / d - 1 for d in dims]
    values = [ctx.constant(f"axis{a}", np.asarray(v, F64)) for a, v in enumerate(axes)]
    n, *p, j = ctx.index()
    points = [values[r - 1 - k][p[r - 1 - k]] for k in range(r)] + [const(1, F64)]
    total: Expr = const(0, F64)
    for k, point in enumerate(points):
        total = total + point * cast(theta[n, j, idx(k)], F64)
    return [cast(total, theta.dtype)]
