"""Compute definitions of shape and layout ops: each output element is an input element read at an
index computed from the output index (reshapes, transposes, slices, pads, tiles...), or a value of
the index alone (Range, EyeLike, ConstantOfShape, Shape, Size).

The inputs that decide a layout (Reshape's target, Slice's bounds, Pad's pads...) are compile-time
constants: the definitions take the layout from the output types or from the reference's own
helpers, so both always agree. Every load is in range for every output index: a read that only
some indices need (a Concat part, a padded border) is clamped and its value discarded by a select.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tensoregg.ir.compute.expr import (
    INDEX,
    Buffer,
    ComputeCtx,
    Expr,
    all_true,
    call,
    cast,
    clamp,
    const,
    define,
    idx,
    select,
)
from tensoregg.ir.dtypes import dtype_of
from tensoregg.ir.ops.shape import NARROW_FLOATS, pad_widths, perm_of, shape_range, slice_plan

# ---- index helpers (shared with the indexing and einsum definitions) ----------------------------


def within(i: Expr, low: int, high: int) -> Expr:
    """low <= i < high."""
    return call("and", call("ge", i, idx(low)), call("lt", i, idx(high)))


def first(buf: Buffer) -> Expr:
    """The first element of ``buf`` (a scalar input given as a tensor of one element)."""
    return buf[(idx(0),) * len(buf.shape)]


def unfused(product: Expr) -> Expr:
    """``product`` (up to a NaN's payload) kept out of a fused multiply-add (native code may fuse
    a multiply into the add that uses it): rounded before it is added, as numpy rounds it, so that
    a result rounded to an integer later breaks its ties the same way."""
    return select(call("isnan", product), const(np.nan, product.dtype), product)


def ravel(index: Sequence[Expr], shape: Sequence[int]) -> Expr:
    """The row-major flat offset of ``index`` in ``shape``."""
    flat: Expr = idx(0)
    for k, (i, d) in enumerate(zip(index, shape)):
        flat = i if k == 0 else flat * idx(d) + i
    return flat


def unravel(flat: Expr, shape: Sequence[int]) -> list[Expr]:
    """The index of row-major flat offset ``flat`` (in range) in ``shape``."""
    out: list[Expr] = []
    for k in range(len(shape) - 1, 0, -1):
        out.append(call("rem", flat, idx(shape[k])))
        flat = call("div", flat, idx(shape[k]))
    return [flat, *out[::-1]] if shape else []


def reshaped(buf: Buffer, index: Sequence[Expr], shape: Sequence[int]) -> Expr:
    """``buf`` read at ``index`` of ``shape``, a row-major view of the same elements.

    Both shapes (without their 1s) are cut into the shortest runs of axes holding equal element
    counts; a run's output index is flattened and unravelled into the input's axes, so an axis kept
    as is (the common case, the last one above all) maps straight through."""
    if 0 in shape:
        return const(0, buf.dtype)  # no element: never evaluated
    at: list[Expr] = [idx(0)] * len(buf.shape)
    src = [a for a, d in enumerate(buf.shape) if d != 1]
    dst = [a for a, d in enumerate(shape) if d != 1]
    i = j = 0
    while i < len(src):
        gi, gj = [src[i]], [dst[j]]
        ni, nj = buf.shape[src[i]], shape[dst[j]]
        i, j = i + 1, j + 1
        while ni != nj:
            if ni < nj:
                gi.append(src[i])
                ni, i = ni * buf.shape[src[i]], i + 1
            else:
                gj.append(dst[j])
                nj, j = nj * shape[dst[j]], j + 1
        parts = unravel(ravel([index[a] for a in gj], [shape[a] for a in gj]), [buf.shape[a] for a in gi])
        for a, e in zip(gi, parts):
            at[a] = e
    return buf[tuple(at)]


def _axis(axis: int, rank: int) -> int:
    return axis % rank if rank else 0


# ---- reshaping and reordering --------------------------------------------------------------------

@define("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(ctx: ComputeCtx) -> Sequence[Expr]:
    return [reshaped(ctx.input(0), ctx.index(), ctx.outputs[0].shape)]


@define("Expand")
def _expand(ctx: ComputeCtx) -> Sequence[Expr]:
    return [ctx.broadcast(0)]


@define("Transpose")
def _transpose(ctx: ComputeCtx) -> Sequence[Expr]:
    x, out = ctx.input(0), ctx.index()
    at: list[Expr] = list(out)
    for k, p in enumerate(perm_of(x.shape, ctx.attrs["perm"])):
        at[p] = out[k]
    return [x[tuple(at)]]


@define("DepthToSpace")
def _depth_to_space(ctx: ComputeCtx) -> Sequence[Expr]:
    """out[n, c, y, x] = in[n, channel, y / b, x / b] with the block offsets (y % b, x % b) picking
    the channel: DCR (depth-column-row) puts them outermost, CRD innermost."""
    x, (n, c, h, w) = ctx.input(0), ctx.index()
    b = ctx.attrs["blocksize"]
    groups = ctx.outputs[0].shape[1]
    dy, dx = call("rem", h, idx(b)), call("rem", w, idx(b))
    block = dy * idx(b) + dx
    channel = block * idx(groups) + c if ctx.attrs["mode"] == "DCR" else c * idx(b * b) + block
    return [x[n, channel, call("div", h, idx(b)), call("div", w, idx(b))]]


@define("SpaceToDepth")
def _space_to_depth(ctx: ComputeCtx) -> Sequence[Expr]:
    """The inverse of DepthToSpace: output channel k holds block offset and input channel."""
    x, (n, k, h, w) = ctx.input(0), ctx.index()
    b, channels = ctx.attrs["blocksize"], x.shape[1]
    if ctx.attrs["mode"] == "DCR":
        block, c = call("div", k, idx(channels)), call("rem", k, idx(channels))
    else:
        block, c = call("rem", k, idx(b * b)), call("div", k, idx(b * b))
    dy, dx = call("div", block, idx(b)), call("rem", block, idx(b))
    return [x[n, c, h * idx(b) + dy, w * idx(b) + dx]]


@define("ReverseSequence")
def _reverse_sequence(ctx: ComputeCtx) -> Sequence[Expr]:
    """Steps t < n of batch entry i read step n - 1 - t, where n = sequence_lens[i] taken as the
    reference's slice ``[:n]`` takes it (clamped to the time length, negative from the end)."""
    x, lens, out = ctx.input(0), ctx.input(1), ctx.index()
    batch, time = ctx.attrs["batch_axis"], ctx.attrs["time_axis"]
    steps = x.shape[time]
    n = cast(lens[out[batch]], INDEX)
    n = select(call("lt", n, idx(0)), call("max", n + idx(steps), idx(0)), call("min", n, idx(steps)))
    t = out[time]
    at: list[Expr] = list(out)
    at[time] = select(call("lt", t, n), n - idx(1) - t, t)
    return [x[tuple(at)]]


# ---- joining and cutting -------------------------------------------------------------------------

@define("Concat")
def _concat(ctx: ComputeCtx) -> Sequence[Expr]:
    """A chain of selects on the axis position; each part's read is clamped into that part."""
    out, shape = ctx.index(), ctx.outputs[0].shape
    axis = _axis(ctx.attrs["axis"], len(shape))
    j, total = out[axis], shape[axis]
    parts: list[tuple[int, Buffer]] = []
    offset = 0
    for buf in ctx.inputs:
        if buf is not None and buf.shape[axis]:
            parts.append((offset, buf))
            offset += buf.shape[axis]
    value: Expr | None = None
    for offset, buf in reversed(parts):
        n = buf.shape[axis]
        pos = j - idx(offset)
        if offset > 0:
            pos = call("max", pos, idx(0))
        if offset + n < total:
            pos = call("min", pos, idx(n - 1))
        load = buf[(*out[:axis], pos, *out[axis + 1:])]
        value = load if value is None else select(call("lt", j, idx(offset + n)), load, value)
    return [const(0, ctx.outputs[0].dtype) if value is None else value]


@define("Split")
def _split(ctx: ComputeCtx) -> Sequence[Expr]:
    x = ctx.input(0)
    axis = _axis(ctx.attrs["axis"], len(x.shape))
    exprs, offset = [], 0
    for k, t in enumerate(ctx.outputs):
        out = ctx.index(k)
        exprs.append(x[(*out[:axis], out[axis] + idx(offset), *out[axis + 1:])])
        offset += t.shape[axis]
    return exprs


def _ints(v: np.ndarray | None) -> list[int] | None:
    return None if v is None else [int(a) for a in np.asarray(v).reshape(-1)]


@define("Slice")
def _slice(ctx: ComputeCtx) -> Sequence[Expr]:
    x, out = ctx.input(0), ctx.index()
    bounds = slice_plan(x.shape, *[_ints(ctx.value(i)) for i in (1, 2, 3, 4)])  # type: ignore[arg-type]
    at = []
    for o, s, d in zip(out, bounds, x.shape):
        start, _, step = s.indices(d)
        at.append(idx(start) + o * idx(step))
    return [x[tuple(at)]]


@define("Tile")
def _tile(ctx: ComputeCtx) -> Sequence[Expr]:
    x, out, shape = ctx.input(0), ctx.index(), ctx.outputs[0].shape
    at = [idx(0) if d == 1 else o if n == d else call("rem", o, idx(d))
          for o, d, n in zip(out, x.shape, shape)]
    return [x[tuple(at)]]


def _padded_position(mode: str, o: Expr, begin: int, end: int, d: int) -> tuple[Expr, Expr | None]:
    """The input position output position ``o`` reads along an axis of length ``d`` padded by
    ``begin``/``end`` (negative: cropped), and for the constant mode whether it is inside."""
    if begin <= 0 and end <= 0:
        return o - idx(begin), None
    if mode == "constant":
        src = o - idx(begin)
        return clamp(src, 0, d - 1), within(src, 0, d)
    first = max(-begin, 0)
    length = d - first - max(-end, 0)  # of the cropped input, which np.pad extends
    p = o - idx(max(begin, 0))  # position in it; may be outside
    if mode == "edge" or length == 1:
        return idx(first) + clamp(p, 0, length - 1), None
    period = length if mode == "wrap" else 2 * (length - 1)
    q = call("rem", p + idx(period * -(-max(begin, 0) // period)), idx(period))  # p mod period, >= 0
    if mode == "reflect":
        q = select(call("lt", q, idx(length)), q, idx(period) - q)
    return idx(first) + q, None


@define("Pad")
def _pad(ctx: ComputeCtx) -> Sequence[Expr]:
    x, out, dtype = ctx.input(0), ctx.index(), ctx.outputs[0].dtype
    if 0 in ctx.outputs[0].shape:
        return [const(0, dtype)]
    widths = pad_widths(len(x.shape), _ints(ctx.value(1)) or [], _ints(ctx.value(3)))
    at, inside = [], []
    for o, (b, e), d in zip(out, widths, x.shape):
        pos, ok = _padded_position(ctx.attrs["mode"], o, b, e, d)
        at.append(pos)
        inside += [ok] if ok is not None else []
    if not inside:
        return [x[tuple(at)]]
    fill = first(ctx.input(2)) if ctx.has(2) else const(0, dtype)
    return [select(all_true(inside), x[tuple(at)], fill)]


@define("CenterCropPad")
def _center_crop_pad(ctx: ComputeCtx) -> Sequence[Expr]:
    x, out, shape = ctx.input(0), ctx.index(), ctx.outputs[0].shape
    if 0 in shape or 0 in x.shape:
        return [const(0, x.dtype)]
    at, inside = [], []
    for o, d, size in zip(out, x.shape, shape):
        if size <= d:
            at.append(o + idx((d - size) // 2))
        else:
            src = o - idx((size - d) // 2)
            at.append(clamp(src, 0, d - 1))
            inside.append(within(src, 0, d))
    value = x[tuple(at)]
    return [select(all_true(inside), value, const(0, x.dtype)) if inside else value]


# ---- values of the index alone -----------------------------------------------------------------

@define("Shape")
def _shape(ctx: ComputeCtx) -> Sequence[Expr]:
    window = shape_range(len(ctx.input(0).shape), ctx.attrs["start"], ctx.attrs["end"])
    dims = ctx.input(0).shape[window]
    (i,) = ctx.index()
    value: Expr = idx(dims[-1] if dims else 0)
    for k in range(len(dims) - 2, -1, -1):
        value = select(call("eq", i, idx(k)), idx(dims[k]), value)
    return [value]


@define("Size")
def _size(ctx: ComputeCtx) -> Sequence[Expr]:
    return [idx(ctx.input(0).size)]


@define("ConstantOfShape")
def _constant_of_shape(ctx: ComputeCtx) -> Sequence[Expr]:
    value = ctx.attrs["value"]
    return [const(0.0 if value is None else np.asarray(value).reshape(()), ctx.outputs[0].dtype)]


@define("EyeLike")
def _eye_like(ctx: ComputeCtx) -> Sequence[Expr]:
    i, j = ctx.index()
    dtype = ctx.outputs[0].dtype
    return [select(call("eq", j - i, idx(ctx.attrs["k"])), const(1, dtype), const(0, dtype))]


@define("Trilu")
def _trilu(ctx: ComputeCtx) -> Sequence[Expr]:
    x, out = ctx.input(0), ctx.index()
    k: Expr = idx(0)
    if ctx.has(1):
        known = ctx.value(1)
        k = idx(int(known.reshape(()))) if known is not None else cast(first(ctx.input(1)), INDEX)
    diagonal = out[-1] - out[-2]
    keep = call("ge" if ctx.attrs["upper"] else "le", diagonal, k)
    return [select(keep, x[out], const(0, x.dtype))]


@define("Range")
def _range(ctx: ComputeCtx) -> Sequence[Expr]:
    """start + i * delta: in i64 for integers, for floats in float64 (the stash type for
    float16/bfloat16) as the reference computes it."""
    dtype = ctx.outputs[0].dtype
    start, delta = (ctx.value(k) for k in (0, 2))
    if start is None or delta is None:
        raise ctx.unsupported("start and delta must be compile-time constants")
    (i,) = ctx.index()
    if dtype.kind in "iu":
        return [cast(idx(int(start.reshape(()))) + i * idx(int(delta.reshape(()))), dtype)]
    work = dtype_of(ctx.attrs["stash_type"]) if dtype in NARROW_FLOATS else np.dtype(np.float64)
    s, d = (const(float(v.reshape(()).astype(work)), work) for v in (start, delta))
    return [cast(s + unfused(cast(i, work) * d), dtype)]
