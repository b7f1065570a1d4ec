"""Element-wise operators: unary math, broadcasting binary arithmetic, bit operations, comparisons,
logic, the variadic Sum/Max/Min/Mean, Where and Identity.

Results keep the inputs' dtype exactly: integer arithmetic wraps around as in numpy/C, and numpy
warnings (overflow, division by zero, NaN from a domain error) are silenced as ONNX defines none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any

import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.ir.registry import Attr, InferCtx, ShapeRule, Upgrade, op
from tensoregg.ir.shapes import broadcast_shapes, given, same, same_dtype
from tensoregg.ir.types import TensorType, dtype_name

_ALLOWED = {"float": {"float"}, "int": {"int"}, "num": {"float", "int"}, "bool": {"bool"},
            "any": {"float", "int", "bool", "string", "other"}}
"""Dtype groups an operator accepts -> the dtype categories in them."""


def _category(dtype: np.dtype) -> str:
    """``float``, ``int``, ``bool``, ``string`` or ``other`` (ml_dtypes types count by name)."""
    if dtype == np.bool_:
        return "bool"
    if dtype == np.dtype(object):
        return "string"
    if dtype.kind == "f" or dtype.name.startswith(("float", "bfloat")):
        return "float"
    if dtype.kind in "iu" or dtype.name.startswith(("int", "uint")):
        return "int"
    return "other"


def _check_dtypes(ctx: InferCtx, types: list[TensorType], allowed: str) -> None:
    for t in types:
        if _category(t.dtype) not in _ALLOWED[allowed]:
            ctx.fail(f"{dtype_name(t.dtype)} input, expected a {allowed} tensor")


def _elementwise(allowed: str, out: Any = None) -> ShapeRule:
    """Inputs of one ``allowed`` dtype broadcast together; the output has their dtype or ``out``."""

    def rule(ctx: InferCtx) -> TensorType:
        types = given(ctx)
        _check_dtypes(ctx, types, allowed)
        dtype = same_dtype(ctx, types)
        return TensorType(dtype if out is None else out, broadcast_shapes(ctx, [t.shape for t in types]))

    return rule


def _legacy(up: Upgrade) -> None:
    """Opsets < 7: drop ``consumed_inputs`` (a memory hint); ``broadcast`` becomes numpy broadcasting."""
    if up.opset >= 7:
        return
    up.attrs.pop("consumed_inputs", None)
    axis = up.attrs.pop("axis", None)
    if up.attrs.pop("broadcast", 0) and axis is not None:
        a, b = [*up.types, None, None][:2]
        if a is None or b is None or axis % max(a.rank, 1) + b.rank != a.rank:
            up.unsupported(f"legacy broadcast of B at axis {axis} of A (only an end-aligned B "
                           "is numpy broadcasting)")


def _quiet(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a reference with numpy's floating-point and integer warnings off."""

    def wrapped(*args: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args)

    wrapped.__doc__ = fn.__doc__
    return wrapped


def _define(name: str, inputs: str, output: str, fn: Callable[..., Any], doc: str, allowed: str,
            out: Any = None) -> None:
    """Register ``fn(*arrays)`` as an attribute-free element-wise op, cast to the output dtype."""

    def reference(attrs, *xs):
        return np.asarray(fn(*xs)).astype(xs[0].dtype if out is None else out, copy=False)

    reference.__doc__ = doc
    op(name, inputs, output, shape=_elementwise(allowed, out), adapt=_legacy)(_quiet(reference))


def _unary(name: str, fn: Callable[..., Any], doc: str, allowed: str = "float", out: Any = None) -> None:
    _define(name, "X", "Y", fn, doc, allowed, out)


def _binary(name: str, fn: Callable[..., Any], doc: str, allowed: str = "num", out: Any = None) -> None:
    _define(name, "A B", "C", fn, doc, allowed, out)


def _variadic(name: str, fn: Callable[..., Any], doc: str, allowed: str) -> None:
    _define(name, "data_0*", name.lower(), fn, doc, allowed)


# ---- unary math ---------------------------------------------------------------------------------

_unary("Abs", np.abs, "|x|.", "num")
_unary("Neg", np.negative, "-x.", "num")
_unary("Sign", np.sign, "-1, 0 or 1 by the sign of x.", "num")
_unary("Sqrt", np.sqrt, "Square root (NaN below 0).")
_unary("Exp", np.exp, "e ** x.")
_unary("Log", np.log, "Natural logarithm (NaN below 0, -inf at 0).")
_unary("Reciprocal", np.reciprocal, "1 / x.")
_unary("Floor", np.floor, "Largest integer <= x.")
_unary("Ceil", np.ceil, "Smallest integer >= x.")
_unary("Round", np.round, "Nearest integer, halves to even.")
_unary("Sin", np.sin, "Sine.")
_unary("Cos", np.cos, "Cosine.")
_unary("Tan", np.tan, "Tangent.")
_unary("Asin", np.arcsin, "Arcsine.")
_unary("Acos", np.arccos, "Arccosine.")
_unary("Atan", np.arctan, "Arctangent.")
_unary("Sinh", np.sinh, "Hyperbolic sine.")
_unary("Cosh", np.cosh, "Hyperbolic cosine.")
_unary("Asinh", np.arcsinh, "Inverse hyperbolic sine.")
_unary("Acosh", np.arccosh, "Inverse hyperbolic cosine.")
_unary("Atanh", np.arctanh, "Inverse hyperbolic tangent.")
_unary("Not", np.logical_not, "Logical not.", "bool")
_unary("BitwiseNot", np.invert, "Bitwise complement.", "int")
_unary("IsNaN", np.isnan, "Whether x is NaN.", out=np.bool_)

_erf = np.vectorize(math.erf, otypes=[np.float64])


@op("Erf", "input", "output", shape=_elementwise("float"))
def erf(attrs, x):
    """The Gauss error function, computed in double precision."""
    return _erf(x.astype(np.float64)).astype(x.dtype)


@op("IsInf", "X", "Y", shape=_elementwise("float", np.bool_),
    attrs={"detect_negative": Attr("int", 1), "detect_positive": Attr("int", 1)})
def isinf(attrs, x):
    """Whether x is +inf (if detect_positive) or -inf (if detect_negative)."""
    positive, negative = bool(attrs["detect_positive"]), bool(attrs["detect_negative"])
    return (np.isposinf(x) & positive) | (np.isneginf(x) & negative)


# ---- binary arithmetic ---------------------------------------------------------------------------

def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b; integers truncate toward zero (C division), unlike numpy's floor division."""
    if _category(a.dtype) != "int":
        return np.divide(a, b)
    q = np.floor_divide(a, b)
    return q + ((np.remainder(a, b) != 0) & ((a < 0) != (b < 0))).astype(q.dtype)


_binary("Add", np.add, "A + B with broadcasting.")
_binary("Sub", np.subtract, "A - B with broadcasting.")
_binary("Mul", np.multiply, "A * B with broadcasting.")
_binary("Div", _divide, "A / B with broadcasting; integer division truncates toward zero.")
_binary("BitwiseAnd", np.bitwise_and, "A & B with broadcasting.", "int")
_binary("BitwiseOr", np.bitwise_or, "A | B with broadcasting.", "int")
_binary("BitwiseXor", np.bitwise_xor, "A ^ B with broadcasting.", "int")
_binary("And", np.logical_and, "A and B with broadcasting.", "bool")
_binary("Or", np.logical_or, "A or B with broadcasting.", "bool")
_binary("Xor", np.logical_xor, "A xor B with broadcasting.", "bool")
_binary("Equal", np.equal, "A == B with broadcasting.", "any", np.bool_)
_binary("Less", np.less, "A < B with broadcasting.", out=np.bool_)
_binary("Greater", np.greater, "A > B with broadcasting.", out=np.bool_)
_binary("LessOrEqual", np.less_equal, "A <= B with broadcasting.", out=np.bool_)
_binary("GreaterOrEqual", np.greater_equal, "A >= B with broadcasting.", out=np.bool_)


def _pow_shape(ctx: InferCtx) -> TensorType:
    """Pow: base and exponent may differ in dtype; the output has the base's."""
    _check_dtypes(ctx, [ctx.type(0), ctx.type(1)], "num")
    return TensorType(ctx.dtype(0), broadcast_shapes(ctx, [ctx.shape(0), ctx.shape(1)]))


@op("Pow", "X Y", "Z", shape=_pow_shape, adapt=_legacy)
@_quiet
def pow_(attrs, x, y):
    """X ** Y with broadcasting, in X's dtype; integer powers with a negative exponent truncate."""
    if _category(x.dtype) == "int" and _category(y.dtype) == "int":
        z = np.where((y < 0) & (np.abs(x) != 1), 0, np.power(x, np.abs(y)))
    else:
        z = np.power(x, y)
    return z.astype(x.dtype, copy=False)


def _choice(name: str, choices: tuple, allowed: str) -> ShapeRule:
    """An element-wise rule that first checks attribute ``name`` is one of ``choices``."""
    rule = _elementwise(allowed)

    def checked(ctx: InferCtx) -> TensorType | Sequence[TensorType]:
        if ctx.attrs[name] not in choices:
            raise InvalidModel(f"{ctx.op} node {ctx.node!r}: attribute {name!r} must be one of "
                               f"{', '.join(map(repr, choices))}, got {ctx.attrs[name]!r}")
        return rule(ctx)

    return checked


@op("Mod", "A B", "C", shape=_choice("fmod", (0, 1), "num"), attrs={"fmod": Attr("int", 0)})
@_quiet
def mod(attrs, a, b):
    """A mod B: the sign of B (floor division), or with fmod=1 the sign of A (C fmod)."""
    return (np.fmod if attrs["fmod"] else np.mod)(a, b).astype(a.dtype, copy=False)


@op("BitShift", "X Y", "Z", shape=_choice("direction", ("LEFT", "RIGHT"), "int"),
    attrs={"direction": Attr("string")})
def bitshift(attrs, x, y):
    """X shifted by Y bits (RIGHT is arithmetic); a shift outside [0, bits) leaves only the sign fill."""
    x, y = np.broadcast_arrays(x, y)
    valid = (y >= 0) & (y < x.dtype.itemsize * 8)
    shift = np.where(valid, y, 0)
    if attrs["direction"] == "LEFT":
        unsigned = np.dtype(f"u{x.dtype.itemsize}")
        shifted = np.left_shift(x.view(unsigned), shift.astype(unsigned)).view(x.dtype)
        fill = np.zeros_like(x)
    else:
        shifted = np.right_shift(x, shift.astype(x.dtype))
        fill = -(x < 0).astype(x.dtype)
    return np.where(valid, shifted, fill)


# ---- variadic ------------------------------------------------------------------------------------

_variadic("Sum", lambda *xs: reduce(np.add, xs), "Sum of the inputs with broadcasting.", "num")
_variadic("Max", lambda *xs: reduce(np.maximum, xs), "Element-wise max of the inputs (NaN wins).", "num")
_variadic("Min", lambda *xs: reduce(np.minimum, xs), "Element-wise min of the inputs (NaN wins).", "num")
_variadic("Mean", lambda *xs: reduce(np.add, xs) / len(xs), "Mean of the inputs with broadcasting.", "float")


# ---- selection ----------------------------------------------------------------------------------

def _where_shape(ctx: InferCtx) -> TensorType:
    _check_dtypes(ctx, [ctx.type(0)], "bool")
    dtype = same_dtype(ctx, [ctx.type(1), ctx.type(2)])
    return TensorType(dtype, broadcast_shapes(ctx, [ctx.shape(i) for i in range(3)]))


@op("Where", "condition X Y", "output", shape=_where_shape)
def where(attrs, condition, x, y):
    """X where condition holds, else Y, all three broadcast together."""
    return np.where(condition, x, y)


@op("Identity", "input", "output", shape=same())
def identity(attrs, x):
    """The input, unchanged."""
    return x
