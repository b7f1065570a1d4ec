"""Converters of ATen's arithmetic, comparison, logical and reduction ops into IR nodes, computed in
the dtype torch promotes to; ``aten.ATEN`` maps the ops to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from tensoregg.frontends.aten_shape import normal_axes

if TYPE_CHECKING:
    from tensoregg.frontends.aten import Builder

Converter = Callable[..., Any]


def unary(op: str, **attrs: Any) -> Converter:
    return lambda b, x: b.emit(op, [b.tensor(x)], **attrs)


def arith(op: str) -> Converter:
    """``x op y`` computed in the result's dtype (torch promotes; the IR op wants one dtype)."""

    def convert(b: Builder, x: Any, y: Any, *, alpha: Any = 1) -> str:
        other = b.operand(y, b.out_dtype)
        if alpha != 1:
            other = b.emit("Mul", [other, b.const(alpha, b.out_dtype)])
        return b.emit(op, [b.operand(x, b.out_dtype), other])

    return convert


def compare(op: str, negate: bool = False) -> Converter:
    """A comparison, both sides in the dtype torch promotes them to."""

    def convert(b: Builder, x: Any, y: Any) -> str:
        dtype = b.promoted(x, y)
        out = b.emit(op, [b.operand(x, dtype), b.operand(y, dtype)])
        return b.emit("Not", [out]) if negate else out

    return convert


def logical(op: str) -> Converter:
    return lambda b, x, y: b.emit(op, [b.operand(x, np.dtype(bool)), b.operand(y, np.dtype(bool))])


def bitwise(op: str, on_bools: str) -> Converter:
    """A bitwise op: the logical one ``on_bools`` (torch writes ``a & b`` of masks so)."""

    def convert(b: Builder, x: Any, y: Any) -> str:
        if b.out_dtype == np.dtype(bool):
            return logical(on_bools)(b, x, y)
        return b.emit(op, [b.operand(x, b.out_dtype), b.operand(y, b.out_dtype)])

    return convert


def bitwise_not(b: Builder, x: Any) -> str:
    return b.emit("Not" if b.out_dtype == np.dtype(bool) else "BitwiseNot", [b.tensor(x)])


def reduce(op: str) -> Converter:
    def convert(b: Builder, x: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> str:
        axes = normal_axes(dim, len(b.shape(x)))
        return b.emit(op, [b.operand(x, b.out_dtype), b.const(axes, np.int64)], keepdims=int(keepdim))

    return convert


def arg(op: str) -> Converter:
    """argmax/argmin: over ``dim``, or over the flattened tensor when dim is None."""

    def convert(b: Builder, x: Any, dim: Any = None, keepdim: bool = False) -> str:
        if dim is None:
            flat = b.emit("Reshape", [b.tensor(x), b.const([-1], np.int64)])
            return b.emit("Reshape", [b.emit(op, [flat], axis=0), b.const(b.out_shape, np.int64)])
        return b.emit(op, [b.tensor(x)], axis=dim % len(b.shape(x)), keepdims=int(keepdim))

    return convert


def extreme(values_op: str, index_op: str) -> Converter:
    """max.dim/min.dim: (values, indices) along ``dim``."""

    def convert(b: Builder, x: Any, dim: int, keepdim: bool = False) -> tuple[str, str]:
        axis = dim % len(b.shape(x))
        values = b.emit(values_op, [b.tensor(x), b.const([axis], np.int64)], keepdims=int(keepdim))
        return values, b.emit(index_op, [b.tensor(x)], axis=axis, keepdims=int(keepdim))

    return convert


def var(b: Builder, x: Any, dim: Any = None, *, correction: Any = None, keepdim: bool = False) -> str:
    """Variance: mean squared deviation, times n / (n - correction) (Bessel's by default)."""
    shape, name = b.shape(x), b.operand(x, b.out_dtype)
    axes = normal_axes(dim, len(shape))
    n = int(np.prod([shape[a] for a in axes]))
    deviation = b.emit("Sub", [name, b.emit("ReduceMean", [name, b.const(axes, np.int64)])])
    squares = b.emit("Mul", [deviation, deviation])
    total = b.emit("ReduceSum", [squares, b.const(axes, np.int64)], keepdims=int(keepdim))
    return b.emit("Div", [total, b.const(n - (1 if correction is None else correction), b.out_dtype)])


def remainder(b: Builder, x: Any, y: Any) -> str:
    """Python's modulo (the divisor's sign): Mod for integers, x - floor(x / y) * y for floats."""
    x, y = b.operand(x, b.out_dtype), b.operand(y, b.out_dtype)
    if b.out_dtype.kind in "iu":
        return b.emit("Mod", [x, y])
    return b.emit("Sub", [x, b.emit("Mul", [b.emit("Floor", [b.emit("Div", [x, y])]), y])])


def any_(b: Builder, x: Any, dim: Any = None, keepdim: bool = False) -> str:
    as_int = b.emit("Cast", [b.tensor(x)], to=6)  # INT32
    axes = b.const(normal_axes(dim, len(b.shape(x))), np.int64)
    return b.emit("Cast", [b.emit("ReduceMax", [as_int, axes], keepdims=int(keepdim))], to=9)  # BOOL


def addmm(b: Builder, bias: Any, x: Any, y: Any, *, beta: float = 1, alpha: float = 1) -> str:
    return b.emit("Gemm", [b.tensor(x), b.tensor(y), b.operand(bias, b.out_dtype)], alpha=alpha, beta=beta)


def clip(b: Builder, x: Any, low: Any = None, high: Any = None) -> str:
    bounds = [b.const(v, b.out_dtype) if v is not None else "" for v in (low, high)]
    while bounds and not bounds[-1]:
        bounds.pop()
    return b.emit("Clip", [b.operand(x, b.out_dtype), *bounds])


def where(b: Builder, cond: Any, x: Any, y: Any) -> str:
    return b.emit("Where", [b.operand(cond, np.dtype(bool)), b.operand(x, b.out_dtype),
                            b.operand(y, b.out_dtype)])


def full(b: Builder, value: Any) -> str:
    """A tensor of the node's shape and dtype filled with ``value``: a broadcast scalar."""
    return b.emit("Expand", [b.const(value, b.out_dtype), b.const(b.out_shape, np.int64)])


def softmax(op: str) -> Converter:
    return lambda b, x, dim, half_to_float=False: b.emit(op, [b.tensor(x)], axis=dim % len(b.shape(x)))


def rsqrt(b: Builder, x: Any) -> str:
    return b.emit("Reciprocal", [b.emit("Sqrt", [b.tensor(x)])])
