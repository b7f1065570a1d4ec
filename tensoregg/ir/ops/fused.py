"""Fused kernels, tensoregg's own ops (domain ``tensoregg``): a Conv, Gemm or MatMul and its epilogue
(residual add, activation) as one op, which lowering turns into one loop nest. The ``fusion`` rules
create them (cf. onnxruntime's com.microsoft FusedConv); no ONNX model can name them.

Each reuses its base op's registry entry (attributes, shape rule, reference) and then applies the
epilogue with the reference of the ONNX ops it replaces (Add, then the activation), so a fused op
computes exactly what the unfused nodes compute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tensoregg.ir.ops import linalg, nn  # noqa: F401  (registers the base ops, whose attributes we extend)
from tensoregg.ir.registry import Attr, InferCtx, OpDef, ShapeRule, Upgrade, get_op, op
from tensoregg.ir.shapes import broadcast_shapes
from tensoregg.ir.types import TensorType, dtype_name

if TYPE_CHECKING:
    from tensoregg.ir.graph import Node

DOMAIN = "tensoregg"
"""The domain of tensoregg's internal ops."""

ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "": (), "Relu": (), "Sigmoid": (), "Tanh": (), "LeakyRelu": ("alpha",),
    "HardSigmoid": ("alpha", "beta"), "Clip": ("min", "max")}
"""Epilogue activations (``""``: none), each an ONNX op, with what ``activation_params`` hold: the
op's float attributes, or Clip's min and max (inputs in ONNX)."""

_EPILOGUE_ATTRS = {"activation": Attr("string", ""), "activation_params": Attr("floats", ())}


@dataclass(frozen=True)
class Fused:
    """How a fused op extends its base op: ``residual`` is the index of its Z input, if it has one."""

    base: str
    residual: int | None

    @property
    def base_op(self) -> OpDef:
        return get_op(self.base)

    def epilogue_steps(self, attrs: Mapping[str, Any], given: Sequence[object | None]) -> int:
        """Elementwise passes after the base op: the residual add (if Z is given), the activation."""
        has_z = self.residual is not None and self.residual < len(given) and given[self.residual] is not None
        return int(has_z) + int(bool(attrs.get("activation")))


FUSED: dict[str, Fused] = {"FusedConv": Fused("Conv", 3), "FusedGemm": Fused("Gemm", None),
                           "FusedMatMul": Fused("MatMul", 2)}
"""Every fused op by name."""


def fused_ops(node: Node) -> list[str]:
    """The ops ``node`` computes: for a fused op its base op, its residual Add and its activation."""
    fused = FUSED.get(node.op)
    if fused is None:
        return [node.op]
    z = fused.residual
    residual = z is not None and len(node.inputs) > z and node.inputs[z]
    activation = str(node.attrs.get("activation") or "")
    return [fused.base, *(["Add"] if residual else []), *([activation] if activation else [])]


def internal_only(up: Upgrade) -> None:
    """An ONNX model that names a fused op is refused: these ops belong to no ONNX opset."""
    up.unsupported(f"{up.op} is internal to tensoregg (domain {DOMAIN!r}), not an ONNX operator")


def _shape(name: str, exact_residual: bool) -> ShapeRule:
    """The base op's shape rule, then the epilogue's checks: a known activation with its number of
    params, and Z of the output's dtype and shape (``exact_residual``) or broadcasting to it."""
    fused = FUSED[name]

    def rule(ctx: InferCtx) -> TensorType:
        out = fused.base_op.infer_types(ctx)[0]
        act, params = ctx.attrs["activation"], ctx.attrs["activation_params"]
        if act not in ACTIVATIONS:
            ctx.fail(f"activation {act!r} is not one of {', '.join(a for a in ACTIVATIONS if a)} (or '')")
        if len(params) != len(ACTIVATIONS[act]):
            ctx.fail(f"activation {act!r} takes {len(ACTIVATIONS[act])} activation_params "
                     f"({', '.join(ACTIVATIONS[act]) or 'none'}), got {list(params)}")
        z = fused.residual
        if z is not None and ctx.has(z):
            if ctx.dtype(z) != out.dtype:
                ctx.fail(f"Z is {dtype_name(ctx.dtype(z))}, the {fused.base} output {dtype_name(out.dtype)}")
            fits = (ctx.shape(z) == out.shape if exact_residual
                    else broadcast_shapes(ctx, [ctx.shape(z), out.shape]) == out.shape)
            if not fits:
                ctx.fail(f"Z of shape {list(ctx.shape(z))} must {'be' if exact_residual else 'broadcast to'} "
                         f"the {fused.base} output's shape {list(out.shape)}")
        return out

    return rule


def _epilogue(attrs: Mapping[str, Any], y: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """act(y + z), each step by the reference of the ONNX op it stands for."""
    if z is not None:
        y = get_op("Add").reference({}, y, z)
    act, params = attrs["activation"], attrs["activation_params"]
    if not act:
        return y
    opdef = get_op(act)
    if act == "Clip":
        return opdef.reference({}, y, *[np.asarray(p, y.dtype) for p in params])
    return opdef.reference(opdef.check_attrs(dict(zip(ACTIVATIONS[act], params)), act), y)


def _attrs(base: str) -> dict[str, Attr]:
    """The base op's attributes and the epilogue's."""
    return {**get_op(base).attrs, **_EPILOGUE_ATTRS}


@op("FusedConv", "X W B? Z?", "Y", shape=_shape("FusedConv", exact_residual=True), attrs=_attrs("Conv"),
    domain=DOMAIN, adapt=internal_only)
def fused_conv(attrs, x, w, b=None, z=None):
    """act(Conv(X, W, B) + Z): Conv's attributes; Z (optional) has the Conv output's shape."""
    return _epilogue(attrs, get_op("Conv").reference(attrs, x, w, b), z)


@op("FusedGemm", "A B C?", "Y", shape=_shape("FusedGemm", exact_residual=False), attrs=_attrs("Gemm"),
    domain=DOMAIN, adapt=internal_only)
def fused_gemm(attrs, a, b, c=None):
    """act(Gemm(A, B, C)): Gemm's attributes."""
    return _epilogue(attrs, get_op("Gemm").reference(attrs, a, b, c), None)


@op("FusedMatMul", "A B Z?", "Y", shape=_shape("FusedMatMul", exact_residual=False),
    attrs=_EPILOGUE_ATTRS, domain=DOMAIN, adapt=internal_only)
def fused_matmul(attrs, a, b, z=None):
    """act(A @ B + Z): numpy matmul; Z (optional) broadcasts to the product's shape."""
    return _epilogue(attrs, get_op("MatMul").reference({}, a, b), z)
