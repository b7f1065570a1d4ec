"""Fusion: epilogues (residual add, activation) folded into the producing Conv/Gemm/MatMul as one
fused-kernel op (``tensoregg.ir.ops.fused``) that lowering turns into one loop nest.

A Conv's bias is already part of Conv. Add(Conv, z) becomes FusedConv with residual z, and an
activation of a Conv, or of such a FusedConv, becomes FusedConv's activation, so ResNet's
Relu(Add(Conv, shortcut)) ends as one op. MatMul takes a residual (broadcasting to the product) and
an activation the same way; Gemm only an activation (its C is the residual).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from egglog import String, Vec, eq, f64, i64, var, vars_

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.ops.fused import ACTIVATIONS, DOMAIN, FUSED
from tensoregg.ir.terms import SORTS, Tensor, attr_vars, shape_of, term
from tensoregg.ir.types import TensorType
from tensoregg.rules.registry import Family

fusion = Family("fusion", __doc__ or "")

FUSED_ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid")
"""The activations the rules fuse: those whose parameters are attributes (Clip's are tensors)."""
EXAMPLE_ATTRS: dict[str, dict[str, float]] = {"LeakyRelu": {"alpha": 0.2},
                                              "HardSigmoid": {"alpha": 0.25, "beta": 0.4}}

x, w, b, z = vars_("x w b z", Tensor)
operands = var("operands", Vec[Tensor])
s = var("s", SORTS["ints"])
none = Tensor.none()


def _epilogue(act: str = "", params: Sequence[Any] = ()) -> dict[str, Any]:
    """A fused op's epilogue attributes (no activation by default)."""
    return {"activation": String(act), "activation_params": Vec[f64](*params)}


conv, gemm = attr_vars("Conv"), attr_vars("Gemm")
Conv, Gemm, MatMul = term("Conv", x, w, b, **conv), term("Gemm", x, w, b, **gemm), term("MatMul", x, w)


def _fused_conv(residual: Any, **epilogue: Any) -> Any:
    return term("FusedConv", x, w, b, residual, **conv, **(epilogue or _epilogue()))


def _fused_matmul(residual: Any, **epilogue: Any) -> Any:
    return term("FusedMatMul", x, w, residual, **(epilogue or _epilogue()))


def _fuse_activation(act: str) -> None:
    """The rules that make ``act`` the epilogue's activation of a Conv, Gemm or MatMul."""
    params = attr_vars(act)
    fused = _epilogue(act, [params[p] for p in ACTIVATIONS[act]])
    name = act.lower()

    def of(y: Any) -> Any:
        return term(act, y, **params)

    # act(conv(x, w, b)) = fused_conv(x, w, b; act)
    fusion.rewrite(f"conv-{name}-fuse", f"{act}(conv(x, w, b)) = fused_conv(x, w, b; {act})",
                   of(Conv), _fused_conv(none, **fused), example=lambda: _example("Conv", [act]))
    # act(fused_conv(x, w, b, z)) = fused_conv(x, w, b, z; act): the activation joins a residual add
    fusion.rewrite(f"fused-conv-{name}", f"{act}(fused_conv(x, w, b, z)) = fused_conv(x, w, b, z; {act})",
                   of(_fused_conv(z)), _fused_conv(z, **fused), example=lambda: _example("FusedConv", [act]))
    # act(gemm(a, b, c)) = fused_gemm(a, b, c; act)
    fusion.rewrite(f"gemm-{name}-fuse", f"{act}(gemm(a, b, c)) = fused_gemm(a, b, c; {act})",
                   of(Gemm), term("FusedGemm", x, w, b, **gemm, **fused),
                   example=lambda: _example("Gemm", [act]))
    # act(a @ b) = fused_matmul(a, b; act)
    fusion.rewrite(f"matmul-{name}-fuse", f"{act}(a @ b) = fused_matmul(a, b; {act})",
                   of(MatMul), _fused_matmul(none, **fused), example=lambda: _example("MatMul", [act]))
    # act(fused_matmul(a, b, z)) = fused_matmul(a, b, z; act)
    fusion.rewrite(f"fused-matmul-{name}", f"{act}(fused_matmul(a, b, z)) = fused_matmul(a, b, z; {act})",
                   of(_fused_matmul(z)), _fused_matmul(z, **fused),
                   example=lambda: _example("FusedMatMul", [act]))


def _fuse_residual(base: str, product: Any, fused: Any, when: Any) -> None:
    """``base(..) + z`` as Add or two-input Sum, either operand order, becomes ``fused``, guarded by
    ``when(sum)``."""
    name, total = base.lower(), term("Sum", operands)
    forms: list[tuple[str, Any, tuple[Any, ...], str]] = [
        (f"{name}-add-fuse", term("Add", product, z), (), "Add-right"),
        (f"add-{name}-fuse", term("Add", z, product), (), "Add-left")]
    for first, second, side in ((product, z, "right"), (z, product, "left")):
        pair = (eq(operands.length()).to(i64(2)), eq(operands[0]).to(first), eq(operands[1]).to(second))
        forms.append((f"{name}-sum-fuse" if side == "right" else f"sum-{name}-fuse", total, pair,
                      f"Sum-{side}"))
    for rule_name, lhs, pair, step in forms:
        fusion.rewrite(rule_name, f"{base}(..) + z = z + {base}(..) = Fused{base}(.., z)", lhs, fused,
                       *pair, *when(lhs), example=partial(_example, base, [step]),
                       counter=partial(_example, base, [step], broken=True))


# ---- witnesses ----------------------------------------------------------------------------------

Shape = tuple[int, ...]


def _draw_conv(draw: Any) -> tuple[dict[str, Any], Shape, Shape, Shape]:
    """Conv attributes and the shapes of X, W and B (1 or 2 spatial axes, groups, strides, pads)."""
    from hypothesis import strategies as st

    axes, group = draw(st.integers(1, 2)), draw(st.sampled_from([1, 2]))
    cin, m = group * draw(st.integers(1, 2)), group * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(axes))
    dilations = tuple(draw(st.integers(1, 2)) for _ in range(axes))
    spatial = tuple((k - 1) * d + 1 + draw(st.integers(0, 3)) for k, d in zip(kernel, dilations))
    attrs = {"group": group, "dilations": dilations,
             "strides": tuple(draw(st.integers(1, 2)) for _ in range(axes)),
             "pads": tuple(draw(st.integers(0, 1)) for _ in range(2 * axes))}
    return attrs, (draw(st.integers(1, 2)), cin, *spatial), (m, cin // group, *kernel), (m,)


def _draw_gemm(draw: Any) -> tuple[dict[str, Any], Shape, Shape, Shape]:
    """Gemm attributes and the shapes of A, B and C (C broadcasting to the product)."""
    from hypothesis import strategies as st

    from tensoregg.strategies import broadcastable_shapes

    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    attrs = {"transA": draw(st.integers(0, 1)), "transB": draw(st.integers(0, 1)),
             "alpha": draw(st.sampled_from([1.0, 0.5])), "beta": draw(st.sampled_from([1.0, 0.5]))}
    a, bt = ((k, m) if attrs["transA"] else (m, k)), ((n, k) if attrs["transB"] else (k, n))
    return attrs, a, bt, draw(broadcastable_shapes((m, n)))


def _draw_matmul(draw: Any) -> tuple[dict[str, Any], Shape, Shape, None]:
    """The shapes of A (optionally batched) and B."""
    from hypothesis import strategies as st

    batch = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 1))))
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    return {}, (*batch, m, k), (k, n), None


_DRAWS = {"Conv": _draw_conv, "Gemm": _draw_gemm, "MatMul": _draw_matmul}


def _example(base: str, epilogue: Sequence[str], broken: bool = False) -> Any:
    """Strategy of (Graph, feeds): a random ``base`` node (a fused one: with no activation, with or
    without its residual), then ``epilogue`` steps: an activation, or ``Add``/``Sum`` with a residual
    input (of the value's shape; for MatMul broadcasting to it) on the ``-right`` or ``-left``.

    ``broken`` (the residual rules' premises broken), one of: each residual widens the value (an
    extra leading axis of 2); each Sum takes a third operand; or a second output, the Sum of two
    residuals of the value's shape (a Sum that is no residual add, and tensors of the value's shape
    that are not the residual)."""
    from hypothesis import strategies as st

    from tensoregg.strategies import arrays, broadcastable_shapes

    unfused = FUSED[base].base if base in FUSED else base
    z_at = FUSED[base].residual if base in FUSED else None

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        how = draw(st.sampled_from(["wider", "three", "stray"])) if broken else ""
        attrs, x_shape, w_shape, bias = _DRAWS[unfused](draw)
        feeds = {"x": draw(arrays(np.float32, x_shape))}
        inits = {"w": draw(arrays(np.float32, w_shape))}
        inputs = ["x", "w"]
        if bias is not None and draw(st.booleans()):
            inits["b"] = draw(arrays(np.float32, bias))
            inputs.append("b")
        out = _output_shape(unfused, inputs, attrs, feeds, inits)

        def residual() -> np.ndarray:
            shape = draw(broadcastable_shapes(out)) if unfused == "MatMul" and not how else out
            return draw(arrays(np.float32, (2, *shape) if how == "wider" else shape))

        if z_at is not None and draw(st.booleans()):
            feeds["z"] = residual()
            inputs += [""] * (z_at - len(inputs)) + ["z"]
        nodes = [Node(base, tuple(inputs), ("v0",), attrs, domain=DOMAIN if base in FUSED else "")]
        for k, step in enumerate(epilogue, 1):
            if step.startswith(("Add", "Sum")):
                feeds[f"r{k}"] = residual()
                pair = (f"v{k - 1}", f"r{k}")
                args: tuple[str, ...] = pair if step.endswith("right") else pair[::-1]
                if how == "three" and step.startswith("Sum"):
                    feeds[f"t{k}"] = residual()
                    args += (f"t{k}",)
                nodes.append(Node(step[:3], args, (f"v{k}",)))
            else:
                nodes.append(Node(step, (f"v{k - 1}",), (f"v{k}",), EXAMPLE_ATTRS.get(step, {})))
        outputs = [f"v{len(epilogue)}"]
        if how == "stray":
            feeds["s0"], feeds["s1"] = residual(), residual()
            nodes.append(Node("Sum", ("s0", "s1"), ("stray",)))
            outputs.append("stray")
        types = {n: TensorType.of(a) for n, a in feeds.items()}
        return Graph(types, inits, nodes, outputs), feeds

    return build()


def _output_shape(op: str, inputs: Sequence[str], attrs: dict[str, Any], feeds: dict[str, np.ndarray],
                  inits: dict[str, np.ndarray]) -> Shape:
    """The output shape of one ``op`` node over ``inputs`` (named in ``feeds`` and ``inits``)."""
    types = {n: TensorType.of(a) for n, a in feeds.items()}
    return Graph(types, inits, [Node(op, tuple(inputs), ("y",), attrs)], ["y"]).types["y"].shape


# ---- the rules (after the witnesses they name) --------------------------------------------------

# z + conv(x, w, b) = fused_conv(x, w, b, z) where z has the conv's shape (no broadcasting)
_fuse_residual("Conv", Conv, _fused_conv(z), lambda add: (eq(shape_of(z)).to(s), eq(shape_of(Conv)).to(s)))
# z + a @ b = fused_matmul(a, b, z) where z broadcasts to the product (the sum has its shape)
_fuse_residual("MatMul", MatMul, _fused_matmul(z),
               lambda add: (eq(shape_of(add)).to(s), eq(shape_of(MatMul)).to(s)))
for _act in FUSED_ACTIVATIONS:
    _fuse_activation(_act)
