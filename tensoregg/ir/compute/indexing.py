"""Compute definitions of indexing ops: gathers (Gather, GatherElements, GatherND), scatters written
as gathers (ScatterElements, ScatterND, TensorScatter), OneHot, Compress and Resize.

An index read from a tensor is wrapped as the reference wraps it (negative counts from the end)
and bounded (``bounded``): an invalid one (an error in ONNX) reads some element of the buffer,
never outside it, and the run raises ``IndexOutOfRange`` naming the node. A scatter is stated from
the output's side: each output element combines, in the reference's order, the updates whose index
names it; that costs the output's size times the number of updates, so large scatters are left
unsupported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from tensoregg.ir.compute.expr import (
    BOOL,
    INDEX,
    Buffer,
    ComputeCtx,
    Expr,
    all_true,
    bounded,
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
from tensoregg.ir.compute.shape import ravel, unfused, unravel, within
from tensoregg.ir.ops.resize import cast_back, given_input, resize_plan

SCATTER_BUDGET = 1 << 27
"""The most (output element, update) pairs a scatter may compare."""
COMPRESS_RUNS = 1024
"""The most runs of consecutive kept positions Compress spells out as a select chain."""
F64 = np.dtype(np.float64)


def wrapped(i: Expr, n: int) -> Expr:
    """Index value ``i`` (any integer or float dtype) as an i64, negative counting from ``n``."""
    i = cast(i, INDEX)
    return select(call("lt", i, idx(0)), i + idx(n), i)


def fetched(i: Expr, n: int) -> Expr:
    """Index value ``i`` wrapped and bounded into [0, n) (out of range: the run raises)."""
    return bounded(wrapped(i, n), n)


def _axis_of(ctx: ComputeCtx, rank: int) -> int:
    return ctx.attrs["axis"] % rank


# ---- gathers -----------------------------------------------------------------------------------

@define("Gather")
def _gather(ctx: ComputeCtx) -> Sequence[Expr]:
    data, indices, out = ctx.input(0), ctx.input(1), ctx.index()
    axis, q = _axis_of(ctx, len(data.shape)), len(indices.shape)
    n = data.shape[axis]
    if n == 0:
        raise ctx.unsupported("gathering from an empty axis")
    pos = fetched(indices[out[axis:axis + q]], n)
    return [data[(*out[:axis], pos, *out[axis + q:])]]


@define("GatherElements")
def _gather_elements(ctx: ComputeCtx) -> Sequence[Expr]:
    data, indices, out = ctx.input(0), ctx.input(1), ctx.index()
    axis = _axis_of(ctx, len(data.shape))
    if data.shape[axis] == 0:
        raise ctx.unsupported("gathering from an empty axis")
    pos = fetched(indices[out], data.shape[axis])
    return [data[(*out[:axis], pos, *out[axis + 1:])]]


@define("GatherND")
def _gather_nd(ctx: ComputeCtx) -> Sequence[Expr]:
    """out[batch, k..., rest...] = data[batch, indices[batch, k..., 0], ..., rest...]."""
    data, indices, out = ctx.input(0), ctx.input(1), ctx.index()
    b, q, m = ctx.attrs["batch_dims"], len(indices.shape), indices.shape[-1]
    tuple_at = out[:q - 1]
    if 0 in data.shape[b:b + m]:
        raise ctx.unsupported("gathering from an empty axis")
    picked = [fetched(indices[(*tuple_at, idx(j))], data.shape[b + j]) for j in range(m)]
    return [data[(*out[:b], *picked, *out[q - 1:])]]


# ---- scatters, from the output's side ----------------------------------------------------------

def _scattered(ctx: ComputeCtx, extents: Sequence[int], update_at: Callable[..., tuple[Expr, ...]],
               hits: Callable[..., Expr], old: Expr) -> Expr:
    """The output element whose old value is ``old``, after the updates at ``update_at(*k)`` for
    ``k`` over ``extents`` (row-major, the reference's order) where ``hits(*k)``: the last one
    (reduction none) or all of them combined into ``old``."""
    updates = ctx.input(2)
    if ctx.outputs[0].size * math.prod(extents) > SCATTER_BUDGET:
        raise ctx.unsupported(f"a scatter of {math.prod(extents)} updates into {ctx.outputs[0].size} "
                              "elements (stated as a gather, it compares every pair; too many)")
    reduction = ctx.attrs["reduction"]
    if reduction == "none":
        def position(*k: Expr) -> Expr:
            return select(hits(*k), ravel(k, extents), idx(-1))
        last = reduce("max", extents, position, -1)
        at = unravel(call("max", last, idx(0)), extents)
        return select(call("ge", last, idx(0)), updates[update_at(*at)], old)
    if old.dtype == BOOL:
        raise ctx.unsupported(f"reduction {reduction!r} on bool")
    combiner = {"add": "add", "mul": "mul", "max": "max", "min": "min"}[reduction]
    skip = const(identity_of(combiner, old.dtype), old.dtype)
    return reduce(combiner, extents, lambda *k: select(hits(*k), updates[update_at(*k)], skip), old)


@define("ScatterElements", "Scatter")
def _scatter_elements(ctx: ComputeCtx) -> Sequence[Expr]:
    """Along ``axis``, output[..., j, ...] takes the updates[..., k, ...] with indices[..., k, ...]
    == j; elements beyond the shape of indices on the other axes keep their data."""
    data, indices, out = ctx.input(0), ctx.input(1), ctx.index()
    axis = _axis_of(ctx, len(data.shape))
    n = data.shape[axis]
    if 0 in indices.shape:
        return [data[out]]
    covered = [call("lt", o, idx(m)) for a, (o, m, d) in enumerate(zip(out, indices.shape, data.shape))
               if a != axis and m < d]
    near = [o if a == axis or m == d else call("min", o, idx(m - 1))
            for a, (o, m, d) in enumerate(zip(out, indices.shape, data.shape))]

    def update_at(k: Expr) -> tuple[Expr, ...]:
        return (*near[:axis], k, *near[axis + 1:])

    def hits(k: Expr) -> Expr:
        return call("eq", fetched(indices[update_at(k)], n), out[axis])

    value = _scattered(ctx, [indices.shape[axis]], update_at, hits, data[out])
    return [select(all_true(covered), value, data[out]) if covered else value]


@define("ScatterND")
def _scatter_nd(ctx: ComputeCtx) -> Sequence[Expr]:
    """output[i..., rest...] takes the updates[k..., rest...] whose index tuple indices[k..., :]
    is i..."""
    data, indices, out = ctx.input(0), ctx.input(1), ctx.index()
    m, extents = indices.shape[-1], indices.shape[:-1]
    if 0 in extents:
        return [data[out]]

    def update_at(*k: Expr) -> tuple[Expr, ...]:
        return (*k, *out[m:])

    def hits(*k: Expr) -> Expr:
        return all_true([call("eq", fetched(indices[(*k, idx(j))], data.shape[j]), out[j]) for j in range(m)])

    return [_scattered(ctx, extents, update_at, hits, data[out])]


@define("TensorScatter")
def _tensor_scatter(ctx: ComputeCtx) -> Sequence[Expr]:
    """Position p along ``axis`` of batch entry b holds update step (p - write_indices[b]) mod the
    cache length when that step exists (for valid write indices, linear mode writes the same)."""
    cache, update, out = ctx.input(0), ctx.input(1), ctx.index()
    axis = _axis_of(ctx, len(cache.shape))
    length, steps = cache.shape[axis], update.shape[axis]
    if steps == 0:
        return [cache[out]]
    start = cast(ctx.input(2)[out[0]], INDEX) if ctx.has(2) else idx(0)
    rel = call("rem", out[axis] - start, idx(length))
    rel = select(call("lt", rel, idx(0)), rel + idx(length), rel)
    new = update[(*out[:axis], call("min", rel, idx(steps - 1)), *out[axis + 1:])]
    return [select(call("lt", rel, idx(steps)), new, cache[out])]


# ---- one-hot and compress ----------------------------------------------------------------------

@define("OneHot")
def _one_hot(ctx: ComputeCtx) -> Sequence[Expr]:
    indices, values, out = ctx.input(0), ctx.input(2), ctx.index()
    axis = _axis_of(ctx, len(out))
    depth = ctx.outputs[0].shape[axis]
    hot = call("eq", wrapped(indices[(*out[:axis], *out[axis + 1:])], depth), out[axis])
    return [select(hot, values[idx(1)], values[idx(0)])]


@define("Compress")
def _compress(ctx: ComputeCtx) -> Sequence[Expr]:
    """Output position j reads kept position j + (the gap before j's run of consecutive kept
    positions): a select chain over the runs (the condition is a compile-time constant)."""
    data, out, cond = ctx.input(0), ctx.index(), ctx.value(1)
    if cond is None:
        raise ctx.unsupported("the condition must be a compile-time constant")
    axis = None if ctx.attrs["axis"] is None else _axis_of(ctx, len(data.shape))
    n = data.size if axis is None else data.shape[axis]
    kept = np.flatnonzero(np.asarray(cond).reshape(-1)[:n])
    if kept.size == 0:
        return [const(0, data.dtype)]
    starts = np.flatnonzero(np.diff(kept, prepend=-2) != 1)  # output positions where a run begins
    if starts.size > COMPRESS_RUNS:
        raise ctx.unsupported(f"the condition keeps {starts.size} separate runs (at most {COMPRESS_RUNS})")
    j = out[0] if axis is None else out[axis]
    gap: Expr = idx(int(kept[starts[-1]] - starts[-1]))
    for s, e in zip(starts[-2::-1], starts[:0:-1]):
        gap = select(call("lt", j, idx(int(e))), idx(int(kept[s] - s)), gap)
    pos = j + gap
    if axis is None:
        return [data[tuple(unravel(pos, data.shape))]]
    return [data[(*out[:axis], pos, *out[axis + 1:])]]


# ---- Resize ------------------------------------------------------------------------------------

def _coordinate(attrs: dict, o: Expr, n_out: int, n_in: int, scale: float,
                roi: tuple[Expr, Expr]) -> tuple[Expr, Expr | None]:
    """The input coordinate of output position ``o`` and, for tf_crop_and_resize, whether it falls
    outside: the reference's arithmetic, operation for operation in its dtypes (float64, or the
    roi's dtype where numpy keeps it), so that nearest picks the same taps."""
    y = cast(o, F64)
    length = scale * n_in
    mode = attrs["coordinate_transformation_mode"]
    if mode in ("half_pixel", "pytorch_half_pixel"):
        if mode == "pytorch_half_pixel" and not length > 1:
            return const(0.0, F64), None
        return (y + 0.5) / scale - 0.5, None
    if mode == "half_pixel_symmetric":
        return const(n_in / 2 * (1 - n_out / length), F64) + (y + 0.5) / scale - 0.5, None
    if mode == "align_corners":
        return (y * float(n_in - 1) / (length - 1) if length != 1 else const(0.0, F64)), None
    if mode == "asymmetric":
        return y / scale, None
    start, end = roi
    dtype = start.dtype
    if length != 1:
        x = y * cast(end - start, F64) * float(n_in - 1) / (length - 1)
    else:
        x = (end - start) * const(n_in - 1, dtype) / const(2, dtype)
    wide = np.result_type(x.dtype, dtype)
    x = cast(x, wide) + cast(unfused(start * const(n_in - 1, dtype)), wide)
    return x, call("or", call("lt", x, const(0, wide)), call("gt", x, const(n_in - 1, wide)))


def _nearest(attrs: dict, x: Expr) -> Expr:
    mode = attrs["nearest_mode"]
    if mode == "round_prefer_floor":
        return call("ceil", x - 0.5)
    if mode == "round_prefer_ceil":
        return call("floor", x + 0.5)
    return call("floor" if mode == "floor" else "ceil", x)


def _keys_cubic(d: Expr, a: float) -> Expr:
    """Keys' cubic kernel at distance ``d`` (the reference's expression)."""
    d = call("abs", d)
    near = unfused((unfused((a + 2) * d) - (a + 3)) * d * d) + 1.0
    far = unfused(a * d) - 5 * a
    far = unfused(far * d) + 8 * a
    far = unfused(far * d) - 4 * a
    return select(call("le", d, 1.0), near, select(call("lt", d, 2.0), far, 0.0))


class _Axis:
    """One resized axis: stages holding, per output position, its input taps (clamped), their
    weights (linear and cubic) and whether it falls outside (tf_crop_and_resize)."""

    def __init__(self, ctx: ComputeCtx, axis: int, n_out: int, n_in: int, scale: float,
                 roi: tuple[Expr, Expr]) -> None:
        attrs = dict(ctx.attrs)
        self.axis = axis

        def coordinate(o: Expr) -> tuple[Expr, Expr | None]:
            return _coordinate(attrs, o, n_out, n_in, scale, roi)

        self.outside: Buffer | None = None
        if attrs["coordinate_transformation_mode"] == "tf_crop_and_resize":
            self.outside = ctx.stage(f"outside{axis}", (n_out,),
                                     lambda o: coordinate(o)[1] or const(False, BOOL))
        self.weights: Buffer | None = None
        if attrs["mode"] == "nearest":
            self.n_taps = 1
            self.taps = ctx.stage(f"taps{axis}", (n_out, 1), lambda o, t: clamp(
                cast(_nearest(attrs, coordinate(o)[0]), INDEX), 0, n_in - 1))
            return
        cubic = attrs["mode"] == "cubic"
        stretch = min(scale, 1.0) if attrs["antialias"] else 1.0
        n = self.n_taps = 2 - 2 * (math.floor((-2 if cubic else -1) / stretch) + 1)

        def tap(o: Expr, t: Expr) -> Expr:  # the reference's float tap: below + first + t
            x = coordinate(o)[0]
            below = call("ceil", x) - const(1, x.dtype) + const(1 - n // 2, x.dtype)
            return cast(below, F64) + cast(t, F64)

        def weight(o: Expr, t: Expr) -> Expr:
            d = unfused((tap(o, t) - cast(coordinate(o)[0], F64)) * stretch)
            if cubic:
                return _keys_cubic(d, attrs["cubic_coeff_a"])
            return call("min", call("max", 1.0 - call("abs", d), 0.0), 1.0)

        self.taps = ctx.stage(f"taps{axis}", (n_out, n),
                              lambda o, t: clamp(cast(tap(o, t), INDEX), 0, n_in - 1))
        w = ctx.stage(f"weights{axis}", (n_out, n), weight)
        if attrs["antialias"]:
            w = self._normalized(ctx, "antialias", w, n_out)
        if attrs["exclude_outside"]:
            cut = w
            w = ctx.stage(f"inside{axis}", (n_out, n), lambda o, t: select(
                within(cast(tap(o, t), INDEX), 0, n_in), cut[o, t], 0.0))
            w = self._normalized(ctx, "exclude", w, n_out, keep_zero=True)
        self.weights = w

    def _normalized(self, ctx: ComputeCtx, name: str, w: Buffer, n_out: int,
                    keep_zero: bool = False) -> Buffer:
        """``w`` divided by its sum over the taps (a zero sum left as is with ``keep_zero``)."""
        def value(o: Expr, t: Expr) -> Expr:
            total = reduce("add", [self.n_taps], lambda r: w[o, r], 0.0)
            return w[o, t] / (select(call("eq", total, 0.0), 1.0, total) if keep_zero else total)
        return ctx.stage(f"{name}{self.axis}", (n_out, self.n_taps), value)

    def read(self, out: Sequence[Expr], at: tuple[Expr, ...], inner: Callable[[tuple[Expr, ...]], Expr],
             fill: np.ndarray) -> Expr:
        """This axis' value at output index ``out``, reading ``inner`` (the axes resized before) at
        ``at`` with this axis replaced by each tap."""
        o = out[self.axis]

        def term(t: Expr) -> Expr:
            value = inner((*at[:self.axis], self.taps[o, t], *at[self.axis + 1:]))
            return value if self.weights is None else unfused(self.weights[o, t] * value)
        y = term(idx(0)) if self.weights is None else reduce("add", [self.n_taps], term, 0.0)
        return y if self.outside is None else select(self.outside[o], const(fill, y.dtype), y)


def _roi_bounds(ctx: ComputeCtx, k: int, n_axes: int) -> tuple[tuple[Expr, Expr], bool | None]:
    """Resized axis ``k``'s (start, end) in the roi (0 and 1 without one), and whether they are
    (close to) the default (0, 1): None when only known at run time."""
    roi = ctx.input(1) if ctx.has(1) and ctx.input(1).size else None
    if roi is None:
        return (const(0.0, F64), const(1.0, F64)), True
    known = ctx.value(1)
    if known is None:
        return (roi[idx(k)], roi[idx(k + n_axes)]), None
    start, end = known.reshape(-1)[k], known.reshape(-1)[k + n_axes]
    return (const(start, known.dtype), const(end, known.dtype)), bool(np.allclose((start, end), (0.0, 1.0)))


@define("Resize")
def _resize(ctx: ComputeCtx) -> Sequence[Expr]:
    """Separable, as the reference: each resized axis in turn reads its taps of the result so far
    (weighted in float64 for linear and cubic); an axis resized to itself is skipped."""
    x, out, attrs = ctx.input(0), ctx.index(), dict(ctx.attrs)
    rank = len(x.shape)
    axes = [a % rank for a in attrs["axes"]] or list(range(rank))
    scales = given_input(ctx.value(2)) if ctx.has(2) else None
    sizes = given_input(ctx.value(3)) if ctx.has(3) else None
    shape, scale = resize_plan(attrs, x.shape, axes, scales, sizes)
    if 0 in shape:
        return [const(0, x.dtype)]
    tf_mode = attrs["coordinate_transformation_mode"] == "tf_crop_and_resize"
    plan = []
    for k, a in enumerate(axes):
        bounds, default = _roi_bounds(ctx, k, len(axes))
        if default is None:  # a roi known at run time: an identity either way unless tf_crop_and_resize
            default = not tf_mode
        if shape[a] == x.shape[a] and math.isclose(scale[a], 1.0) and default:
            continue
        plan.append(_Axis(ctx, a, shape[a], x.shape[a], scale[a], bounds))
    linear = attrs["mode"] != "nearest"
    fill = cast_back(np.asarray(attrs["extrapolation_value"]), F64 if linear else x.dtype)

    def value(level: int, at: tuple[Expr, ...]) -> Expr:
        if level < 0:
            return cast(x[at], F64) if linear else x[at]
        return plan[level].read(out, at, lambda inner: value(level - 1, inner), fill)

    y = value(len(plan) - 1, tuple(out))
    if linear and x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        y = call("min", call("max", call("round", y), float(info.min)), float(info.max))
    return [cast(y, x.dtype)]
