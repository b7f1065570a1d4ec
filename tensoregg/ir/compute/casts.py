"""Compute definitions of casts ops (see tensoregg.ir.compute.expr): Cast, CastLike, BitCast and
linear (de)quantization.

Cast and CastLike convert among every numeric dtype: bool, the integers, float16/32/64 and
ml_dtypes' bfloat16, float8/6/4 and int4/uint4/int2/uint2 (rounded or wrapped as ml_dtypes does);
strings are unsupported. With ``saturate``, float8 targets clip to the type's range first (NaN stays
NaN); float8e8m0 is computed from the float64 bits per ``round_mode``. A float to an integer
truncates to int64 (saturating, NaN to 0) and keeps the target's low bits. ``tensoregg.ir.ops.casts``
states these rules. BitCast reinterprets each element's bits. (De)quantization covers every type of
the references.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_dtypes
import numpy as np

from tensoregg.ir.compute.expr import (
    INDEX,
    ComputeCtx,
    Expr,
    bitcast,
    call,
    cast,
    const,
    define,
    reduce,
    select,
)
from tensoregg.ir.ops.casts import E8M0, FLOAT8, QUANT_INTS, STRING, division_dtype

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
U8, I64, U64 = np.dtype(np.uint8), np.dtype(np.int64), np.dtype(np.uint64)


def _numeric(ctx: ComputeCtx, what: str, dtype: np.dtype) -> None:
    if dtype == STRING or dtype.kind == "c":
        raise ctx.unsupported(f"{what} type {dtype.name} has no native representation")


def convert(x: Expr, dtype: np.dtype, saturate: bool = True, round_mode: str = "up") -> Expr:
    """``x`` converted to ``dtype`` as ONNX Cast does (``tensoregg.ir.ops.casts.cast_array``)."""
    if dtype == E8M0:
        return _to_e8m0(x, saturate, round_mode)
    if dtype in FLOAT8 and saturate:  # +-inf and beyond the range -> +-max; NaN stays NaN
        limit = float(ml_dtypes.finfo(dtype).max)
        return cast(_clip(cast(x, F64), -limit, limit), dtype)
    return cast(x, dtype)


def _to_e8m0(x: Expr, saturate: bool, round_mode: str) -> Expr:
    """float8e8m0 (a power of two) as ``tensoregg.ir.ops.casts`` states it: |x| rounded to a power of
    two per ``round_mode`` on its float64 bits, then limited to 2**-127 ... 2**127 (``saturate``) or
    NaN outside; inf -> 2**127 (``saturate``) or NaN; NaN -> NaN."""
    bits = call("and", bitcast(cast(x, F64), U64), const((1 << 63) - 1, U64))
    field = cast(call("shr", bits, const(52, U64)), I64)
    mantissa = call("and", bits, const((1 << 52) - 1, U64))
    up: Expr = const(0, I64)
    if round_mode == "up":
        up = cast(call("ne", mantissa, const(0, U64)), I64)
    elif round_mode == "nearest":  # ties up
        up = cast(call("ge", mantissa, const(1 << 51, U64)), I64)
    biased = field + up + const(127 - 1023, I64)
    if saturate:
        out = call("min", call("max", biased, const(0, I64)), const(0xFE, I64))
    else:
        outside = call("or", call("lt", biased, const(0, I64)), call("gt", biased, const(0xFE, I64)))
        out = select(outside, const(0xFF, I64), biased)
    infinite = call("eq", bits, const(0x7FF << 52, U64))
    nan = call("gt", bits, const(0x7FF << 52, U64))
    out = select(nan, const(0xFF, I64), select(infinite, const(0xFE if saturate else 0xFF, I64), out))
    return bitcast(cast(out, U8), E8M0)


@define("Cast", "CastLike")
def _cast(ctx: ComputeCtx) -> Sequence[Expr]:
    src, dst = ctx.input(0).dtype, ctx.outputs[0].dtype
    _numeric(ctx, "input", src)
    _numeric(ctx, "target", dst)
    return [convert(ctx.broadcast(0), dst, bool(ctx.attrs["saturate"]), ctx.attrs["round_mode"])]


@define("BitCast")
def _bitcast(ctx: ComputeCtx) -> Sequence[Expr]:
    """Each element's bits (little endian, as numpy stores them) read as the target type."""
    return [bitcast(ctx.broadcast(0), ctx.outputs[0].dtype)]


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


@define("QuantizeLinear")
def _quantize(ctx: ComputeCtx) -> Sequence[Expr]:
    """saturate(round_half_even(x / y_scale) + y_zero_point) for integer types; x / y_scale +
    y_zero_point converted as Cast does (``saturate``) for float types."""
    x, scale, out = ctx.input(0), ctx.input(1), ctx.outputs[0].dtype
    div = division_dtype(ctx.attrs["precision"], scale.dtype)
    index = ctx.index()
    q = cast(cast(x[index], div) / cast(_param(ctx, 1, index), div), F64)
    zero_point = cast(_param(ctx, 2, index), F64) if ctx.has(2) else const(0.0, F64)
    if out in QUANT_INTS:
        return [saturate(call("round", q) + zero_point, out)]
    return [convert(q + zero_point, out, bool(ctx.attrs["saturate"]))]


def saturate(q: Expr, dtype: np.dtype) -> Expr:
    """``q`` (a float) clipped to the integer ``dtype``'s range and converted."""
    info = ml_dtypes.iinfo(dtype)
    return cast(_clip(q, info.min, info.max), dtype)




@define("DequantizeLinear")
def _dequantize(ctx: ComputeCtx) -> Sequence[Expr]:
    """(x - x_zero_point) * x_scale computed in float64, then rounded to the output type."""
    x, out = ctx.input(0), ctx.outputs[0].dtype
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
    return [cast(y, U8), scale, cast(zero_point, U8)]


def _clip(x: Expr, low: float, high: float) -> Expr:
    """``x`` clipped to [low, high] (NaN stays NaN)."""
    return call("min", call("max", x, const(low, x.dtype)), const(high, x.dtype))
