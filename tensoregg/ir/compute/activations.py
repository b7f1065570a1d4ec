"""Compute definitions of the element-wise activations, as scalar functions (see
:mod:`tensoregg.ir.compute.elementwise`: fused epilogues reuse them).

Each follows its reference's arithmetic in the input's dtype (constants rounded to it), including
the numerically stable forms of sigmoid and softplus.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tensoregg.ir.compute.elementwise import c, scalar
from tensoregg.ir.compute.expr import ComputeCtx, Expr, call, cast, define, select

F64 = np.dtype(np.float64)


def _positive(x: Expr) -> Expr:
    return call("gt", x, c(x, 0))


# ---- rectifiers -------------------------------------------------------------------------------------

@scalar("Relu")
def relu(attrs: Mapping[str, Any], x: Expr) -> Expr:
    return call("max", x, c(x, 0))


@scalar("LeakyRelu")
def leaky_relu(attrs: Mapping[str, Any], x: Expr) -> Expr:
    return select(_positive(x), x, x * c(x, attrs["alpha"]))


@scalar("PRelu")
def prelu(attrs: Mapping[str, Any], x: Expr, slope: Expr) -> Expr:
    return select(_positive(x), x, x * slope)


@scalar("ThresholdedRelu")
def thresholded_relu(attrs: Mapping[str, Any], x: Expr) -> Expr:
    """x > alpha compared exactly (in float64, as the reference), not in x's dtype."""
    return select(call("gt", cast(x, F64), c(cast(x, F64), attrs["alpha"])), x, c(x, 0))


@define("Clip")
def _clip(ctx: ComputeCtx) -> Sequence[Expr]:
    x = ctx.broadcast(0)
    if ctx.has(1):
        x = call("max", x, ctx.broadcast(1))
    if ctx.has(2):
        x = call("min", x, ctx.broadcast(2))
    return [x]


@scalar("Shrink")
def shrink(attrs: Mapping[str, Any], x: Expr) -> Expr:
    """Compared with lambd in float64; integers shift by bias in float64 and truncate back."""
    wide = cast(x, F64)
    lambd = c(wide, attrs["lambd"])
    shifted = wide if x.dtype.kind != "f" else x
    low, high = shifted + c(shifted, attrs["bias"]), shifted - c(shifted, attrs["bias"])
    y = select(call("lt", wide, -lambd), low, select(call("gt", wide, lambd), high, c(shifted, 0)))
    return cast(y, x.dtype)


# ---- exponential units -------------------------------------------------------------------------------

@scalar("Elu")
def elu(attrs: Mapping[str, Any], x: Expr) -> Expr:
    return select(_positive(x), x, c(x, attrs["alpha"]) * call("expm1", x))


@scalar("Selu")
def selu(attrs: Mapping[str, Any], x: Expr) -> Expr:
    return elu(attrs, x) * c(x, attrs["gamma"])


@scalar("Celu")
def celu(attrs: Mapping[str, Any], x: Expr) -> Expr:
    alpha = c(x, attrs["alpha"])
    return call("max", c(x, 0), x) + call("min", c(x, 0), alpha * call("expm1", x / alpha))


# ---- sigmoids and smooth gates ------------------------------------------------------------------------

@scalar("Sigmoid")
def sigmoid(attrs: Mapping[str, Any], x: Expr) -> Expr:
    """1 / (1 + exp(-x)) as e / (1 + e) with e = exp(-|x|) for x <= 0: exp never overflows."""
    e = call("exp", -call("abs", x))
    return select(_positive(x), c(x, 1), e) / (c(x, 1) + e)


@scalar("HardSigmoid")
def hard_sigmoid(attrs: Mapping[str, Any], x: Expr) -> Expr:
    y = c(x, attrs["alpha"]) * x + c(x, attrs["beta"])
    return call("min", call("max", y, c(x, 0)), c(x, 1))


@scalar("HardSwish")
def hard_swish(attrs: Mapping[str, Any], x: Expr) -> Expr:
    return x * hard_sigmoid({"alpha": 1 / 6, "beta": 0.5}, x)


@scalar("Softplus")
def softplus(attrs: Mapping[str, Any], x: Expr) -> Expr:
    """log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)) (numpy's logaddexp(0, x))."""
    return call("max", x, c(x, 0)) + call("log1p", call("exp", -call("abs", x)))


@scalar("Softsign")
def softsign(attrs: Mapping[str, Any], x: Expr) -> Expr:
    return x / (c(x, 1) + call("abs", x))


@scalar("Mish")
def mish(attrs: Mapping[str, Any], x: Expr) -> Expr:
    return x * call("tanh", softplus(attrs, x))


@scalar("Gelu")
def gelu(attrs: Mapping[str, Any], x: Expr) -> Expr:
    if attrs["approximate"] == "tanh":
        gate = call("tanh", c(x, math.sqrt(2 / math.pi)) * (x + c(x, 0.044715) * x * x * x))
    else:
        gate = call("erf", x / c(x, math.sqrt(2)))
    return c(x, 0.5) * x * (c(x, 1) + gate)


@scalar("Swish")
def swish(attrs: Mapping[str, Any], x: Expr) -> Expr:
    return x * sigmoid(attrs, c(x, attrs["alpha"]) * x)


@scalar("SwiGLU")
def swiglu(attrs: Mapping[str, Any], a: Expr, b: Expr) -> Expr:
    return swish(attrs, a) * b
