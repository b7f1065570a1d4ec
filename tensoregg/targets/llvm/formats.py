"""The dtypes with no LLVM type of their own (ml_dtypes'): bfloat16, the float8/6/4 formats and
int4/uint4/int2/uint2, as code generation holds them.

Each has a storage type, its bits in memory (i16 for bfloat16, a byte for the others: the 6-, 4- and
2-bit types in the byte's low bits, as ml_dtypes keeps them), and a value type in registers: float32
for the float formats, which it holds exactly, and i8 for the small integers (sign- or zero-extended).
Loads widen exactly; stores and casts from float32 round as ml_dtypes does: to nearest even,
overflow to the format's infinity (its NaN where it has no infinity; its largest value for the MX
types, which have neither), NaN to the format's NaN, fnuz types without -0, float8_e8m0fnu (a bare
power of two, unsigned, no zero) NaN for zero and negatives. A value of such a dtype is always one
the dtype represents: code generation rounds (wraps, for integers) the result of every operation.

The conversions are small functions emitted once per module, inlined where used (``decode``,
``encode``), written after ml_dtypes' own conversion (float8.h, ``ConvertImpl``).
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir
import ml_dtypes
import numpy as np

from tensoregg.targets.llvm.irtypes import F32, I1, I8, I32, declare

F32_NAN, F32_INF = 0x7FC00000, 0x7F800000


@dataclass(frozen=True)
class SmallFloat:
    """A float format of ``bits`` bits: ``exponent`` and ``mantissa`` bits with ``bias`` (and a sign
    bit above them, except for ``e8m0``). ``max``, ``inf`` and ``nan`` are the magnitude bits of the
    largest finite value, of what infinity and overflow become and of the NaN conversions give.
    ``kind`` says how special values are encoded: ``ieee`` (exponent all ones: inf or NaN), ``fn``
    (magnitude all ones: NaN), ``fnuz`` (only NaN: the sign bit alone; no -0), ``mx`` (neither),
    ``e8m0`` (0xFF: NaN)."""

    bits: int
    exponent: int
    mantissa: int
    bias: int
    max: int
    inf: int
    nan: int
    kind: str = "ieee"

    @property
    def storage(self) -> ir.IntType:
        return ir.IntType(16 if self.bits > 8 else 8)

    @property
    def value(self) -> ir.Type:
        return F32


@dataclass(frozen=True)
class SmallInt:
    """An integer of ``bits`` bits, in the low bits of a byte (two's complement when ``signed``)."""

    bits: int
    signed: bool

    @property
    def storage(self) -> ir.IntType:
        return I8

    @property
    def value(self) -> ir.Type:
        return I8


Format = SmallFloat | SmallInt

_TABLE: list[tuple[type, Format]] = [
    (ml_dtypes.bfloat16, SmallFloat(16, 8, 7, 127, max=0x7F7F, inf=0x7F80, nan=0x7FC0)),
    (ml_dtypes.float8_e4m3fn, SmallFloat(8, 4, 3, 7, max=0x7E, inf=0x7F, nan=0x7F, kind="fn")),
    (ml_dtypes.float8_e4m3fnuz, SmallFloat(8, 4, 3, 8, max=0x7F, inf=0x80, nan=0x80, kind="fnuz")),
    (ml_dtypes.float8_e5m2, SmallFloat(8, 5, 2, 15, max=0x7B, inf=0x7C, nan=0x7E)),
    (ml_dtypes.float8_e5m2fnuz, SmallFloat(8, 5, 2, 16, max=0x7F, inf=0x80, nan=0x80, kind="fnuz")),
    (ml_dtypes.float8_e8m0fnu, SmallFloat(8, 8, 0, 127, max=0xFE, inf=0xFF, nan=0xFF, kind="e8m0")),
    (ml_dtypes.float6_e2m3fn, SmallFloat(6, 2, 3, 1, max=0x1F, inf=0x1F, nan=0x20, kind="mx")),
    (ml_dtypes.float6_e3m2fn, SmallFloat(6, 3, 2, 3, max=0x1F, inf=0x1F, nan=0x20, kind="mx")),
    (ml_dtypes.float4_e2m1fn, SmallFloat(4, 2, 1, 1, max=0x7, inf=0x7, nan=0x8, kind="mx")),
    (ml_dtypes.int4, SmallInt(4, True)),
    (ml_dtypes.uint4, SmallInt(4, False)),
    (ml_dtypes.int2, SmallInt(2, True)),
    (ml_dtypes.uint2, SmallInt(2, False)),
]
FORMATS: dict[np.dtype, Format] = {np.dtype(t): f for t, f in _TABLE}
"""Every dtype held through a format, by numpy dtype."""


def format_of(dtype: np.dtype) -> Format | None:
    return FORMATS.get(np.dtype(dtype))


def _const(value: int, ty: ir.IntType = I32) -> ir.Constant:
    return ir.Constant(ty, value)


def _function(module: ir.Module, name: str, ret: ir.Type,
              arg: ir.Type) -> tuple[ir.Function, ir.IRBuilder | None]:
    """``module``'s function ``name``, and a builder at its entry when it is new (to be defined)."""
    found = module.globals.get(name)
    if found is not None:
        return found, None
    fn = ir.Function(module, ir.FunctionType(ret, [arg]), name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


# ---- small integers (inline) ----------------------------------------------------------------------

def wrap(b: ir.IRBuilder, fmt: SmallInt, x: ir.Value) -> ir.Value:
    """The i8 ``x`` reduced to ``fmt``'s range as ml_dtypes wraps: its low bits, sign-extended if signed."""
    spare = _const(8 - fmt.bits, I8)
    return b.ashr(b.shl(x, spare), spare) if fmt.signed else b.and_(x, _const((1 << fmt.bits) - 1, I8))


# ---- floats ---------------------------------------------------------------------------------------

def round_to_odd_float(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """The double ``x`` rounded to a float by rounding to odd: truncated toward zero, the last bit set
    where that was inexact. A second rounding to nearest even, to a format of at most 22 significant
    bits (half, bfloat16, float8...), then gives ``x`` correctly rounded, which rounding to float
    first to nearest does not always (a tie made by the first rounding), and inline: LLVM lowers a
    double -> half ``fptrunc`` to a libcall on x86 without AVX512-FP16, which the JIT cannot resolve."""
    nearest = b.fptrunc(x, F32)
    back = b.fpext(nearest, x.type)
    bits = b.bitcast(nearest, I32)
    inexact = b.fcmp_ordered("!=", x, back)  # (NaN: not inexact)
    even = b.icmp_unsigned("==", b.and_(bits, _const(1)), _const(0))
    fabs = declare(b.module, "llvm.fabs.f64", x.type, [x.type])
    rounded_away = b.fcmp_ordered(">", b.call(fabs, [back]), b.call(fabs, [x]))
    odd = b.select(rounded_away, b.sub(bits, _const(1)), b.add(bits, _const(1)))  # the other neighbour
    return b.bitcast(b.select(b.and_(inexact, even), odd, bits), F32)


def decode(module: ir.Module, name: str, fmt: SmallFloat) -> ir.Function:
    """``float tensoregg.<name>.decode(iN bits)``: the value of ``bits`` (exact; NaN keeps its sign)."""
    fn, b = _function(module, f"tensoregg.{name}.decode", F32, fmt.storage)
    if b is None:
        return fn
    x = b.zext(fn.args[0], I32)
    if fmt.kind == "e8m0":  # 2 ** (x - 127); 0 is 2 ** -127, a float32 subnormal
        bits = b.select(b.icmp_unsigned("==", x, _const(0)), _const(1 << 22), b.shl(x, _const(23)))
        b.ret(b.bitcast(b.select(b.icmp_unsigned("==", x, _const(0xFF)), _const(F32_NAN), bits), F32))
        return fn
    top = fmt.bits - 1
    # a byte's bits above a 6- or 4-bit format's sign bit read as the sign, as in ml_dtypes
    sign = b.select(b.icmp_unsigned(">=", x, _const(1 << top)), _const(1 << 31), _const(0))
    mag = b.and_(x, _const((1 << top) - 1))
    m = fmt.mantissa
    if fmt.exponent == 8:  # bfloat16: float32's upper half
        bits = b.shl(mag, _const(16))
    else:
        normal = b.add(b.shl(mag, _const(23 - m)), _const((127 - fmt.bias) << 23))
        # exponent field 0: 0.fraction * 2**(1 - bias) = 1.fraction * 2**(1 - bias) - 2**(1 - bias), exact
        lifted = b.bitcast(b.add(normal, _const(1 << 23)), F32)
        tiny = b.bitcast(b.fsub(lifted, ir.Constant(F32, 2.0 ** (1 - fmt.bias))), I32)
        bits = b.select(b.icmp_unsigned("<", mag, _const(1 << m)), tiny, normal)
        if fmt.kind == "ieee":
            top_exp = ((1 << fmt.exponent) - 1) << m
            special = b.select(b.icmp_unsigned("==", mag, _const(top_exp)), _const(F32_INF), _const(F32_NAN))
            bits = b.select(b.icmp_unsigned(">=", mag, _const(top_exp)), special, bits)
        elif fmt.kind == "fn":
            bits = b.select(b.icmp_unsigned("==", mag, _const((1 << top) - 1)), _const(F32_NAN), bits)
        elif fmt.kind == "fnuz":
            bits = b.select(b.icmp_unsigned("==", x, _const(1 << top)), _const(F32_NAN), bits)
    b.ret(b.bitcast(b.or_(bits, sign), F32))
    return fn


def encode(module: ir.Module, name: str, fmt: SmallFloat) -> ir.Function:
    """``iN tensoregg.<name>.encode(float x)``: ``x`` rounded to the nearest value of the format (ties
    to even), its bits; out-of-range values and specials as ml_dtypes converts them without saturation."""
    fn, b = _function(module, f"tensoregg.{name}.encode", fmt.storage, F32)
    if b is None:
        return fn
    bits = b.bitcast(fn.args[0], I32)
    sign = b.lshr(bits, _const(31))
    negative = b.icmp_unsigned("!=", sign, _const(0))
    mag = b.and_(bits, _const(0x7FFFFFFF))
    is_nan = b.icmp_unsigned(">", mag, _const(F32_INF))
    is_inf = b.icmp_unsigned("==", mag, _const(F32_INF))
    is_zero = b.icmp_unsigned("==", mag, _const(0))
    # the significand with its leading one at bit 23, and its unbiased exponent (subnormals normalized)
    field, fraction = b.lshr(mag, _const(23)), b.and_(mag, _const(0x7FFFFF))
    subnormal = b.icmp_unsigned("==", field, _const(0))
    ctlz_fn = declare(module, "llvm.ctlz.i32", I32, [I32, I1])
    ctlz = b.call(ctlz_fn, [fraction, ir.Constant(I1, 0)])
    norm = b.sub(ctlz, _const(8))
    significand = b.select(subnormal, b.shl(fraction, norm), b.or_(fraction, _const(1 << 23)))
    exponent = b.select(subnormal, b.sub(_const(-126), norm), b.sub(field, _const(127)))
    # the target's biased exponent less one: below 0, the value is subnormal there
    base = b.add(exponent, _const(fmt.bias - 1))
    below = b.sub(_const(0), base)
    below = b.select(b.icmp_signed(">", below, _const(0)), below, _const(0))
    shift = b.add(below, _const(23 - fmt.mantissa))
    shift = b.select(b.icmp_signed("<", shift, _const(25)), shift, _const(25))
    odd = b.and_(b.lshr(significand, shift), _const(1))
    half = b.sub(b.shl(_const(1), b.sub(shift, _const(1))), _const(1))
    rounded = b.lshr(b.add(significand, b.add(odd, half)), shift)
    biased = b.select(b.icmp_signed(">", base, _const(0)), base, _const(0))
    packed = b.add(rounded, b.shl(biased, _const(fmt.mantissa)))  # a carry of the rounding moves up
    out = b.select(b.icmp_unsigned(">", packed, _const(fmt.max)), _const(fmt.inf), packed)
    if fmt.kind == "e8m0":  # unsigned, no zero: negatives, zeros, inf and NaN are NaN
        # below 2**-126 the nearest of 2**-127 (0) and 2**-126 (1), ties up; not the subnormal path
        # above: the format has none, its exponent field 0 is 2**-127
        upper = b.icmp_unsigned(">=", fraction, _const(0x600000))
        out = b.select(subnormal, b.zext(upper, I32), out)
        bad = b.or_(b.or_(negative, is_zero), b.or_(is_nan, is_inf))
        out = b.select(bad, _const(fmt.nan), out)
    else:
        out = b.select(is_zero, _const(0), out)
        out = b.select(is_inf, _const(fmt.inf), out)
        out = b.select(is_nan, _const(fmt.nan), out)
        out = _negate_if(b, fmt, sign, out)
    b.ret(b.trunc(out, fmt.storage))
    return fn


def _negate_if(b: ir.IRBuilder, fmt: SmallFloat, sign: ir.Value, out: ir.Value) -> ir.Value:
    """``out`` (bits) negated where ``sign`` (0 or 1) is 1, as the format negates: the sign bit flips,
    except that fnuz zero and NaN (0 and the sign bit alone) stay as they are. (Arithmetic rather
    than a select on the sign: LLVM 22's AVX-512 code generation miscompiled that form.)"""
    flip = b.shl(sign, _const(fmt.bits - 1))
    if fmt.kind == "fnuz":  # flip only if some magnitude bit is set
        low = _const((1 << (fmt.bits - 1)) - 1)
        flip = b.mul(flip, b.lshr(b.add(b.and_(out, low), low), _const(fmt.bits - 1)))
    return b.xor(out, flip)
