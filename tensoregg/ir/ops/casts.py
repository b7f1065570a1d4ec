"""Casts and linear quantization: Cast, CastLike, BitCast, (De)QuantizeLinear, DynamicQuantizeLinear.

Element types are ONNX ``TensorProto`` enums mapped to numpy dtypes (``tensoregg.ir.dtypes``; ml_dtypes
supplies bfloat16, the float8/float6/float4 variants and int4/uint4/int2/uint2); STRING tensors are
numpy object arrays of ``str``.

Cast semantics, as tensoregg states the ONNX specification (Cast-25). This is the one statement of
them: ``cast_array`` implements it and every target's code must agree with it bit for bit (NaN
payloads aside). Where the specification leaves a result undefined (``cast_undefined`` says where),
tensoregg still gives the result listed here, but tests never compare it with another
implementation's (numpy's, ml_dtypes', onnx's reference or onnxruntime differ among themselves there).

- **float -> integer** (int8...uint64, int4, uint4, int2, uint2): truncated toward zero. Defined by
  the spec only when that lies in the integer type's range. Otherwise (out of range, +-inf, NaN)
  tensoregg saturates to int64 (NaN -> 0; uint64 takes [2**63, 2**64) unsigned, saturating above)
  and keeps the low bits, as for integer -> integer.
- **integer -> integer**: the low bits kept, two's complement (200 int16 -> -56 int8; 9 -> int4 is -7).
- **bool**: zero (either sign) is False, everything else True (NaN too); True -> 1 or 1.0.
- **-> float16/float32/float64/bfloat16**: rounded to nearest even, once (float64 -> float16 is not
  rounded through float32), out of range -> +-inf, NaN -> NaN.
- **-> float8 e4m3fn/e4m3fnuz/e5m2/e5m2fnuz**: rounded to nearest even; out of range, +-inf and NaN
  per the spec's two tables (``saturate``: +-max; without it: NaN, or +-inf for e5m2). fnuz types
  have no -0: -0 -> 0.
- **-> float6 e2m3/e3m2, float4 e2m1** (no inf, no NaN): rounded to nearest even; out of range and
  +-inf -> +-max. NaN is undefined (tensoregg: the sign bit alone, -0, as ml_dtypes).
- **-> float8e8m0** (a power of two, 2**-127 ... 2**127): |x| rounded to a power of two per
  ``round_mode`` (``up``: the least >= |x|; ``down``: the greatest <= |x|; ``nearest``: the nearer,
  ties up), over all exponents; then above 2**127 -> 2**127 with ``saturate``, NaN without; below
  2**-127 (0 included) -> 2**-127 with ``saturate``, NaN without; +inf -> 2**127 with ``saturate``
  (the spec's table: onnx's reference gives NaN), NaN without; NaN -> NaN. Negative inputs and -0
  are undefined (tensoregg: as their magnitude). Where the table's "x > E8M0_MAX" and
  "x < E8M0_MIN" (stated on x, where the float8 tables use the rounded [x]) give another result than
  the rounded value does, the result is undefined: without ``saturate``, |x| < 2**-127 or > 2**127.
- **string**: as the spec's text says (shortest round-trip text out; "INF", "NaN"... parsed in).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.ir.dtypes import code_named, dtype_of
from tensoregg.ir.registry import Attr, InferCtx, Upgrade, op
from tensoregg.ir.types import TensorType

STRING = np.dtype(object)
FLOAT8 = frozenset(np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                          ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz))
"""Float8 types whose out-of-range behaviour the ``saturate`` attribute chooses."""
E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
SMALL_FLOATS = frozenset(np.dtype(t) for t in (ml_dtypes.float4_e2m1fn, ml_dtypes.float6_e2m3fn,
                                                ml_dtypes.float6_e3m2fn))
SMALL_INTS = frozenset(np.dtype(t) for t in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2,
                                              ml_dtypes.uint2))
QUANT_INTS = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16)) | SMALL_INTS
QUANT_TYPES = QUANT_INTS | FLOAT8 | SMALL_FLOATS
"""Element types QuantizeLinear produces and DequantizeLinear reads (plus int32 there)."""
HIGH_FLOATS = frozenset(np.dtype(t) for t in (np.float32, np.float16, ml_dtypes.bfloat16))
ROUND_MODES = ("up", "down", "nearest")
_BITS = {np.dtype(t): bits for t, bits in (
    (ml_dtypes.int4, 4), (ml_dtypes.uint4, 4), (ml_dtypes.float4_e2m1fn, 4), (ml_dtypes.int2, 2),
    (ml_dtypes.uint2, 2), (ml_dtypes.float6_e2m3fn, 6), (ml_dtypes.float6_e3m2fn, 6))}


def onnx_to_dtype(code: int, ctx: InferCtx, what: str) -> np.dtype:
    """``dtype_of`` in a shape rule: a bad code is an invalid model."""
    try:
        return dtype_of(code)
    except InvalidModel:
        raise InvalidModel(f"{ctx.op} node {ctx.node!r}: {what} {code} is not an ONNX element type") from None


def bit_width(dtype: np.dtype) -> int:
    """Bits per element as ONNX counts them (int4 is 4 bits although numpy stores a byte)."""
    if dtype == STRING:
        return 0
    return _BITS.get(np.dtype(dtype), dtype.itemsize * 8)


# --- conversions ---------------------------------------------------------------------------------


def cast_array(x: np.ndarray, dtype: np.dtype, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """Convert ``x`` to ``dtype`` with ONNX Cast semantics, as this module's docstring states them."""
    if dtype == STRING:
        return _to_strings(x)
    if x.dtype == STRING:
        x = _parse_strings(x, dtype)
    elif x.dtype.kind == "V":  # ml_dtypes lacks some casts among its own types: widen exactly first
        x = x.astype(np.int64 if x.dtype in SMALL_INTS else np.float32)
    if dtype == E8M0:
        return _to_e8m0(x, saturate, round_mode)
    if is_integer(dtype):
        if x.dtype.kind == "f":
            x = _truncate(x, unsigned=dtype == np.uint64)
        return _low_bits(x, dtype)
    if dtype in FLOAT8 and saturate:
        limit = float(ml_dtypes.finfo(dtype).max)
        x = np.clip(x.astype(np.float64), -limit, limit)  # NaN stays NaN; +-inf become +-max
    with np.errstate(all="ignore"):
        return x.astype(dtype)


def is_integer(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is an integer type (numpy's or ml_dtypes' int4/uint4/int2/uint2; not bool)."""
    return dtype.kind in "iu" or dtype in SMALL_INTS


def _truncate(x: np.ndarray, unsigned: bool) -> np.ndarray:
    """Floats truncated toward zero to int64, saturating (NaN -> 0); with ``unsigned``, values of
    2**63 and above to uint64 (saturating), the rest as int64 reinterpreted."""
    with np.errstate(invalid="ignore"):
        t = np.trunc(np.where(np.isnan(x), 0, x).astype(np.float64))
    signed = np.clip(t, -(2.0 ** 63), 2.0 ** 63 - 1024).astype(np.int64)  # (the largest double < 2**63)
    out = np.where(t >= 2.0 ** 63, np.iinfo(np.int64).max, signed)
    if not unsigned:
        return out
    high = np.clip(t, 0, 2.0 ** 64 - 2048).astype(np.uint64)
    high = np.where(t >= 2.0 ** 64, np.iinfo(np.uint64).max, high)
    return np.where(t >= 2.0 ** 63, high, out.view(np.uint64))


def _low_bits(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integers (or bools) reduced to ``dtype``: their low bits, two's complement where signed."""
    if dtype not in SMALL_INTS:
        return x.astype(dtype)
    bits = bit_width(dtype)
    low = (x.astype(np.uint64) & np.uint64((1 << bits) - 1)).astype(np.int64)
    if ml_dtypes.iinfo(dtype).min < 0:
        low = np.where(low >= 1 << (bits - 1), low - (1 << bits), low)
    return low.astype(np.int8).astype(dtype)


def cast_undefined(x: np.ndarray, dtype: np.dtype, saturate: bool = True) -> np.ndarray:
    """Where the ONNX specification leaves casting ``x`` to ``dtype`` undefined (see the module's
    docstring): tests compare other implementations' results only elsewhere."""
    if STRING in (x.dtype, dtype):
        return np.zeros(x.shape, bool)
    from_float = x.dtype.kind == "f" or (x.dtype.kind == "V" and x.dtype not in SMALL_INTS)
    wide = (x.astype(np.float32) if x.dtype.kind == "V" and from_float else x).astype(np.float64)
    with np.errstate(invalid="ignore"):
        if is_integer(dtype) and from_float:
            info, t = ml_dtypes.iinfo(dtype), np.trunc(wide)
            return ~(np.isfinite(wide) & (t >= info.min) & (t <= info.max))
        if dtype in SMALL_FLOATS:
            return np.isnan(wide)
        if dtype == E8M0:
            outside = np.isfinite(wide) & ((np.abs(wide) < 2.0 ** -127) | (np.abs(wide) > 2.0 ** 127))
            return (np.signbit(wide) & ~np.isnan(wide)) | (outside & (not saturate))
    return np.zeros(x.shape, bool)


def _to_strings(x: np.ndarray) -> np.ndarray:
    """Numbers as their shortest round-trip text (``0.1``, ``1e-07``, ``True``)."""
    if x.dtype == STRING:
        return x.copy()
    return np.array([str(v) for v in x.reshape(-1)], dtype=object).reshape(x.shape)


def _parse_strings(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Parse numeric text ("3.14", "1E8", "+INF", "nan"; case-insensitive) toward ``dtype``."""
    texts = [v.decode() if isinstance(v, bytes) else str(v) for v in x.reshape(-1)]
    if is_integer(dtype):
        values = np.array([_parse_int(t) for t in texts], dtype=np.int64 if dtype.kind != "u" else np.uint64)
    elif dtype == np.bool_:
        values = np.array([float(t) != 0 for t in texts], dtype=np.bool_)
    else:
        values = np.array([float(t) for t in texts], dtype=np.float64)
    return values.reshape(x.shape)


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return int(float(text))  # "100.5" -> 100 (undefined in ONNX; truncation as in C)


def _to_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """float -> float8e8m0: |x| rounded to a power of two per ``round_mode``, computed on its float64
    bits (exact for every float type), then limited to the format's range as the docstring says."""
    bits = np.abs(np.asarray(x, dtype=np.float64)).view(np.uint64)
    field = (bits >> np.uint64(52)).astype(np.int64)
    mantissa = bits & np.uint64((1 << 52) - 1)
    if round_mode == "up":
        up = mantissa != 0
    elif round_mode == "nearest":  # 1.m with m >= 0.5 is nearer 2**(k+1) (ties up)
        up = mantissa >= np.uint64(1 << 51)
    else:
        up = np.zeros(mantissa.shape, bool)
    biased = field - 1023 + up + 127  # (a float64 subnormal, field 0, lies far below 2**-127)
    out = np.clip(biased, 0, 0xFE)
    if not saturate:
        out = np.where((biased < 0) | (biased > 0xFE), 0xFF, out)
    special = field == 0x7FF  # inf and NaN
    out = np.where(special, np.where((mantissa == 0) & saturate, 0xFE, 0xFF), out)
    return out.astype(np.uint8).view(E8M0)


# --- Cast, CastLike, BitCast ---------------------------------------------------------------------


def _check_round_mode(ctx: InferCtx) -> None:
    if ctx.attrs["round_mode"] not in ROUND_MODES:
        raise InvalidModel(f"{ctx.op} node {ctx.node!r}: round_mode {ctx.attrs['round_mode']!r} is not one "
                           f"of {', '.join(ROUND_MODES)}")


def _cast_shape(ctx: InferCtx) -> TensorType:
    _check_round_mode(ctx)
    return TensorType(onnx_to_dtype(ctx.attrs["to"], ctx, "'to'"), ctx.shape(0))


def _cast_adapt(up: Upgrade) -> None:
    """Cast < 6 named the target type as a string ("FLOAT")."""
    to = up.attrs.get("to")
    if isinstance(to, str):
        try:
            up.attrs["to"] = code_named(to)
        except InvalidModel:
            raise InvalidModel(f"Cast node {up.node!r}: unknown type name {to!r}") from None


CAST_ATTRS = {"saturate": Attr("int", 1), "round_mode": Attr("string", "up")}


@op("Cast", "input", "output", shape=_cast_shape, attrs={"to": Attr("int"), **CAST_ATTRS},
    adapt=_cast_adapt)
def cast(attrs, x):
    """Convert each element to type ``to`` (float8 saturation and float8e8m0 rounding per attributes)."""
    return cast_array(x, dtype_of(attrs["to"]), bool(attrs["saturate"]), attrs["round_mode"])


def _cast_like_shape(ctx: InferCtx) -> TensorType:
    _check_round_mode(ctx)
    return TensorType(ctx.dtype(1), ctx.shape(0))


@op("CastLike", "input target_type", "output", shape=_cast_like_shape, attrs=CAST_ATTRS)
def cast_like(attrs, x, target):
    """Convert each element to the element type of ``target_type`` (as Cast)."""
    return cast_array(x, target.dtype, bool(attrs["saturate"]), attrs["round_mode"])


def _bitcast_shape(ctx: InferCtx) -> TensorType:
    src, dst = ctx.dtype(0), onnx_to_dtype(ctx.attrs["to"], ctx, "'to'")
    if STRING in (src, dst):
        ctx.fail("string tensors cannot be bit-cast")
    if bit_width(src) != bit_width(dst):
        ctx.fail(f"{src} ({bit_width(src)} bits) and {dst} ({bit_width(dst)} bits) differ in bit width")
    return TensorType(dst, ctx.shape(0))


@op("BitCast", "input", "output", shape=_bitcast_shape, attrs={"to": Attr("int")})
def bitcast(attrs, x):
    """Reinterpret each element's bits (little endian) as type ``to`` of the same bit width."""
    return x.view(dtype_of(attrs["to"]))


# --- linear quantization -------------------------------------------------------------------------


def _quant_axis(ctx: InferCtx, x_shape: tuple[int, ...], s_shape: tuple[int, ...], what: str) -> None:
    """Check the scale's shape names a per-tensor, per-axis or blocked quantization of ``x``."""
    if len(s_shape) == 0 or s_shape == (1,):
        return
    block = ctx.attrs["block_size"]
    if block < 0:
        ctx.fail(f"block_size {block} is negative")
    axis = ctx.axis(ctx.attrs["axis"], len(x_shape))
    if block == 0:
        if len(s_shape) != 1 or s_shape[0] != x_shape[axis]:
            ctx.fail(f"per-axis {what} must be 1-D of length {x_shape[axis]} (axis {axis} of "
                     f"{list(x_shape)}), got {list(s_shape)}; blocked quantization needs block_size")
        return
    want = tuple(math.ceil(d / block) if i == axis else d for i, d in enumerate(x_shape))
    if s_shape != want:
        ctx.fail(f"blocked {what} for input {list(x_shape)}, axis {axis}, block_size {block} must have "
                 f"shape {list(want)}, got {list(s_shape)}")


def _check_zero_point(ctx: InferCtx, x_dtype: np.dtype | None) -> None:
    if not ctx.has(2):
        return
    s_shape, z_shape = ctx.shape(1), ctx.shape(2)
    per_tensor = {(), (1,)}
    if z_shape != s_shape and not (z_shape in per_tensor and s_shape in per_tensor):
        ctx.fail(f"zero point shape {list(z_shape)} differs from scale shape {list(s_shape)}")
    if x_dtype is not None and ctx.dtype(2) != x_dtype:
        ctx.fail(f"zero point type {ctx.dtype(2)} differs from input type {x_dtype}")


def _expand(param: np.ndarray, shape: tuple[int, ...], axis: int, block: int) -> np.ndarray:
    """A scale or zero point laid out to broadcast against an input of ``shape``."""
    if param.ndim == 0 or param.shape == (1,):
        return param.reshape(())
    axis = axis % len(shape)
    if block == 0:
        return param.reshape([param.size if i == axis else 1 for i in range(len(shape))])
    return np.repeat(param, block, axis=axis).take(range(shape[axis]), axis=axis)


def _quantized_type(code: int, zero_point: np.dtype | None) -> np.dtype:
    """QuantizeLinear's output type: the zero point's, else ``output_dtype``'s, else uint8."""
    if zero_point is not None:
        return zero_point
    return dtype_of(code) if code else np.dtype(np.uint8)


def _quantize_dtype(ctx: InferCtx) -> np.dtype:
    code = ctx.attrs["output_dtype"]
    zero_point = ctx.dtype(2) if ctx.has(2) else None
    if code:
        wanted = onnx_to_dtype(code, ctx, "output_dtype")
        if zero_point is not None and wanted != zero_point:
            ctx.fail(f"output_dtype {wanted} differs from zero point type {zero_point}")
    dtype = _quantized_type(code, zero_point)
    if dtype not in QUANT_TYPES:
        ctx.fail(f"cannot quantize to {dtype}")
    return dtype


def division_dtype(precision: int, scale_dtype: np.dtype) -> np.dtype:
    """The type x / y_scale is computed in: ``precision`` if set, else the scale's (if a wide float)."""
    if precision:
        return dtype_of(precision)
    return scale_dtype if scale_dtype in HIGH_FLOATS | {np.dtype(np.float64)} else np.dtype(np.float32)


def _quantize_shape(ctx: InferCtx) -> TensorType:
    if ctx.dtype(0) not in HIGH_FLOATS | {np.dtype(np.int32)}:
        ctx.fail(f"cannot quantize {ctx.dtype(0)}")
    precision = ctx.attrs["precision"]
    if precision and onnx_to_dtype(precision, ctx, "precision") not in HIGH_FLOATS:
        ctx.fail(f"precision {precision} is not float, float16 or bfloat16")
    _quant_axis(ctx, ctx.shape(0), ctx.shape(1), "y_scale")
    _check_zero_point(ctx, None)
    return TensorType(_quantize_dtype(ctx), ctx.shape(0))


QUANT_ATTRS = {"axis": Attr("int", 1), "block_size": Attr("int", 0), "output_dtype": Attr("int", 0)}


@op("QuantizeLinear", "x y_scale y_zero_point?", "y", shape=_quantize_shape,
    attrs={**QUANT_ATTRS, "saturate": Attr("int", 1), "precision": Attr("int", 0)})
def quantize_linear(attrs, x, scale, zero_point=None):
    """y = saturate(round_half_even(x / y_scale) + y_zero_point), per tensor, per axis or per block."""
    axis, block = attrs["axis"], attrs["block_size"]
    dtype = _quantized_type(attrs["output_dtype"], None if zero_point is None else zero_point.dtype)
    scale = _expand(scale, x.shape, axis, block)
    div = division_dtype(attrs["precision"], scale.dtype)
    q = (x.astype(div) / scale.astype(div)).astype(np.float64)
    zp = 0.0 if zero_point is None else _expand(zero_point, x.shape, axis, block).astype(np.float64)
    if dtype in QUANT_INTS:
        info = ml_dtypes.iinfo(dtype)
        with np.errstate(invalid="ignore"):
            return np.clip(np.rint(q) + zp, info.min, info.max).astype(dtype)
    return cast_array(q + zp, dtype, bool(attrs["saturate"]))


def _dequantize_shape(ctx: InferCtx) -> TensorType:
    x_dtype, s_dtype = ctx.dtype(0), ctx.dtype(1)
    if x_dtype not in QUANT_TYPES | {np.dtype(np.int32)}:
        ctx.fail(f"cannot dequantize {x_dtype}")
    if s_dtype not in HIGH_FLOATS | {E8M0}:
        ctx.fail(f"x_scale must be float, float16, bfloat16 or float8e8m0, got {s_dtype}")
    code = ctx.attrs["output_dtype"]
    out = onnx_to_dtype(code, ctx, "output_dtype") if code else s_dtype
    if out not in HIGH_FLOATS:
        ctx.fail(f"output type {out} is not float, float16 or bfloat16 (set output_dtype)")
    _quant_axis(ctx, ctx.shape(0), ctx.shape(1), "x_scale")
    _check_zero_point(ctx, x_dtype)
    return TensorType(out, ctx.shape(0))


@op("DequantizeLinear", "x x_scale x_zero_point?", "y", shape=_dequantize_shape, attrs=QUANT_ATTRS,
    folds_at_import=False)
def dequantize_linear(attrs, x, scale, zero_point=None):
    """y = (x - x_zero_point) * x_scale, per tensor, per axis or per block; computed exactly, then rounded."""
    axis, block = attrs["axis"], attrs["block_size"]
    code = attrs["output_dtype"]
    out = dtype_of(code) if code else scale.dtype
    dx = x.astype(np.float64)
    if zero_point is not None:
        dx = dx - _expand(zero_point, x.shape, axis, block).astype(np.float64)
    with np.errstate(over="ignore"):  # beyond the output type's range: inf
        return (dx * _expand(scale, x.shape, axis, block).astype(np.float64)).astype(out)


def _dynamic_quantize_shape(ctx: InferCtx) -> list[TensorType]:
    if ctx.dtype(0) != np.float32:
        ctx.fail(f"x must be float, got {ctx.dtype(0)}")
    u8 = np.dtype(np.uint8)
    return [TensorType(u8, ctx.shape(0)), TensorType(np.dtype(np.float32), ()), TensorType(u8, ())]


@op("DynamicQuantizeLinear", "x", "y y_scale y_zero_point", shape=_dynamic_quantize_shape)
def dynamic_quantize_linear(attrs, x):
    """uint8 quantization of x over the range [min(x, 0), max(x, 0)]: returns y, its scale and zero point."""
    lo = np.minimum(np.float32(0), x.min(initial=np.float32(0)))
    hi = np.maximum(np.float32(0), x.max(initial=np.float32(0)))
    scale = (np.float32(1) if hi == lo else hi - lo) / np.float32(255)
    zero_point = np.rint(np.clip(-lo / scale, 0, 255))
    y = np.clip(np.rint(x / scale) + zero_point, 0, 255)
    return y.astype(np.uint8), np.asarray(scale, np.float32), np.asarray(zero_point).astype(np.uint8)
