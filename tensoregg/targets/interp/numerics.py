"""What each :class:`~tensoregg.ir.compute.Call` computes, on numpy values (scalars or arrays).

The meaning is the native code's (``targets/llvm/codegen``): integers wrap; ``div`` truncates toward
zero and ``rem`` takes the dividend's sign, with x / 0 = 0, x % 0 = 0 and MIN / -1 = MIN; shifts are
logical and give 0 for amounts of the width or more (negative amounts included); float comparisons
are ordered except ``ne``; ``max``/``min`` of floats are NaN if either operand is. Bool arithmetic
is that of a 1-bit integer. ml_dtypes' types compute as the native code holds them: the float
formats in float32, rounded back to the format after every operation (except those whose result is
exact), the small integers in a byte, wrapped to their width after every operation. ``cast`` is
``cast_array`` (``tensoregg.ir.ops.casts``, its saturation left to the compute definitions), except
to float8e8m0, which rounds as ml_dtypes does. ``bound`` raises ``IndexOutOfRange`` where the native
code records its fault.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

from tensoregg.errors import IndexOutOfRange, UnsupportedOperator
from tensoregg.ir.compute import BOOL, Call
from tensoregg.ir.compute.expr import BOUND, is_float
from tensoregg.ir.ops.casts import E8M0, SMALL_INTS, cast_array

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)

FLOAT_BINARY: dict[str, Callable[..., Any]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide, "rem": np.fmod,
    "max": np.maximum, "min": np.minimum, "pow": np.power}
COMPARE: dict[str, Callable[..., Any]] = {
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal,
    "ne": np.not_equal}
_erf64 = np.vectorize(math.erf, otypes=[np.float64])
FLOAT_UNARY: dict[str, Callable[..., Any]] = {
    "neg": np.negative, "abs": np.abs, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "tanh": np.tanh, "floor": np.floor, "ceil": np.ceil, "round": np.rint,
    "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "expm1": np.expm1, "log1p": np.log1p,
    "erf": lambda x: _erf64(np.asarray(x, F64)).astype(np.asarray(x).dtype),
    "isnan": np.isnan, "isinf": np.isinf, "signbit": np.signbit}
EXACT = {"max", "min", "abs", "floor", "ceil", "round"}
"""Float calls whose result is a value of the operands' format (not rounded back)."""
INT_BINARY: dict[str, Callable[..., Any]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "and": np.bitwise_and, "or": np.bitwise_or,
    "xor": np.bitwise_xor, "max": np.maximum, "min": np.minimum}


def c_div(a: Any, d: Any) -> Any:
    """Integer ``a / d`` truncated toward zero, 0 where ``d`` is 0, ``-a`` (wrapped) where it is -1."""
    a, d = np.asarray(a), np.asarray(d)
    zero = d == 0
    if d.dtype.kind == "u":
        return np.where(zero, 0, a // np.where(zero, 1, d))
    minus = d == -1
    safe = np.where(zero | minus, 1, d)
    q = (a - np.fmod(a, safe)) // safe
    return np.where(zero, 0, np.where(minus, np.negative(a), q))


def c_rem(a: Any, d: Any) -> Any:
    """Integer ``a % d`` with the dividend's sign, 0 where ``d`` is 0 or -1."""
    a, d = np.asarray(a), np.asarray(d)
    unsafe = (d == 0) | (d == -1) if d.dtype.kind == "i" else d == 0
    return np.where(unsafe, 0, np.fmod(a, np.where(unsafe, 1, d)))


def _shift(left: bool) -> Callable[[Any, Any], Any]:
    def shift(a: Any, s: Any) -> Any:
        a, s = np.asarray(a), np.asarray(s)
        unsigned = np.dtype(f"u{a.dtype.itemsize}")
        bits = np.asarray(a.dtype.itemsize * 8, unsigned)
        au, su = a.view(unsigned), s.view(unsigned)
        far = su >= bits
        amount = np.where(far, 0, su).astype(unsigned)
        out = np.left_shift(au, amount) if left else np.right_shift(au, amount)
        return np.where(far, 0, out).astype(unsigned).view(a.dtype)
    return shift


def _int_table(fn: str) -> Callable[..., Any] | None:
    if fn in INT_BINARY:
        return INT_BINARY[fn]
    if fn in COMPARE:
        return COMPARE[fn]
    other: dict[str, Callable[..., Any]] = {"div": c_div, "rem": c_rem, "shl": _shift(True),
                                            "shr": _shift(False), "neg": np.negative, "not": np.invert}
    return other.get(fn)


def _int_abs(signed: bool) -> Callable[[Any], Any]:
    return np.abs if signed else (lambda x: x)


def call_function(c: Call, where: str) -> Callable[..., Any]:
    """The numpy function computing ``c`` from its evaluated arguments; UnsupportedOperator naming
    ``where`` (the kernel) for a call the native code does not define either."""
    fn = c.fn
    if fn == "select":
        return np.where
    if fn == "cast":
        dst = c.dtype
        return lambda x: convert(x, dst)
    if fn == "bitcast":
        dst = c.dtype
        return lambda x: reinterpret(x, dst)
    if fn == BOUND:
        return lambda i, n: bound(i, n, where)
    dtype = c.args[0].dtype
    picked = _float_call(fn, dtype) if is_float(dtype) else _int_call(fn, dtype)
    if picked is None:
        raise UnsupportedOperator(f"call {fn}", target="interp", detail=f"not defined on {dtype} ({where})")
    return picked


def _float_call(fn: str, dtype: np.dtype) -> Callable[..., Any] | None:
    op = FLOAT_BINARY.get(fn) or COMPARE.get(fn) or FLOAT_UNARY.get(fn)
    if op is None or dtype.kind == "f":
        return op
    rounds = fn not in EXACT and fn not in COMPARE and fn not in ("isnan", "isinf", "signbit")

    def held(*args: Any) -> Any:  # an ml_dtypes float: computed in float32, rounded back
        out = op(*(np.asarray(a).astype(F32) for a in args))
        return np.asarray(out).astype(dtype) if rounds else out
    return held


def _int_call(fn: str, dtype: np.dtype) -> Callable[..., Any] | None:
    if dtype == BOOL:
        if fn in ("and", "or", "xor", "not") or fn in COMPARE:
            return _int_table(fn)
        op = _int_table(fn) if fn != "abs" else _int_abs(False)
        return None if op is None else _one_bit(op)
    if dtype in SMALL_INTS:
        signed = ml_dtypes.iinfo(dtype).min < 0
        op = _int_abs(signed) if fn == "abs" else _int_table(fn)
        wraps = fn not in COMPARE and fn not in ("max", "min")
        return None if op is None else _in_a_byte(op, dtype, signed, wraps)
    if dtype.kind not in "iu":
        return None
    return _int_abs(dtype.kind == "i") if fn == "abs" else _int_table(fn)


def _one_bit(op: Callable[..., Any]) -> Callable[..., Any]:
    """``op`` on bools as on 1-bit integers: computed in a byte, its low bit kept."""
    def bit(*args: Any) -> Any:
        return (np.asarray(op(*(np.asarray(a).astype(np.uint8) for a in args))) & 1).astype(BOOL)
    return bit


def _in_a_byte(op: Callable[..., Any], dtype: np.dtype, signed: bool, wraps: bool) -> Callable[..., Any]:
    """``op`` on a small integer type: computed in a byte, wrapped to its width (where ``wraps``)."""
    holder = np.dtype(np.int8 if signed else np.uint8)

    def held(*args: Any) -> Any:
        out = np.asarray(op(*(np.asarray(a).astype(holder) for a in args)))
        return cast_array(out, dtype) if wraps else out
    return held


def bound(i: Any, n: Any, where: str) -> Any:
    """Index ``i`` where all of it is in [0, n); IndexOutOfRange naming ``where`` otherwise."""
    i = np.asarray(i)
    outside = (i < 0) | (i >= n)
    if outside.any():
        raise IndexOutOfRange(f"{where}: index {int(i[outside].flat[0])} is out of range for an axis "
                              f"of {int(n)} (after counting negatives from the end)")
    return i


def convert(x: Any, dst: np.dtype) -> Any:
    """``x`` cast to ``dst`` as the ``cast`` call does (see the module docstring)."""
    x = np.asarray(x)
    if dst == E8M0:
        wide = F64 if x.dtype.itemsize == 8 else F32
        return x.astype(wide).astype(dst)
    return cast_array(x, dst, saturate=False)


def reinterpret(x: Any, dst: np.dtype) -> Any:
    """``x``'s stored bits read as ``dst`` (bool: any nonzero byte is true)."""
    x = np.asarray(x)
    if dst == BOOL:
        return x.view(np.uint8) != 0
    return x.view(dst)
