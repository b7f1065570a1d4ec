"""Compute definitions of TopK, Det, CausalConvWithState and the cosine windows (Hann, Hamming,
Blackman).

TopK follows the reference's order (larger (smaller) first, NaN as the largest, ties by lower
index): a small K of a long axis picks its entries one by one, otherwise every entry is ranked.
Det is Gaussian elimination with partial pivoting, as LAPACK's LU that the reference calls: one
stage per step holds the remaining (Schur complement) matrix, the determinant is the product of
the pivots, negated per row swap.

NonZero, Unique (data-dependent shapes, their input a compile-time constant), Constant and the
windows (their size a compile-time constant) are folded at import; the windows' definitions serve
graphs lowered as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tensoregg.ir.compute.expr import (
    BOOL,
    Buffer,
    ComputeCtx,
    Expr,
    call,
    cast,
    clamp,
    const,
    define,
    identity_of,
    idx,
    reduce,
    select,
)
from tensoregg.ir.compute.linalg import wide

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


# ---- TopK -----------------------------------------------------------------------------------------

def _precedes(a: Expr, b: Expr, largest: bool) -> Expr:
    """Whether value ``a`` sorts strictly before ``b``: larger (smaller) first, NaN the largest."""
    first = call("gt" if largest else "lt", a, b)
    if a.dtype.kind != "f":
        return first
    nan = call("isnan", a if largest else b)
    other = call("not", call("isnan", b if largest else a))
    return call("or", first, call("and", nan, other))


def _same(a: Expr, b: Expr) -> Expr:
    """Whether ``a`` and ``b`` tie (NaNs tie with each other)."""
    equal = call("eq", a, b)
    if a.dtype.kind != "f":
        return equal
    return call("or", equal, call("and", call("isnan", a), call("isnan", b)))


TOPK_STEPS = 16
"""TopK with K up to this (and an axis longer than 4 K) selects its entries one by one (two passes
over the axis per entry); otherwise it ranks every entry (a pass per entry)."""


@define("TopK")
def _top_k(ctx: ComputeCtx) -> Sequence[Expr]:
    """A stage of the index of each of the first K entries in order, then the values there."""
    x = ctx.input(0)
    axis = ctx.attrs["axis"] % len(x.shape)
    n, k = x.shape[axis], ctx.outputs[0].shape[axis]
    pick = _select_each if 0 < k <= TOPK_STEPS and n > 4 * k else _rank_all
    order = pick(ctx, x, axis, k, bool(ctx.attrs["largest"]))
    at = ctx.index(0)
    return [x[_along(at, axis, order[at])], order[ctx.index(1)]]


def _along(index: Sequence[Expr], axis: int, position: Expr) -> tuple[Expr, ...]:
    return (*index[:axis], position, *index[axis + 1:])


def _rank_all(ctx: ComputeCtx, x: Buffer, axis: int, k: int, largest: bool) -> Buffer:
    """A stage of each entry's rank (how many entries come before it), then a stage of the entry
    of each of the first K ranks."""
    n = x.shape[axis]

    def rank(*at: Expr) -> Expr:
        mine = x[at]

        def before(i: Expr) -> Expr:
            other = x[_along(at, axis, i)]
            ahead = call("or", _precedes(other, mine, largest),
                         call("and", _same(other, mine), call("lt", i, at[axis])))
            return select(ahead, idx(1), idx(0))
        return reduce("add", [n], before, 0)
    ranks = ctx.stage("rank", x.shape, rank)

    def entry(*at: Expr) -> Expr:
        def hit(j: Expr) -> Expr:
            return select(call("eq", ranks[_along(at, axis, j)], at[axis]), j, idx(n))
        return clamp(reduce("min", [n], hit, n), 0, max(n - 1, 0))
    return ctx.stage("order", ctx.outputs[0].shape, entry)


def _select_each(ctx: ComputeCtx, x: Buffer, axis: int, k: int, largest: bool) -> Buffer:
    """The first K entries in order one by one (:func:`_next_entry`), then their indices in place."""
    chosen: list[Buffer] = []
    for t in range(k):
        chosen.append(_next_entry(ctx, x, axis, largest, chosen[-1] if chosen else None, t))

    def place(*at: Expr) -> Expr:
        home = _along(at, axis, idx(0))
        value: Expr = chosen[-1][home]
        for t in range(k - 2, -1, -1):
            value = select(call("eq", at[axis], idx(t)), chosen[t][home], value)
        return value
    return ctx.stage("order", ctx.outputs[0].shape, place)


def _next_entry(ctx: ComputeCtx, x: Buffer, axis: int, largest: bool, prev: Buffer | None, t: int) -> Buffer:
    """A stage (the axis of size 1) of the index of the first entry in order among those after the
    entry at ``prev`` (all, if None): a stage of its value first, the largest (smallest) eligible
    one (NaN, the largest, propagates through max and is left out of min), then the first eligible
    index holding it, or else the first eligible NaN (once only NaNs are left after the smallest)."""
    n = x.shape[axis]
    row = tuple(1 if a == axis else d for a, d in enumerate(x.shape))
    combiner = "max" if largest else "min"
    worst = const(identity_of(combiner, x.dtype), x.dtype)
    floats, never = x.dtype.kind == "f", idx(2 * n)

    def eligible(at: Sequence[Expr], j: Expr) -> Expr:
        if prev is None:
            return const(True, BOOL)
        p = prev[at]
        last, value = x[_along(at, axis, p)], x[_along(at, axis, j)]
        later = call("and", _same(last, value), call("gt", j, p))
        return call("or", _precedes(last, value, largest), later)

    def key(at: Sequence[Expr], j: Expr) -> Expr:
        value: Expr = x[_along(at, axis, j)]
        if floats and not largest:
            value = select(call("isnan", value), const(np.inf, x.dtype), value)
        return select(eligible(at, j), value, worst)
    best = ctx.stage(f"best{t}", row, lambda *at: reduce(combiner, [n], lambda j: key(at, j), worst))

    def first(*at: Expr) -> Expr:
        def hit(j: Expr) -> Expr:
            value = x[_along(at, axis, j)]
            miss = select(call("isnan", value), j + idx(n), never) if floats else never
            return select(eligible(at, j), select(call("eq", value, best[at]), j, miss), never)
        found = reduce("min", [n], hit, 2 * n)
        return clamp(select(call("ge", found, idx(n)), found - idx(n), found), 0, n - 1)
    return ctx.stage(f"index{t}", row, first)


# ---- Det ------------------------------------------------------------------------------------------

DET_STEPS = 64
"""The largest matrix Det eliminates (three stages per step)."""

Matrix = Callable[[Sequence[Expr], Expr, Expr], Expr]
"""A batch of square matrices read at (batch index, row, column)."""


@define("Det")
def _det(ctx: ComputeCtx) -> Sequence[Expr]:
    """Each step: a stage of the column's largest magnitude, a stage of the first row holding it (the
    pivot, swapped into the top row), a stage of the rest of the matrix after eliminating the column
    below the pivot (a zero pivot eliminates nothing: the column is zero). All in the accumulation
    dtype, as the reference computes float16 in float32."""
    x = ctx.input(0)
    size, batch = x.shape[-1], x.shape[:-2]
    if size > DET_STEPS:
        raise ctx.unsupported(f"Det of {size} x {size} matrices (at most {DET_STEPS})")
    acc = wide(x.dtype)
    zero = const(0, acc)

    def matrix(buf: Buffer, cast_to: np.dtype) -> Matrix:
        return lambda b, r, c: cast(buf[(*b, r, c)], cast_to)
    current = matrix(x, acc)
    det: Expr = const(1, acc)
    i = ctx.index()
    for step in range(size):
        n = size - step
        a = current
        top = ctx.stage(f"top{step}", batch, lambda *b, a=a, n=n: reduce(
            "max", [n], lambda r: call("abs", a(b, r, idx(0))), -np.inf))
        row = ctx.stage(f"pivot{step}", batch, lambda *b, a=a, n=n, top=top: clamp(reduce(
            "min", [n], lambda r: select(call("eq", call("abs", a(b, r, idx(0))), top[b]), r, idx(n)), n),
            0, n - 1))
        pivot = a(i, row[i], idx(0))
        det = det * select(call("ne", row[i], idx(0)), -pivot, pivot)
        if n == 1:
            break

        def eliminate(*at: Expr, a: Matrix = a, row: Buffer = row) -> Expr:
            b, r, c = at[:-2], at[-2] + idx(1), at[-1] + idx(1)
            p = row[b]
            source = select(call("eq", r, p), idx(0), r)  # the swap: row p holds the old top row
            lead = a(b, p, idx(0))
            factor = select(call("eq", lead, zero), zero, a(b, source, idx(0)) / lead)
            return a(b, source, c) - factor * a(b, p, c)
        rest = ctx.stage(f"rest{step}", (*batch, n - 1, n - 1), eliminate)
        current = matrix(rest, acc)
    return [cast(det, x.dtype)]


# ---- CausalConvWithState --------------------------------------------------------------------------

@define("CausalConvWithState")
def _causal_conv(ctx: ComputeCtx) -> Sequence[Expr]:
    """A stage of the past state (zeros if absent) followed by the input, a depthwise convolution of
    it in the accumulation dtype plus the bias, rounded, then SiLU in float32 if asked for; the new
    state is the stage's last k - 1 positions."""
    x, w = ctx.input(0), ctx.input(1)
    batch, channels, length = x.shape
    taps = w.shape[2]
    keep = taps - 1
    padded = x
    if keep:
        past = ctx.input(3) if ctx.has(3) else None

        def concat(b: Expr, c: Expr, p: Expr) -> Expr:
            later = x[b, c, clamp(p - idx(keep), 0, max(length - 1, 0))]
            earlier = past[b, c, clamp(p, 0, keep - 1)] if past is not None else const(0, x.dtype)
            return select(call("lt", p, idx(keep)), earlier, later)
        padded = ctx.stage("padded", (batch, channels, keep + length), concat)
    acc = wide(x.dtype)
    b, c, t = ctx.index(0)
    y = reduce("add", [taps], lambda k: cast(padded[b, c, t + k], acc) * cast(w[c, idx(0), k], acc), 0)
    if ctx.has(2):
        y = y + cast(ctx.input(2)[c], acc)
    out = cast(y, x.dtype)
    if ctx.attrs["activation"] != "none":
        v = cast(out, F32)
        out = cast(v / (const(1, F32) + call("exp", -v)), x.dtype)
    b1, c1, t1 = ctx.index(1)
    return [out, padded[b1, c1, t1 + idx(length)]]


# ---- windows --------------------------------------------------------------------------------------

WINDOWS = {"HannWindow": (0.5, -0.5), "HammingWindow": (25 / 46, -21 / 46),
           "BlackmanWindow": (0.42, -0.5, 0.08)}
"""Each window's cosine coefficients, as the reference sums them."""


@define(*WINDOWS)
def _window(ctx: ComputeCtx) -> Sequence[Expr]:
    """sum_k c_k cos(k 2 pi n / N) in float64, in the reference's order, cast to the output dtype."""
    (size,) = ctx.outputs[0].shape
    period = size if ctx.attrs["periodic"] else size - 1
    (n,) = ctx.index()
    phase = const(2 * np.pi, F64) * cast(n, F64) / const(max(period, 1), F64)
    total: Expr = const(0, F64)
    for k, coeff in enumerate(WINDOWS[ctx.op]):
        wave = const(1, F64) if k == 0 else call("cos", phase if k == 1 else const(k, F64) * phase)
        total = total + const(coeff, F64) * wave
    return [cast(total, ctx.outputs[0].dtype)]

