"""Activation functions and the softmax family.

Everything is computed in the input's dtype, as ONNX's reference does (float16 stays float16).

Older forms whose meaning differs are rewritten at import into current ops: Softmax, LogSoftmax
and Hardmax before opset 13 (input coerced to 2-D at ``axis``, default 1) become
Flatten -> op -> Reshape; PRelu before opset 7 with a per-channel 1-D slope gets the slope
unsqueezed to broadcast along axis 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.ir.ops.elementwise import erf
from tensoregg.ir.registry import Attr, InferCtx, ShapeRule, Upgrade, op
from tensoregg.ir.shapes import broadcast_shapes
from tensoregg.ir.types import TensorType, dtype_name

_KINDS = {"float": "f", "num": "fiu", "signed": "fi"}
"""Dtype groups -> numpy kinds; ml_dtypes floats (bfloat16) count as ``f``."""


def _kind(dtype: np.dtype) -> str:
    return "f" if dtype.name.startswith(("float", "bfloat")) else dtype.kind


def _check_dtype(ctx: InferCtx, i: int, allowed: str) -> TensorType:
    t = ctx.type(i)
    if _kind(t.dtype) not in _KINDS[allowed] or t.dtype == np.bool_:
        ctx.fail(f"input {i} is {dtype_name(t.dtype)}, expected a {allowed} tensor")
    return t


def _same(allowed: str = "float") -> ShapeRule:
    """The output has the type of input 0, whose dtype must be in group ``allowed``."""

    def rule(ctx: InferCtx) -> TensorType:
        return _check_dtype(ctx, 0, allowed)

    return rule


def _const(x: np.ndarray, value: float) -> np.ndarray:
    """``value`` as a 0-d array of x's dtype (keeps float16 arithmetic in float16)."""
    return np.asarray(value, dtype=x.dtype)


def _drop_consumed(up: Upgrade) -> None:
    """Opset 1 forms carried ``consumed_inputs`` (a memory hint): drop it."""
    up.attrs.pop("consumed_inputs", None)


def _quiet(fn: Callable) -> Callable:
    """Run a reference with numpy's floating-point warnings off (overflow in exp is expected)."""

    def wrapped(*args):
        with np.errstate(all="ignore"):
            return fn(*args)

    wrapped.__doc__ = fn.__doc__
    return wrapped


# ---- rectifiers -----------------------------------------------------------------------------------

@op("Relu", "X", "Y", shape=_same("signed"), adapt=_drop_consumed)
def relu(attrs, x):
    """max(x, 0)."""
    return np.maximum(x, np.zeros((), x.dtype))


@op("LeakyRelu", "X", "Y", shape=_same(), attrs={"alpha": Attr("float", 0.01)}, adapt=_drop_consumed)
def leaky_relu(attrs, x):
    """x if x > 0, else alpha * x."""
    return np.where(x > 0, x, x * _const(x, attrs["alpha"]))


def _prelu_shape(ctx: InferCtx) -> TensorType:
    x = _check_dtype(ctx, 0, "num")
    slope = ctx.type(1)
    if slope.dtype != x.dtype:
        ctx.fail(f"slope is {dtype_name(slope.dtype)}, X is {dtype_name(x.dtype)}")
    if broadcast_shapes(ctx, [x.shape, slope.shape]) != x.shape:
        ctx.fail(f"slope {list(slope.shape)} does not broadcast to X {list(x.shape)}")
    return x


def _prelu_adapt(up: Upgrade) -> None:
    """Opset < 7: a 1-D slope of X's channel count is per channel (axis 1), not trailing-aligned."""
    _drop_consumed(up)
    x, slope = [*up.types, None, None][:2]
    if up.opset >= 7 or x is None or slope is None:
        return
    channels = x.shape[1] if x.rank > 2 else 1
    if channels > 1 and slope.shape == (channels,):  # Caffe2's per-channel slope: along axis 1
        axes = up.const(np.arange(1, x.rank - 1, dtype=np.int64))
        up.inputs[1] = up.add("Unsqueeze", [up.inputs[1], axes])


@op("PRelu", "X slope", "Y", shape=_prelu_shape, adapt=_prelu_adapt)
def prelu(attrs, x, slope):
    """x if x > 0, else slope * x; slope broadcasts unidirectionally to X."""
    return np.where(x > 0, x, x * slope).astype(x.dtype, copy=False)


@op("ThresholdedRelu", "X", "Y", shape=_same(), attrs={"alpha": Attr("float", 1.0)})
def thresholded_relu(attrs, x):
    """x if x > alpha, else 0 (compared exactly, not in x's dtype)."""
    return np.where(x > np.float64(attrs["alpha"]), x, np.zeros((), x.dtype))


def _clip_shape(ctx: InferCtx) -> TensorType:
    x = _check_dtype(ctx, 0, "num")
    for i, name in ((1, "min"), (2, "max")):
        if ctx.has(i):
            bound = ctx.type(i)
            if bound.dtype != x.dtype or bound.size != 1 or bound.rank > 1:
                ctx.fail(f"{name} must be a scalar of X's dtype {dtype_name(x.dtype)}, got {bound}")
    return x


def _clip_adapt(up: Upgrade) -> None:
    """Opset < 11 held min and max as attributes: they become inputs of X's dtype."""
    _drop_consumed(up)
    if up.opset < 11:
        x = up.types[0] if up.types else None
        dtype = np.float32 if x is None else x.dtype
        up.move_attr_to_input("min", 1, dtype)
        up.move_attr_to_input("max", 2, dtype)


@op("Clip", "input min? max?", "output", shape=_clip_shape, adapt=_clip_adapt)
def clip(attrs, x, low, high):
    """min(max, max(x, min)); an omitted bound does not clip, and min > max gives max everywhere."""
    if low is not None:
        x = np.maximum(x, low.reshape(()))
    if high is not None:
        x = np.minimum(x, high.reshape(()))
    return x


@op("Shrink", "input", "output", shape=_same("num"),
    attrs={"bias": Attr("float", 0.0), "lambd": Attr("float", 0.5)})
@_quiet
def shrink(attrs, x):
    """x + bias if x < -lambd, x - bias if x > lambd, else 0."""
    lambd, bias = np.float64(attrs["lambd"]), attrs["bias"]
    y = np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0))
    return y.astype(x.dtype)


# ---- exponential units ----------------------------------------------------------------------------

def _elu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, _const(x, alpha) * np.expm1(x))


@op("Elu", "X", "Y", shape=_same(), attrs={"alpha": Attr("float", 1.0)}, adapt=_drop_consumed)
@_quiet
def elu(attrs, x):
    """x if x > 0, else alpha * (exp(x) - 1)."""
    return _elu(x, attrs["alpha"])


@op("Selu", "X", "Y", shape=_same(), adapt=_drop_consumed,
    attrs={"alpha": Attr("float", 1.6732631921768188), "gamma": Attr("float", 1.0507010221481323)})
@_quiet
def selu(attrs, x):
    """gamma * (x if x > 0, else alpha * (exp(x) - 1))."""
    return _elu(x, attrs["alpha"]) * _const(x, attrs["gamma"])


@op("Celu", "X", "Y", shape=_same(), attrs={"alpha": Attr("float", 1.0)})
@_quiet
def celu(attrs, x):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    alpha = _const(x, attrs["alpha"])
    zero = np.zeros((), x.dtype)
    return np.maximum(zero, x) + np.minimum(zero, alpha * np.expm1(x / alpha))


# ---- sigmoids and smooth gates --------------------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp is only taken of -|x|."""
    e = np.exp(-np.abs(x))
    one = np.ones((), x.dtype)
    return np.where(x > 0, one / (one + e), e / (one + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(np.zeros((), x.dtype), x)


@op("Sigmoid", "X", "Y", shape=_same(), adapt=_drop_consumed)
@_quiet
def sigmoid(attrs, x):
    """1 / (1 + exp(-x))."""
    return _sigmoid(x)


@op("HardSigmoid", "X", "Y", shape=_same(), adapt=_drop_consumed,
    attrs={"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)})
def hard_sigmoid(attrs, x):
    """max(0, min(1, alpha * x + beta))."""
    y = _const(x, attrs["alpha"]) * x + _const(x, attrs["beta"])
    return np.clip(y, np.zeros((), x.dtype), np.ones((), x.dtype))


@op("HardSwish", "X", "Y", shape=_same())
def hard_swish(attrs, x):
    """x * max(0, min(1, x / 6 + 1/2))."""
    return x * hard_sigmoid({"alpha": 1 / 6, "beta": 0.5}, x)


@op("Tanh", "input", "output", shape=_same(), adapt=_drop_consumed)
def tanh(attrs, x):
    """Hyperbolic tangent."""
    return np.tanh(x)


@op("Softplus", "X", "Y", shape=_same())
@_quiet
def softplus(attrs, x):
    """log(1 + exp(x))."""
    return _softplus(x)


@op("Softsign", "input", "output", shape=_same())
def softsign(attrs, x):
    """x / (1 + |x|)."""
    return x / (np.ones((), x.dtype) + np.abs(x))


@op("Mish", "X", "Y", shape=_same())
@_quiet
def mish(attrs, x):
    """x * tanh(softplus(x))."""
    return x * np.tanh(_softplus(x))


def _gelu_shape(ctx: InferCtx) -> TensorType:
    if ctx.attrs["approximate"] not in ("none", "tanh"):
        raise InvalidModel(f"Gelu node {ctx.node!r}: approximate must be 'none' or 'tanh', "
                           f"got {ctx.attrs['approximate']!r}")
    return _check_dtype(ctx, 0, "float")


@op("Gelu", "X", "Y", shape=_gelu_shape, attrs={"approximate": Attr("string", "none")})
@_quiet
def gelu(attrs, x):
    """0.5 * x * (1 + erf(x / sqrt(2))), or with approximate='tanh'
    0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))."""
    if attrs["approximate"] == "tanh":
        inner = _const(x, math.sqrt(2 / math.pi)) * (x + _const(x, 0.044715) * x * x * x)
        gate = np.tanh(inner)
    else:
        gate = erf({}, x / _const(x, math.sqrt(2)))
    return _const(x, 0.5) * x * (np.ones((), x.dtype) + gate)


@op("Swish", "X", "Y", shape=_same(), attrs={"alpha": Attr("float", 1.0)})
@_quiet
def swish(attrs, x):
    """x * sigmoid(alpha * x)."""
    return x * _sigmoid(_const(x, attrs["alpha"]) * x)


def _swiglu_shape(ctx: InferCtx) -> TensorType:
    a, b = _check_dtype(ctx, 0, "float"), ctx.type(1)
    if a != b:
        ctx.fail(f"A {a} and B {b} must have one dtype and shape (SwiGLU does not broadcast)")
    return a


@op("SwiGLU", "A B", "Y", shape=_swiglu_shape, attrs={"alpha": Attr("float", 1.0)})
@_quiet
def swiglu(attrs, a, b):
    """Swish_alpha(A) * B = A * sigmoid(alpha * A) * B."""
    return swish(attrs, a) * b


# ---- the softmax family ---------------------------------------------------------------------------

def _softmax_shape(ctx: InferCtx) -> TensorType:
    x = _check_dtype(ctx, 0, "float")
    ctx.axis(ctx.attrs["axis"], x.rank)
    return x


def _softmax_adapt(up: Upgrade) -> None:
    """Opset < 13 coerced the input to 2-D at ``axis`` (default 1) and normalized over the second
    dimension: Flatten -> op over axis 1 -> Reshape back, unless ``axis`` is already the last."""
    if up.opset >= 13:
        return
    axis = up.attrs.setdefault("axis", 1)
    x = up.types[0]
    if x is None or x.rank == 0 or axis % x.rank == x.rank - 1:
        return
    flat = up.add("Flatten", [up.inputs[0]], axis=axis)
    normalized = up.add(up.op, [flat], axis=1)  # 2-D with axis 1 last: the current form
    up.op, up.attrs = "Reshape", {"allowzero": 1}
    up.inputs = [normalized, up.const(np.array(x.shape, dtype=np.int64))]


def _shifted(x: np.ndarray, axis: int) -> np.ndarray:
    """x minus its max along ``axis`` (the stable softmax's first step; empty tensors pass through)."""
    return x - np.max(x, axis=axis, keepdims=True) if x.size else x


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(_shifted(x, axis))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    s = _shifted(x, axis)
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def _hardmax(x: np.ndarray, axis: int) -> np.ndarray:
    y = np.zeros_like(x)
    if x.size:
        np.put_along_axis(y, np.expand_dims(np.argmax(x, axis=axis), axis), 1, axis=axis)
    return y


_SOFTMAX_ATTRS = {"axis": Attr("int", -1)}


@op("Softmax", "input", "output", shape=_softmax_shape, attrs=_SOFTMAX_ATTRS, adapt=_softmax_adapt)
@_quiet
def softmax(attrs, x):
    """exp(x) / sum(exp(x)) along ``axis``, computed as exp(x - max) for stability."""
    return _softmax(x, attrs["axis"] % x.ndim)


@op("LogSoftmax", "input", "output", shape=_softmax_shape, attrs=_SOFTMAX_ATTRS, adapt=_softmax_adapt)
@_quiet
def log_softmax(attrs, x):
    """log(softmax(x)) along ``axis``, computed as (x - max) - log(sum(exp(x - max)))."""
    return _log_softmax(x, attrs["axis"] % x.ndim)


@op("Hardmax", "input", "output", shape=_softmax_shape, attrs=_SOFTMAX_ATTRS, adapt=_softmax_adapt)
def hardmax(attrs, x):
    """1 at the first maximum along ``axis``, 0 elsewhere."""
    return _hardmax(x, attrs["axis"] % x.ndim)
