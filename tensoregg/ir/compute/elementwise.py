"""Compute definitions of element-wise ops: each is a scalar function of its (broadcast) inputs.

``SCALAR[op](attrs, *values)`` gives the op's value from its operands' values; the op's compute
definition reads each input at the output index under broadcasting and applies it. Fused kernels
reuse the same scalar functions for their epilogues, so an activation is defined once (activations
register theirs in :mod:`tensoregg.ir.compute.activations`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import reduce as fold
from typing import Any

import numpy as np

from tensoregg.ir.compute.expr import (
    BOOL,
    Buffer,
    ComputeCtx,
    Expr,
    broadcast_load,
    call,
    cast,
    const,
    define,
    select,
)

Scalar = Callable[..., Expr]
SCALAR: dict[str, Scalar] = {}
"""Per op: ``fn(attrs, *operand values) -> value``."""


def scalar(*ops: str) -> Callable[[Scalar], Scalar]:
    """Register the decorated scalar function for ``ops`` and define their element-wise computes."""
    def attach(fn: Scalar) -> Scalar:
        for name in ops:
            SCALAR[name] = fn
            define(name)(_elementwise(name))
        return fn
    return attach


def _elementwise(name: str) -> Callable[[ComputeCtx], Sequence[Expr]]:
    def compute(ctx: ComputeCtx) -> Sequence[Expr]:
        operands = [ctx.broadcast(i) for i in range(len(ctx.inputs)) if ctx.has(i)]
        return [SCALAR[name](ctx.attrs, *operands)]
    return compute


def apply(op: str, attrs: Mapping[str, Any], *values: Expr) -> Expr:
    """The scalar function of ``op`` on ``values``."""
    return SCALAR[op](attrs, *values)


def c(x: Expr, value: Any) -> Expr:
    """``value`` as a constant of ``x``'s dtype."""
    return const(value, x.dtype)


def _unary(fn: str) -> Scalar:
    return lambda attrs, x: call(fn, x)


def _binary(fn: str) -> Scalar:
    return lambda attrs, a, b: call(fn, a, b)


for _op, _fn in {"Abs": "abs", "Neg": "neg", "Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Floor": "floor",
                 "Ceil": "ceil", "Round": "round", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin",
                 "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh",
                 "Acosh": "acosh", "Atanh": "atanh", "Not": "not", "BitwiseNot": "not", "IsNaN": "isnan",
                 "Erf": "erf", "Tanh": "tanh"}.items():
    scalar(_op)(_unary(_fn))

for _op, _fn in {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "BitwiseAnd": "and",
                 "BitwiseOr": "or", "BitwiseXor": "xor", "And": "and", "Or": "or", "Xor": "xor",
                 "Equal": "eq", "Less": "lt", "Greater": "gt", "LessOrEqual": "le",
                 "GreaterOrEqual": "ge"}.items():
    scalar(_op)(_binary(_fn))

for _op, _fn in {"Sum": "add", "Max": "max", "Min": "min"}.items():
    scalar(_op)(lambda attrs, *xs, fn=_fn: fold(lambda a, b: call(fn, a, b), xs))


@scalar("Mean")
def _mean(attrs: Mapping[str, Any], *xs: Expr) -> Expr:
    return fold(lambda a, b: a + b, xs) / c(xs[0], len(xs))


@scalar("Reciprocal")
def _reciprocal(attrs: Mapping[str, Any], x: Expr) -> Expr:
    return c(x, 1) / x


@scalar("Identity")
def _identity(attrs: Mapping[str, Any], x: Expr) -> Expr:
    return x


@define("Dropout")
def _dropout(ctx: ComputeCtx) -> Sequence[Expr]:
    """The identity (training mode is only accepted with ratio 0); the mask, if asked for, is all True."""
    return [ctx.broadcast(0), const(True, BOOL)][:len(ctx.outputs)]


@scalar("Where")
def _where(attrs: Mapping[str, Any], cond: Expr, a: Expr, b: Expr) -> Expr:
    return select(cond, a, b)


@scalar("Sign")
def _sign(attrs: Mapping[str, Any], x: Expr) -> Expr:
    zero = x - x  # 0, or NaN for NaN (x - x is +0 for either zero)
    below = zero if x.dtype.kind == "u" else select(call("lt", x, c(x, 0)), c(x, -1), zero)
    return select(call("gt", x, c(x, 0)), c(x, 1), below)


@scalar("IsInf")
def _isinf(attrs: Mapping[str, Any], x: Expr) -> Expr:
    tests = [call("eq", x, c(x, sign * math.inf))
             for sign, key in ((1, "detect_positive"), (-1, "detect_negative")) if attrs[key]]
    return fold(lambda a, b: call("or", a, b), tests) if tests else const(False, BOOL)


@scalar("Mod")
def _mod(attrs: Mapping[str, Any], a: Expr, b: Expr) -> Expr:
    """fmod=1: C's remainder (the dividend's sign); fmod=0: the divisor's sign (numpy's mod)."""
    r = call("rem", a, b)
    if attrs["fmod"] or a.dtype.kind == "u":
        return r
    differ = call("ne", call("lt", r, c(r, 0)), call("lt", b, c(b, 0)))
    floored = select(differ, r + b, r)
    # a zero r stays 0 for integers (x % 0 = 0 already); for floats it takes b's sign (NaN stays NaN)
    zero = r if a.dtype.kind == "i" else select(call("signbit", b), c(b, -0.0), c(b, 0.0))
    return select(call("ne", r, c(r, 0)), floored, zero)


@scalar("BitShift")
def _bitshift(attrs: Mapping[str, Any], x: Expr, y: Expr) -> Expr:
    """A shift by a count outside [0, bits) gives 0 (the sign fill for a right shift of a negative x)."""
    if attrs["direction"] == "LEFT":
        return call("shl", x, y)
    if x.dtype.kind == "u":
        return call("shr", x, y)
    # arithmetic right shift from the logical one: ~(~x >> y) for negative x
    return select(call("lt", x, c(x, 0)), call("not", call("shr", call("not", x), y)), call("shr", x, y))


# ---- Pow --------------------------------------------------------------------------------------------

SQUARINGS = 6
"""Squarings per step of the integer power: the square chain x ** 2 ** SQUARINGS is staged, as code
generation expands an expression's shared sub-expressions (2 ** SQUARINGS loads per step)."""


@define("Pow")
def _pow(ctx: ComputeCtx) -> Sequence[Expr]:
    """X ** Y in X's dtype, computed in numpy's promoted dtype of X and Y as the reference does."""
    x, y = ctx.broadcast(0), ctx.broadcast(1)
    wide = np.result_type(x.dtype, y.dtype)
    if x.dtype.kind == "f" or y.dtype.kind == "f":
        return [cast(call("pow", cast(x, wide), cast(y, wide)), x.dtype)]
    # integers: X ** |Y|, but 0 where Y < 0 and |X| != 1
    signed = y.dtype.kind == "i"
    magnitude = select(call("lt", y, c(y, 0)), -y, y) if signed else y
    if wide.kind == "f":  # uint64 with a signed exponent: numpy promotes to float64
        power = cast(call("pow", cast(x, wide), cast(magnitude, wide)), x.dtype)
    else:
        power = _wrapping_power(ctx, cast(magnitude, np.dtype(f"u{y.dtype.itemsize}")), _exponent_bits(ctx))
    if not signed:
        return [power]
    fraction = call("and", call("lt", y, c(y, 0)), call("ne", call("abs", x), c(x, 1)))
    return [select(fraction, c(x, 0), power)]


def _exponent_bits(ctx: ComputeCtx) -> int:
    """Bits of |Y| (below 2 ** bits): from Y's constant value, else from its dtype (|MIN| aside,
    for which the reference raises)."""
    y = ctx.value(1)
    if y is not None:
        return int(max((abs(int(v)) for v in np.asarray(y).reshape(-1)), default=0)).bit_length()
    dtype = ctx.input(1).dtype
    return dtype.itemsize * 8 - (dtype.kind == "i")


def _wrapping_power(ctx: ComputeCtx, e: Expr, bits: int) -> Expr:
    """X ** e, wrapping in X's dtype, for an unsigned ``e`` below ``2 ** bits``: square and multiply."""
    base = ctx.input(0)
    n = base.dtype.itemsize * 8
    zero_power = None
    if bits > n - 2:
        # modulo 2 ** n, an odd x has x ** 2 ** (n - 2) = 1 and an even x has x ** e = 0 for e >= n
        x = ctx.broadcast(0)
        zero_power = call("and", call("ge", e, c(e, n)), call("eq", call("and", x, c(x, 1)), c(x, 0)))
        e, bits = call("and", e, c(e, 2 ** (n - 2) - 1)), n - 2
    power = c(ctx.broadcast(0), 1)
    level: Buffer = base
    for step in range(-(-bits // SQUARINGS)):
        if step:
            level = ctx.stage(f"square{step}", base.shape, lambda *i, prev=level: _square(prev[i], SQUARINGS))
        p: Expr = broadcast_load(level, ctx.index())
        for k in range(step * SQUARINGS, min(bits, (step + 1) * SQUARINGS)):
            bit = call("ne", call("and", call("shr", e, k), c(e, 1)), c(e, 0))
            power = power * select(bit, p, c(p, 1))
            p = p * p
    return power if zero_power is None else select(zero_power, c(power, 0), power)


def _square(x: Expr, times: int) -> Expr:
    for _ in range(times):
        x = x * x
    return x


# ---- helpers for others ------------------------------------------------------------------------------

def clip(x: Expr, low: float | None, high: float | None) -> Expr:
    """Clip with constant bounds (fused epilogues hold them as ``activation_params``)."""
    if low is not None:
        x = call("max", x, c(x, low))
    if high is not None:
        x = call("min", x, c(x, high))
    return x

