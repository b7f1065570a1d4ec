"""Compute definitions of reductions (ReduceSum ... ReduceLogSumExp), ArgMax and ArgMin, the softmax
family (Softmax, LogSoftmax, Hardmax), CumSum and CumProd.

A reduced value is a Reduce over the reduced axes of the input, read at the output index. A value
that later element-wise steps need once per reduced row (a softmax's max and sum) is computed first
into a stage of the input's shape with the reduced axes of size 1 (:func:`stat`), so that no Reduce
runs once per output element. Arithmetic follows the references: float16 accumulates in float32,
integer sums and products wrap, and integer means and norms go through float64 as numpy's do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from tensoregg.ir.compute.expr import (
    BOOL,
    Buffer,
    ComputeCtx,
    Expr,
    Reduce,
    as_expr,
    call,
    cast,
    clamp_index,
    const,
    define,
    fresh,
    identity_of,
    idx,
    reduce,
    select,
)
from tensoregg.ir.compute.linalg import wide
from tensoregg.ir.ops.reduce import reduce_axes

Index = Sequence[Expr]
Term = Callable[[tuple[Expr, ...]], Expr]
"""A reduction's term as a function of the full input index (the reduced axes at the loop variables)."""

F64 = np.dtype(np.float64)


# ---- shared by the reduction, normalization and pooling definitions ---------------------------------

def input_index(rank: int, axes: Sequence[int], index: Index, r: Index, keepdims: bool) -> tuple[Expr, ...]:
    """The input index with the reduced ``axes`` at ``r`` (in order) and the other axes at ``index``,
    an index of the reduced shape (which holds the reduced axes, of size 1, if ``keepdims``)."""
    at: list[Expr] = []
    rs, k = iter(r), 0
    for a in range(rank):
        if a in axes:
            at.append(next(rs))
            k += keepdims
        else:
            at.append(index[k])
            k += 1
    return tuple(at)


def kept(index: Index, axes: Sequence[int]) -> tuple[Expr, ...]:
    """``index`` with ``axes`` at 0: where a stage of reduced values (axes kept, of size 1) holds the
    value for an index of the full shape."""
    return tuple(idx(0) if a in axes else i for a, i in enumerate(index))


def over(combiner: str, shape: Sequence[int], axes: Sequence[int], index: Index, keepdims: bool,
         term: Term, init: Expr | None = None) -> Expr:
    """``combiner`` of ``term`` over ``axes`` of a tensor of ``shape`` at ``index`` of the reduced
    shape (from the combiner's identity unless ``init``); with no axes, the term at ``index``."""
    if not axes:
        return term(tuple(index))
    r = tuple(fresh("r") for _ in axes)
    body = term(input_index(len(shape), axes, index, r, keepdims))
    start = init if init is not None else as_expr(identity_of(combiner, body.dtype), body.dtype)
    return Reduce(combiner, r, tuple(int(shape[a]) for a in axes), body, start)


def by_rows(ctx: ComputeCtx, name: str, combiner: str, shape: Sequence[int], axes: Sequence[int],
            index: Index, keepdims: bool, term: Term) -> Expr:
    """:func:`over`, in two steps when it reduces the last axis and others: first a stage of rows
    (the last axis kept) combining the other axes element by element, a loop along the input's
    contiguous axis that vectorizes; then each row. (Sums then add in another order than one long
    chain: integers wrap alike, floats round less.) ``term`` may read only buffers and its index."""
    rank = len(shape)
    if list(axes) == [rank - 1] and combiner in ("add", "max", "min") and shape[-1] >= 2 * PARTIALS:
        return _in_partials(ctx, name, combiner, shape, index, keepdims, term)
    if len(axes) < 2 or axes[-1] != rank - 1 or shape[-1] == 1:
        return over(combiner, shape, axes, index, keepdims, term)
    inner = tuple(axes[:-1])
    rows = ctx.stage(name, [d for a, d in enumerate(shape) if a not in inner],
                     lambda *k: over(combiner, shape, inner, k, False, term))

    def row(r: Expr) -> Expr:
        at = input_index(rank, axes, index, [idx(0)] * len(inner) + [r], keepdims)
        return rows[tuple(i for a, i in enumerate(at) if a not in inner)]
    return reduce(combiner, [shape[-1]], row, identity_of(combiner, rows.dtype))


PARTIALS = 16
"""Independent partial results a reduction along a row of at least twice this many entries keeps
(one 16-lane float32 vector, or two of 8): lane l combines entries l, l + 16, ...; then the lanes are
combined. One serial chain along the row would be latency-bound and would not vectorize (a 128-entry
Softmax row: its max and sum took 6 ns per entry)."""


def _in_partials(ctx: ComputeCtx, name: str, combiner: str, shape: Sequence[int], index: Index,
                 keepdims: bool, term: Term) -> Expr:
    """:func:`by_rows` of the last axis alone: a stage of ``PARTIALS`` partial results per row over
    the whole blocks of the row (a loop along the lanes that vectorizes), then the lanes, then the
    entries past the last whole block."""
    rank, n = len(shape), shape[-1]
    whole = n // PARTIALS
    outer = input_index(rank, [rank - 1], index, [idx(0)], keepdims)[:-1]

    neutral = identity_of(combiner, term((*outer, idx(0))).dtype)

    def partial(*k: Expr) -> Expr:
        return reduce(combiner, [whole], lambda j: term((*k[:-1], j * idx(PARTIALS) + k[-1])), neutral)
    parts = ctx.stage(f"{name}_partials", (*shape[:-1], PARTIALS), partial)
    total = reduce(combiner, [PARTIALS], lambda lane: parts[(*outer, lane)], neutral)
    if n % PARTIALS:
        rest = reduce(combiner, [n % PARTIALS], lambda t: term((*outer, idx(whole * PARTIALS) + t)), neutral)
        total = call(combiner, total, rest)
    return total


def stat(ctx: ComputeCtx, name: str, shape: Sequence[int], axes: Sequence[int], combiner: str, term: Term,
         finish: Callable[[Expr], Expr] = lambda v: v) -> Buffer:
    """A stage of ``shape`` with ``axes`` of size 1 holding ``finish`` of the reduced ``term``
    (read it at a full index with :func:`kept`)."""
    out = tuple(1 if a in axes else d for a, d in enumerate(shape))
    return ctx.stage(name, out, lambda *i: finish(by_rows(ctx, f"{name}_rows", combiner, shape, axes, i, True,
                                                          term)))


def count(shape: Sequence[int], axes: Sequence[int]) -> int:
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


def finite(x: Expr) -> Expr:
    return call("not", call("or", call("isnan", x), call("isinf", x)))


def square(x: Expr) -> Expr:
    return x * x


def power(x: Expr, e: float) -> Expr:
    """``x ** e`` as numpy raises a float array to a Python scalar (exact cases and its fast paths:
    x * x, sqrt, 1 / x; else pow)."""
    if e in (1, 2, 0.5, -1):
        return {1: x, 2: square(x), 0.5: call("sqrt", x), -1: const(1, x.dtype) / x}[e]
    return call("pow", x, const(e, x.dtype))


def promoted(fn: str, a: Expr, b: Expr) -> Expr:
    """``fn(a, b)`` in numpy's promoted dtype of the two (arrays of mixed float dtypes)."""
    dtype = np.result_type(a.dtype, b.dtype)
    return call(fn, cast(a, dtype), cast(b, dtype))


# ---- ReduceSum ... ReduceLogSumExp -------------------------------------------------------------------

@define("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
def _reduce(ctx: ComputeCtx) -> Sequence[Expr]:
    x = ctx.input(0)
    dtype, rank, op = x.dtype, len(x.shape), ctx.op
    axes = reduce_axes(ctx.value(1) if ctx.has(1) else None, rank, ctx.attrs["noop_with_empty_axes"])
    keep, out = bool(ctx.attrs["keepdims"]), ctx.index()
    integer = dtype.kind in "iu"
    if dtype == BOOL and op not in ("ReduceMax", "ReduceMin"):
        raise ctx.unsupported(f"{op} of bool")
    if integer and op == "ReduceLogSumExp":
        raise ctx.unsupported(f"{op} of {dtype} (the reference's -inf start is not an integer)")

    def total(combiner: str, acc: np.dtype, term: Callable[[Expr], Expr] = lambda v: v) -> Expr:
        """``combiner`` over the reduced axes of ``term`` of x in ``acc``."""
        return by_rows(ctx, "rows", combiner, x.shape, axes, out, keep, lambda at: term(cast(x[at], acc)))

    n = count(x.shape, axes)
    if op in ("ReduceMax", "ReduceMin"):
        return [total(op[6:].lower(), dtype)]
    if op in ("ReduceSum", "ReduceProd", "ReduceL1", "ReduceSumSquare"):
        term = {"ReduceL1": lambda v: call("abs", v), "ReduceSumSquare": square}.get(op, lambda v: v)
        combiner = "mul" if op == "ReduceProd" else "add"
        return [cast(total(combiner, wide(dtype), term), dtype)]
    if op == "ReduceMean":
        if integer and n == 0:
            raise ctx.unsupported("integer ReduceMean over an empty set (numpy's NaN cast to an integer)")
        acc = F64 if integer else wide(dtype)
        return [cast(total("add", acc) / const(n, acc), dtype)]
    if op in ("ReduceL2", "ReduceLogSum"):
        if integer:  # squares wrap in the dtype, numpy sums in (u)int64, then sqrt or log in float64
            sq, acc = op == "ReduceL2", np.dtype(np.int64 if dtype.kind == "i" else np.uint64)
            summed = by_rows(ctx, "rows", "add", x.shape, axes, out, keep,
                             lambda at: cast(square(x[at]) if sq else x[at], acc))
            value = cast(summed, F64)
        else:
            value = total("add", wide(dtype), square if op == "ReduceL2" else lambda v: v)
        return [cast(call("sqrt" if op == "ReduceL2" else "log", value), dtype)]
    # ReduceLogSumExp: log(sum(exp(x - peak))) + peak, peak the max where finite, else 0
    acc = wide(dtype)
    peak = stat(ctx, "peak", x.shape, axes, "max", lambda at: cast(x[at], acc),
                lambda m: select(finite(m), m, const(0, acc)))
    at_peak = input_index(rank, axes, out, [idx(0)] * len(axes), keep)
    summed = by_rows(ctx, "rows", "add", x.shape, axes, out, keep,
                     lambda at: call("exp", cast(x[at], acc) - peak[kept(at, axes)]))
    return [cast(call("log", summed) + peak[at_peak], dtype)]


# ---- ArgMax, ArgMin and the softmax family ----------------------------------------------------------

def peak_stage(ctx: ComputeCtx, x: Buffer, axis: int, combiner: str = "max") -> Buffer:
    """A stage: x's max (or min) along ``axis`` (NaN if the row holds one), the axis kept."""
    return stat(ctx, combiner, x.shape, (axis,), combiner, lambda at: x[at])


def _hit_term(x: Buffer, axis: int, peak: Buffer, last: bool) -> Term:
    """The term of a search for the first (``last``: the last) position along ``axis`` where x equals
    its peak (a NaN peak: where x is NaN), as numpy's argmax/argmin find it: the position where it
    hits, else past the end (min) or -1 (max)."""
    miss = idx(-1 if last else x.shape[axis])

    def term(at: tuple[Expr, ...]) -> Expr:
        v, m = x[at], peak[kept(at, (axis,))]
        hit = call("eq", v, m)
        if x.dtype.kind == "f":
            hit = call("or", hit, call("and", call("isnan", v), call("isnan", m)))
        return select(hit, at[axis], miss)
    return term


@define("ArgMax", "ArgMin")
def _arg(ctx: ComputeCtx) -> Sequence[Expr]:
    x = ctx.input(0)
    axis = ctx.attrs["axis"] % len(x.shape)
    if x.shape[axis] == 0:
        raise ctx.unsupported("ArgMax/ArgMin along an empty axis")
    last = bool(ctx.attrs["select_last_index"])
    peak = peak_stage(ctx, x, axis, "max" if ctx.op == "ArgMax" else "min")
    return [over("max" if last else "min", x.shape, (axis,), ctx.index(), bool(ctx.attrs["keepdims"]),
                 _hit_term(x, axis, peak, last))]


@define("Softmax", "LogSoftmax")
def _softmax(ctx: ComputeCtx) -> Sequence[Expr]:
    """exp(x - max) / sum(exp(x - max)) or (x - max) - log(sum(...)) along the axis, the sum in the
    accumulation dtype and rounded to x's dtype as numpy's is."""
    x = ctx.input(0)
    axis, i = ctx.attrs["axis"] % len(x.shape), ctx.index()
    peak = peak_stage(ctx, x, axis)

    def shifted(at: tuple[Expr, ...]) -> Expr:
        return x[at] - peak[kept(at, (axis,))]
    total = stat(ctx, "sum", x.shape, (axis,), "add",
                 lambda at: cast(call("exp", shifted(at)), wide(x.dtype)),
                 lambda s: cast(s, x.dtype))[kept(i, (axis,))]
    if ctx.op == "Softmax":
        return [call("exp", shifted(i)) / total]
    return [shifted(i) - call("log", total)]


@define("Hardmax")
def _hardmax(ctx: ComputeCtx) -> Sequence[Expr]:
    """1 at the first max along the axis (the first NaN if any), 0 elsewhere."""
    x = ctx.input(0)
    axis, i = ctx.attrs["axis"] % len(x.shape), ctx.index()
    first = stat(ctx, "first", x.shape, (axis,), "min", _hit_term(x, axis, peak_stage(ctx, x, axis), False))
    return [select(call("eq", i[axis], first[kept(i, (axis,))]), const(1, x.dtype), const(0, x.dtype))]


# ---- CumSum and CumProd -----------------------------------------------------------------------------

CUMSUM_DIRECT = 64
"""CumSum (CumProd) along an axis up to this long combines each entry's prefix directly (n^2 / 2
steps in all, in the reference's order); a longer one in blocks of about sqrt(n) entries (2 sqrt(n)
steps per entry; the block a power of 2, as integer division by other constants does not vectorize)."""


@define("CumSum", "CumProd")
def _cumulative(ctx: ComputeCtx) -> Sequence[Expr]:
    """The running sum (product) along the axis in x's dtype, over scan positions q (the axis index,
    or counted from the end if ``reverse``) before the entry's, and the entry's own unless
    ``exclusive``. Direct: a masked reduction over the axis. Blocked: a stage of each block's total,
    a stage of the total of the blocks before each block, then that combined with a masked
    reduction over the entry's own block."""
    x, axis_value = ctx.input(0), ctx.value(1)
    if not x.shape or axis_value is None or x.dtype == BOOL:
        raise ctx.unsupported(f"{ctx.op} of a scalar or of bools, or along a runtime axis")
    axis = int(np.asarray(axis_value).reshape(-1)[0]) % len(x.shape)
    n, i = x.shape[axis], ctx.index()
    combiner = "add" if ctx.op == "CumSum" else "mul"
    reverse, neutral = bool(ctx.attrs["reverse"]), const(identity_of(combiner, x.dtype), x.dtype)

    def along(index: Index, position: Expr) -> tuple[Expr, ...]:
        return (*index[:axis], position, *index[axis + 1:])

    def masked(index: Index, start: Expr, stop: Expr, extent: int) -> Expr:
        """The total of x at scan positions start + t (t < extent) below ``stop``."""
        def term(t: Expr) -> Expr:
            q = clamp_index(start + t, n)
            value = x[along(index, idx(n - 1) - q if reverse else q)]
            return select(call("lt", start + t, stop), value, neutral)
        return reduce(combiner, [extent], term, neutral)
    q = idx(n - 1) - i[axis] if reverse else i[axis]
    stop = q if ctx.attrs["exclusive"] else q + idx(1)
    if n <= CUMSUM_DIRECT:
        return [masked(i, idx(0), stop, n)]
    block = 1 << math.isqrt(n - 1).bit_length()  # a power of 2 >= sqrt(n): divisions are shifts
    blocks = (*x.shape[:axis], -(-n // block), *x.shape[axis + 1:])
    totals = ctx.stage("blocks", blocks, lambda *k: masked(k, k[axis] * idx(block), idx(n), block))
    before = ctx.stage("before", blocks, lambda *k: reduce(
        combiner, [blocks[axis]], lambda b: select(call("lt", b, k[axis]), totals[along(k, b)], neutral),
        neutral))
    own = call("div", q, idx(block))
    return [call(combiner, before[along(i, own)], masked(i, own * idx(block), stop, block))]
