"""Indexing operators: gather/scatter, one-hot, top-k, arg-min/max, cumulative ops and the
data-dependent selections (NonZero, Compress, Unique: exact shapes over compile-time constants,
upper bounds otherwise, ``tensoregg.ir.bounds``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.ir.registry import Attr, InferCtx, Upgrade, op
from tensoregg.ir.shapes import reduced_shape
from tensoregg.ir.types import TensorType

INT64 = np.dtype(np.int64)
REDUCTIONS = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _index_input(ctx: InferCtx, i: int) -> tuple[int, ...]:
    """The shape of input ``i``, which must hold int32/int64 indices."""
    if ctx.dtype(i) not in (np.int32, np.int64):
        ctx.fail(f"input {i} holds indices and must be int32 or int64, got {ctx.dtype(i)}")
    return ctx.shape(i)


def _choice(ctx: InferCtx, attr: str, allowed: Any) -> str:
    """A string attribute that must be one of ``allowed``."""
    value = ctx.attrs[attr]
    if value not in allowed:
        raise InvalidModel(f"{ctx.op} node {ctx.node!r}: {attr}={value!r} is not one of {sorted(allowed)}")
    return value


# --- gather -------------------------------------------------------------------------------------

def _gather_shape(ctx: InferCtx) -> TensorType:
    data, indices = ctx.shape(0), _index_input(ctx, 1)
    if not data:
        ctx.fail("data must have rank >= 1")
    axis = ctx.axis(ctx.attrs["axis"], len(data))
    return TensorType(ctx.dtype(0), data[:axis] + indices + data[axis + 1:])


@op("Gather", "data indices", "output", attrs={"axis": Attr("int", 0)}, shape=_gather_shape)
def gather(attrs, data, indices):
    """Entries of ``data`` along ``axis`` picked by ``indices`` (negative counts from the end)."""
    return np.take(data, indices, axis=attrs["axis"])


def _gather_elements_shape(ctx: InferCtx) -> TensorType:
    data, indices = ctx.shape(0), _index_input(ctx, 1)
    if len(data) != len(indices) or not data:
        ctx.fail(f"data {list(data)} and indices {list(indices)} must have one rank >= 1")
    ctx.axis(ctx.attrs["axis"], len(data))
    return TensorType(ctx.dtype(0), indices)


@op("GatherElements", "data indices", "output", attrs={"axis": Attr("int", 0)}, shape=_gather_elements_shape)
def gather_elements(attrs, data, indices):
    """output[i][j][k] = data[indices[i][j][k]][j][k] for axis 0 (likewise for other axes)."""
    return np.take_along_axis(data, indices.astype(np.int64), axis=attrs["axis"])


def _gather_nd_shape(ctx: InferCtx) -> TensorType:
    data, indices = ctx.shape(0), _index_input(ctx, 1)
    b = ctx.attrs["batch_dims"]
    if not indices or not 0 <= b < min(len(data), len(indices)):
        ctx.fail(f"batch_dims={b} must be below the ranks of data {list(data)} and indices {list(indices)}")
    if data[:b] != indices[:b]:
        ctx.fail(f"batch dims of data {list(data)} and indices {list(indices)} differ")
    m = indices[-1]
    if not 1 <= m <= len(data) - b:
        ctx.fail(f"indices address {m} dims after {b} batch dims, data has rank {len(data)}")
    return TensorType(ctx.dtype(0), indices[:-1] + data[b + m:])


@op("GatherND", "data indices", "output", attrs={"batch_dims": Attr("int", 0)}, shape=_gather_nd_shape)
def gather_nd(attrs, data, indices):
    """Slices of ``data`` addressed by the index tuples in the last dim of ``indices``."""
    b = attrs["batch_dims"]
    n_batch = int(np.prod(data.shape[:b], dtype=np.int64))
    m = indices.shape[-1]
    tuples = indices.reshape(n_batch, int(np.prod(indices.shape[b:-1], dtype=np.int64)), m)
    flat = data.reshape((n_batch, *data.shape[b:]))
    picked = flat[(np.arange(n_batch)[:, None], *tuple(tuples[..., j] for j in range(m)))]
    return picked.reshape(indices.shape[:-1] + data.shape[b + m:])


# --- scatter ------------------------------------------------------------------------------------

def _scatter_into(data: np.ndarray, where: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    """A copy of ``data`` with ``updates`` written (or combined by ``reduction``) at index ``where``."""
    out = data.copy()
    ufunc = REDUCTIONS[reduction]
    if ufunc is None:
        out[where] = updates
    else:
        ufunc.at(out, where, updates)
    return out


def _scatter_elements_shape(ctx: InferCtx) -> TensorType:
    data, indices = ctx.shape(0), _index_input(ctx, 1)
    _choice(ctx, "reduction", REDUCTIONS)
    if ctx.shape(2) != indices or len(data) != len(indices) or not data:
        ctx.fail(f"updates {list(ctx.shape(2))} must have the shape of indices {list(indices)} "
                 f"and the rank of data {list(data)}")
    if ctx.dtype(2) != ctx.dtype(0):
        ctx.fail(f"updates dtype {ctx.dtype(2)} differs from data dtype {ctx.dtype(0)}")
    ctx.axis(ctx.attrs["axis"], len(data))
    return ctx.type(0)


def _scatter_to_elements(up: Upgrade) -> None:
    """Scatter (deprecated at opset 11) is ScatterElements without ``reduction``."""
    up.op = "ScatterElements"


SCATTER_ATTRS = {"axis": Attr("int", 0), "reduction": Attr("string", "none")}


@op("ScatterElements", "data indices updates", "output", attrs=SCATTER_ATTRS, shape=_scatter_elements_shape)
def scatter_elements(attrs, data, indices, updates):
    """data with output[indices[i][j]][j] = updates[i][j] for axis 0, or combined by ``reduction``."""
    axis = attrs["axis"] % data.ndim
    where = list(np.indices(indices.shape, sparse=True))
    where[axis] = indices.astype(np.int64)
    return _scatter_into(data, tuple(where), updates, attrs["reduction"])


op("Scatter", "data indices updates", "output", attrs=SCATTER_ATTRS,
   shape=_scatter_elements_shape, adapt=_scatter_to_elements)(scatter_elements)


def _scatter_nd_shape(ctx: InferCtx) -> TensorType:
    data, indices = ctx.shape(0), _index_input(ctx, 1)
    _choice(ctx, "reduction", REDUCTIONS)
    if not indices or indices[-1] > len(data):
        ctx.fail(f"indices {list(indices)} must end in a dim <= the rank of data {list(data)}")
    want = indices[:-1] + data[indices[-1]:]
    if ctx.shape(2) != want:
        ctx.fail(f"updates shape {list(ctx.shape(2))} must be {list(want)}")
    if ctx.dtype(2) != ctx.dtype(0):
        ctx.fail(f"updates dtype {ctx.dtype(2)} differs from data dtype {ctx.dtype(0)}")
    return ctx.type(0)


@op("ScatterND", "data indices updates", "output", attrs={"reduction": Attr("string", "none")},
    shape=_scatter_nd_shape)
def scatter_nd(attrs, data, indices, updates):
    """data with the slices addressed by ``indices`` set to (or combined with) ``updates``."""
    where = tuple(indices[..., j] for j in range(indices.shape[-1]))
    return _scatter_into(data, where, updates, attrs["reduction"])


def _tensor_scatter_shape(ctx: InferCtx) -> TensorType:
    cache, update = ctx.shape(0), ctx.shape(1)
    _choice(ctx, "mode", ("linear", "circular"))
    if len(cache) < 2:
        ctx.fail(f"past_cache {list(cache)} must have a batch dim and a sequence dim")
    axis = ctx.axis(ctx.attrs["axis"], len(cache))
    if axis == 0:
        ctx.fail("axis must not be the batch dim 0")
    other = [d for k, d in enumerate(cache) if k != axis]
    if len(update) != len(cache) or [d for k, d in enumerate(update) if k != axis] != other \
            or update[axis] > cache[axis]:
        ctx.fail(f"update {list(update)} must match past_cache {list(cache)} except a shorter axis {axis}")
    if ctx.dtype(1) != ctx.dtype(0):
        ctx.fail(f"update dtype {ctx.dtype(1)} differs from past_cache dtype {ctx.dtype(0)}")
    if ctx.has(2) and _index_input(ctx, 2) != cache[:1]:
        ctx.fail(f"write_indices {list(ctx.shape(2))} must have shape [{cache[0]}] (one per batch)")
    return ctx.type(0)


@op("TensorScatter", "past_cache update write_indices?", "present_cache",
    attrs={"axis": Attr("int", -2), "mode": Attr("string", "linear")}, shape=_tensor_scatter_shape)
def tensor_scatter(attrs, cache, update, write_indices=None):
    """KV-cache update: ``update`` written into ``past_cache`` along ``axis`` at each batch's write index."""
    axis = attrs["axis"] % cache.ndim
    length, seq = cache.shape[axis], update.shape[axis]
    starts = np.zeros(cache.shape[0], np.int64) if write_indices is None else write_indices.astype(np.int64)
    positions = starts[:, None] + np.arange(seq)
    if attrs["mode"] == "circular":
        positions %= length
    out = cache.copy()
    out_view, update_view = np.moveaxis(out, axis, 1), np.moveaxis(update, axis, 1)
    for b, pos in enumerate(positions):
        out_view[b, pos] = update_view[b]
    return out


# --- one-hot, top-k, arg-min/max ----------------------------------------------------------------

def _one_hot_shape(ctx: InferCtx) -> TensorType:
    depth = ctx.value(1)
    if depth.size != 1 or int(depth.reshape(-1)[0]) < 1:
        ctx.fail(f"depth must be one positive number, got {depth.tolist()}")
    if ctx.shape(2) != (2,):
        ctx.fail(f"values must be [off_value, on_value], got shape {list(ctx.shape(2))}")
    indices = ctx.shape(0)
    axis = ctx.axis(ctx.attrs["axis"], len(indices) + 1)
    return TensorType(ctx.dtype(2), (*indices[:axis], int(depth.reshape(-1)[0]), *indices[axis:]))


# OneHot-9 gave all off_value for negative indices (now counted from the end): accepted as OneHot-11.
@op("OneHot", "indices depth values", "output", attrs={"axis": Attr("int", -1)}, shape=_one_hot_shape,
    static=(1,))
def one_hot(attrs, indices, depth, values):
    """values[1] where the new ``axis`` equals the index (negative counts from depth), values[0] elsewhere."""
    depth = int(depth.reshape(-1)[0])
    axis = attrs["axis"] % (indices.ndim + 1)
    idx = indices.astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)
    hot = np.expand_dims(idx, axis) == np.arange(depth).reshape((-1,) + (1,) * (indices.ndim - axis))
    return np.where(hot, values[1], values[0]).astype(values.dtype)


def _top_k_shape(ctx: InferCtx) -> list[TensorType]:
    shape = ctx.shape(0)
    if not shape:
        ctx.fail("X must have rank >= 1")
    axis = ctx.axis(ctx.attrs["axis"], len(shape))
    k = ctx.ints(1)
    if len(k) != 1 or not 0 <= k[0] <= shape[axis]:
        ctx.fail(f"K={k} must be one number in [0, {shape[axis]}] (the size of axis {axis})")
    out = (*shape[:axis], k[0], *shape[axis + 1:])
    return [TensorType(ctx.dtype(0), out), TensorType(INT64, out)]


def _top_k_from_attr(up: Upgrade) -> None:
    if up.opset < 10:
        up.move_attr_to_input("k", 1)


@op("TopK", "X K", "Values Indices", static=(1,), shape=_top_k_shape, adapt=_top_k_from_attr,
    attrs={"axis": Attr("int", -1), "largest": Attr("int", 1), "sorted": Attr("int", 1)})
def top_k(attrs, x, k):
    """The K largest (or smallest) entries along ``axis`` and their indices; ties: lower index first."""
    axis, k = attrs["axis"] % x.ndim, int(k.reshape(-1)[0])
    if attrs["largest"]:
        n = x.shape[axis]
        order = n - 1 - np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    indices = np.take(order, np.arange(k), axis=axis).astype(np.int64)
    return np.take_along_axis(x, indices, axis=axis), indices


def _arg_shape(ctx: InferCtx) -> TensorType:
    shape = ctx.shape(0)
    if not shape:
        ctx.fail("data must have rank >= 1")
    axis = ctx.axis(ctx.attrs["axis"], len(shape))
    return TensorType(INT64, reduced_shape(shape, [axis], bool(ctx.attrs["keepdims"])))


def _arg(name: str, fn, doc: str) -> None:
    def reference(attrs, data):
        axis = attrs["axis"] % data.ndim
        if attrs["select_last_index"]:
            index = data.shape[axis] - 1 - fn(np.flip(data, axis), axis=axis, keepdims=True)
        else:
            index = fn(data, axis=axis, keepdims=True)
        return (index if attrs["keepdims"] else np.squeeze(index, axis)).astype(np.int64)

    reference.__doc__ = doc
    attrs = {"axis": Attr("int", 0), "keepdims": Attr("int", 1), "select_last_index": Attr("int", 0)}
    op(name, "data", "reduced", shape=_arg_shape, attrs=attrs)(reference)


_arg("ArgMax", np.argmax, "Index of the largest entry along ``axis`` (first, or last if select_last_index).")
_arg("ArgMin", np.argmin, "Index of the smallest entry along ``axis`` (first, or last if select_last_index).")


# --- cumulative ---------------------------------------------------------------------------------

def _cumulative_shape(ctx: InferCtx) -> TensorType:
    axis = ctx.ints(1)
    if len(axis) != 1:
        ctx.fail(f"axis must be one number, got {axis}")
    ctx.axis(axis[0], ctx.type(0).rank)
    return ctx.type(0)


def _cumulative(name: str, ufunc: np.ufunc, doc: str) -> None:
    def reference(attrs, x, axis):
        axis = int(axis.reshape(-1)[0]) % max(x.ndim, 1)
        y = np.flip(x, axis) if attrs["reverse"] else x
        y = ufunc.accumulate(y, axis=axis, dtype=x.dtype)
        if attrs["exclusive"]:
            first = np.full_like(np.take(y, [0], axis=axis), ufunc.identity)
            y = np.concatenate([first, np.take(y, np.arange(y.shape[axis] - 1), axis=axis)], axis=axis)
        return np.flip(y, axis) if attrs["reverse"] else y

    reference.__doc__ = doc
    op(name, "x axis", "y", shape=_cumulative_shape, static=(1,),
       attrs={"exclusive": Attr("int", 0), "reverse": Attr("int", 0)})(reference)


_cumulative("CumSum", np.add, "Running sum along ``axis`` (``exclusive`` skips the current entry, "
            "``reverse`` runs from the end).")
_cumulative("CumProd", np.multiply, "Running product along ``axis`` (``exclusive`` skips the current "
            "entry, ``reverse`` runs from the end).")


# --- data-dependent shapes ----------------------------------------------------------------------

def _non_zero_shape(ctx: InferCtx) -> TensorType:
    x = ctx.known(0)
    if x is None:  # at most every entry
        return TensorType(INT64, (ctx.type(0).rank, ctx.type(0).size if ctx.type(0).rank else 1))
    return TensorType(INT64, non_zero({}, x).shape)


@op("NonZero", "X", "Y", shape=_non_zero_shape, bounded=(0,))
def non_zero(attrs, x):
    """Indices of the non-zero entries of X, one column per entry in row-major order ([rank, count])."""
    if x.ndim == 0:
        return np.zeros((0, int(bool(x))), np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


def _compress_shape(ctx: InferCtx) -> TensorType:
    shape = ctx.shape(0)
    if ctx.dtype(1) != np.bool_ or ctx.type(1).rank != 1:
        ctx.fail(f"condition must be a 1-D bool tensor, got {ctx.type(1)}")
    cond = ctx.known(1)
    axis = ctx.attrs["axis"]
    if axis is not None:
        axis = ctx.axis(axis, len(shape))
    n = int(np.prod(shape, dtype=np.int64)) if axis is None else shape[axis]
    if cond is None:  # at most every slice
        return TensorType(ctx.dtype(0), (n,) if axis is None else shape)
    if cond[n:].any():
        ctx.fail(f"condition selects index {int(np.argmax(cond[n:])) + n}, beyond the {n} entries")
    kept = int(np.count_nonzero(cond[:n]))
    return TensorType(ctx.dtype(0), (kept,) if axis is None else (*shape[:axis], kept, *shape[axis + 1:]))


@op("Compress", "input condition", "output", attrs={"axis": Attr("int", None)}, shape=_compress_shape,
    bounded=(1,))
def compress(attrs, data, condition):
    """The slices along ``axis`` (of the flattened input if no axis) where ``condition`` is true."""
    n = data.size if attrs["axis"] is None else data.shape[attrs["axis"]]
    return np.compress(condition[:n], data, axis=attrs["axis"])


class _Unique(NamedTuple):
    values: np.ndarray
    indices: np.ndarray
    inverse: np.ndarray
    counts: np.ndarray


def _unique(x: np.ndarray, axis: int | None, sort: bool) -> _Unique:
    """np.unique with every output, optionally in first-occurrence order instead of sorted."""
    values, indices, inverse, counts = np.unique(x, return_index=True, return_inverse=True,
                                                 return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not sort:
        order = np.argsort(indices, kind="stable")
        values = np.take(values, order, axis=0 if axis is None else axis)
        indices, counts = indices[order], counts[order]
        inverse = np.argsort(order)[inverse]
    return _Unique(values, *(a.astype(np.int64) for a in (indices, inverse, counts)))


def _unique_shape(ctx: InferCtx) -> list[TensorType]:
    axis = ctx.attrs["axis"]
    if axis is not None:
        axis = ctx.axis(axis, ctx.type(0).rank)
    x = ctx.known(0)
    if x is None:  # at most every entry (slice along axis) once; inverse_indices has one per entry
        t = ctx.type(0)
        n = t.size if axis is None else t.shape[axis]
        values = (n,) if axis is None else t.shape
        return [TensorType(t.dtype, values), *(TensorType(INT64, (n,)) for _ in range(3))]
    return [TensorType.of(a) for a in _unique(x, axis, bool(ctx.attrs["sorted"]))]


@op("Unique", "X", "Y indices? inverse_indices? counts?", shape=_unique_shape, bounded=(0,),
    attrs={"axis": Attr("int", None), "sorted": Attr("int", 1)})
def unique(attrs, x):
    """Unique entries (or slices along ``axis``) of X, with first indices, inverse indices and counts."""
    axis = attrs["axis"] if attrs["axis"] is None else attrs["axis"] % x.ndim
    return tuple(_unique(x, axis, bool(attrs["sorted"])))
