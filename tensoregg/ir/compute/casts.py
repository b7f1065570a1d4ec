"""Compute definitions of casts ops (see tensoregg.ir.compute.expr): Cast, CastLike and linear
(de)quantization.

Cast and CastLike convert among the dtypes code generation represents: bool, the 8- to 64-bit
integers and float16/32/64. Strings, bfloat16, the float8/6/4 types and int4/int2 have no native
representation and are unsupported. A float out of an integer type's range (undefined in ONNX,
platform-dependent in numpy) saturates to the nearest bound, NaN to 0. (De)quantization covers
the 8- and 16-bit integer types with float16/32 scales; BitCast is not expressible (no bit
reinterpretation in the expression language).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tensoregg.ir.compute.expr import INDEX, ComputeCtx, Expr, call, cast, const, define, reduce, select
from tensoregg.ir.ops.casts import QUANT_INTS, _division_dtype

NATIVE = frozenset(np.dtype(t) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                           np.uint32, np.uint64, np.float16, np.float32, np.float64))
"""The dtypes compute definitions (and code generation) hold values in."""
FLOATS = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def _native(ctx: ComputeCtx, what: str, dtype: np.dtype, allowed: frozenset[np.dtype] = NATIVE) -> None:
    if dtype not in allowed:
        raise ctx.unsupported(f"{what} type {dtype.name} has no native representation")


@define("Cast", "CastLike")
def _cast(ctx: ComputeCtx) -> Sequence[Expr]:
    src, dst = ctx.input(0).dtype, ctx.outputs[0].dtype
    _native(ctx, "input", src)
    _native(ctx, "target", dst)
    return [cast(ctx.broadcast(0), dst)]


# ---- linear quantization --------------------------------------------------------------------------

def _param(ctx: ComputeCtx, i: int, index: Sequence[Expr]) -> Expr:
    """Scale or zero point ``i`` for the element of X at ``index``: per tensor, per axis or per block."""
    param = ctx.input(i)
    if param.shape in ((), (1,)):
        return param[(const(0, INDEX),) * len(param.shape)]
    axis, block = ctx.attrs["axis"] % len(index), ctx.attrs["block_size"]
    if block == 0:
        return param[index[axis]]
    return param[tuple(call("div", j, const(block, INDEX)) if a == axis else j for a, j in enumerate(index))]


def _saturate(q: Expr, dtype: np.dtype) -> Expr:
    """``q`` (a float) clipped to the integer ``dtype``'s range and converted."""
    info = np.iinfo(dtype)
    return cast(call("min", call("max", q, const(info.min, q.dtype)), const(info.max, q.dtype)), dtype)


@define("QuantizeLinear")
def _quantize(ctx: ComputeCtx) -> Sequence[Expr]:
    """saturate(round_half_even(x / y_scale) + y_zero_point) to an 8- or 16-bit integer type."""
    x, scale, out = ctx.input(0), ctx.input(1), ctx.outputs[0].dtype
    _native(ctx, "input", x.dtype)
    _native(ctx, "output", out, frozenset(QUANT_INTS & NATIVE))
    div = _division_dtype(ctx.attrs["precision"], scale.dtype)
    _native(ctx, "division", div, FLOATS)
    index = ctx.index()
    q = cast(cast(x[index], div) / cast(_param(ctx, 1, index), div), F64)
    q = call("round", q)
    if ctx.has(2):
        q = q + cast(_param(ctx, 2, index), F64)
    return [_saturate(q, out)]


@define("DequantizeLinear")
def _dequantize(ctx: ComputeCtx) -> Sequence[Expr]:
    """(x - x_zero_point) * x_scale computed in float64, then rounded to the output type."""
    x, scale, out = ctx.input(0), ctx.input(1), ctx.outputs[0].dtype
    _native(ctx, "input", x.dtype)
    _native(ctx, "scale", scale.dtype, FLOATS)
    _native(ctx, "output", out, FLOATS)
    index = ctx.index()
    dx = cast(x[index], F64)
    if ctx.has(2):
        dx = dx - cast(_param(ctx, 2, index), F64)
    return [cast(dx * cast(_param(ctx, 1, index), F64), out)]


@define("DynamicQuantizeLinear")
def _dynamic_quantize(ctx: ComputeCtx) -> Sequence[Expr]:
    """uint8 quantization over [min(x, 0), max(x, 0)]: y, its scale and its zero point (float32 math)."""
    x = ctx.input(0)
    low, high = (ctx.stage(combiner, (), lambda fn=combiner: reduce(fn, x.shape, lambda *r: x[r], 0.0))
                 for combiner in ("min", "max"))
    lo, hi = low[()], high[()]
    scale = select(call("eq", hi, lo), const(1, F32), hi - lo) / const(255, F32)
    zero_point = call("round", _clip(-lo / scale, 0, 255))
    y = _clip(call("round", x[ctx.index()] / scale) + zero_point, 0, 255)
    u8 = np.dtype(np.uint8)
    return [cast(y, u8), scale, cast(zero_point, u8)]


def _clip(x: Expr, low: float, high: float) -> Expr:
    return call("min", call("max", x, const(low, x.dtype)), const(high, x.dtype))
