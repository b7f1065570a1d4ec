"""Reductions over a set of axes (ReduceSum, ReduceMean, ReduceMax...), all through ``_reduce``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tensoregg.ir.ops.casts import cast_array
from tensoregg.ir.registry import Attr, InferCtx, Upgrade, op
from tensoregg.ir.shapes import norm_axes, reduced_shape
from tensoregg.ir.types import TensorType

Kernel = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
"""``kernel(x, axes)`` reduces ``x`` over ``axes`` keeping the reduced dims (size 1)."""


def reduce_axes(axes: np.ndarray | None, rank: int, noop_with_empty_axes: int) -> tuple[int, ...]:
    """The reduced axes: all of them when none are given, unless noop_with_empty_axes.

    Reducing over no axes still applies an op's element-wise steps (ReduceSumSquare squares).
    """
    given = [] if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    if not given:
        return () if noop_with_empty_axes else tuple(range(rank))
    return tuple(sorted(a % rank for a in given))


def _reduce_shape(ctx: InferCtx) -> TensorType:
    shape = ctx.shape(0)
    if ctx.has(1):
        norm_axes(ctx, ctx.ints(1), len(shape))
    axes = reduce_axes(ctx.value(1) if ctx.has(1) else None, len(shape), ctx.attrs["noop_with_empty_axes"])
    return TensorType(ctx.dtype(0), reduced_shape(shape, axes, bool(ctx.attrs["keepdims"])))


def _axes_to_input(since: int) -> Callable[[Upgrade], None]:
    def adapt(up: Upgrade) -> None:
        if up.opset < since:
            up.move_attr_to_input("axes", 1)

    return adapt


def _wide(x: np.ndarray) -> np.ndarray:
    """Floats narrower than float32 (float16, bfloat16) computed in float32."""
    return x.astype(np.float32) if x.dtype.name in ("float16", "bfloat16") else x


def _reduce(name: str, kernel: Kernel, doc: str, *, axes_input_since: int = 18) -> None:
    def reference(attrs, data, axes=None):
        reduced = reduce_axes(axes, data.ndim, attrs["noop_with_empty_axes"])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = np.asarray(kernel(_wide(data), reduced))
        if not attrs["keepdims"]:
            out = np.squeeze(out, reduced)
        return cast_array(out, data.dtype)  # an integer's log or root of NaN or -inf: as Cast defines it

    reference.__doc__ = doc
    op(name, "data axes?", "reduced", shape=_reduce_shape, static=(1,),
       attrs={"keepdims": Attr("int", 1), "noop_with_empty_axes": Attr("int", 0)},
       adapt=_axes_to_input(axes_input_since))(reference)


def _extreme(ufunc: np.ufunc, largest: bool) -> Kernel:
    """max/min whose empty-set result is -inf/+inf (the dtype's min/max for ints, False/True for bool)."""

    def kernel(x, axes):
        if x.dtype == np.bool_:
            initial = not largest
        elif x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            initial = info.min if largest else info.max
        else:
            initial = -np.inf if largest else np.inf
        return ufunc.reduce(x, axis=axes, keepdims=True, initial=initial)

    return kernel


def _sum(x, axes):
    return np.sum(x, axis=axes, keepdims=True)


def _log_sum_exp(x, axes):
    peak = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    peak = np.where(np.isfinite(peak), peak, 0).astype(x.dtype)
    return np.log(_sum(np.exp(x - peak), axes)) + peak


_reduce("ReduceSum", _sum, "Sum over ``axes`` (all axes if none given); 0 over an empty set.",
        axes_input_since=13)
_reduce("ReduceMean", lambda x, axes: np.mean(x, axis=axes, keepdims=True),
        "Mean over ``axes`` (all axes if none given); NaN over an empty set.")
_reduce("ReduceMax", _extreme(np.maximum, largest=True),
        "Maximum over ``axes`` (all axes if none given); -inf (or the dtype's minimum) over an empty set.")
_reduce("ReduceMin", _extreme(np.minimum, largest=False),
        "Minimum over ``axes`` (all axes if none given); +inf (or the dtype's maximum) over an empty set.")
_reduce("ReduceProd", lambda x, axes: np.prod(x, axis=axes, keepdims=True),
        "Product over ``axes`` (all axes if none given); 1 over an empty set.")
_reduce("ReduceL1", lambda x, axes: _sum(np.abs(x), axes),
        "Sum of absolute values over ``axes`` (all axes if none given); 0 over an empty set.")
_reduce("ReduceL2", lambda x, axes: np.sqrt(_sum(np.square(x), axes)),
        "Euclidean norm over ``axes`` (all axes if none given); 0 over an empty set.")
_reduce("ReduceLogSum", lambda x, axes: np.log(_sum(x, axes)),
        "log of the sum over ``axes`` (all axes if none given); -inf over an empty set.")
_reduce("ReduceLogSumExp", _log_sum_exp,
        "log(sum(exp(x))) over ``axes`` (all axes if none given), computed stably; -inf over an empty set.")
_reduce("ReduceSumSquare", lambda x, axes: _sum(np.square(x), axes),
        "Sum of squares over ``axes`` (all axes if none given); 0 over an empty set.")
