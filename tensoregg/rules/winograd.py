"""Winograd: a 3x3 stride-1 Conv as Winograd F(2x2, 3x3) (``tensoregg.ir.ops.winograd``): the filter
and input transforms, one batched product [16, K, C] x [16, C, N, TH, TW] (an Einsum) that the GEMM
scheduler tiles, and the output transform, which adds the bias. The product does 16 products per 2x2
output tile and channel pair where the direct Conv does 36, and the filter transform of constant
weights is folded at compile time; the transforms cost a pass over the input and the output each, so
the rule asks for enough channels and outputs to pay for them. Both forms stay in the e-graph: the
cost model picks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from egglog import String, Vec, eq, i64, set_, union, var

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.terms import Tensor, dtype_of, shape_of, term
from tensoregg.ir.types import TensorType
from tensoregg.rules.registry import Family

winograd = Family("winograd", __doc__ or "")


PRODUCT = "ekc,ecnyx->eknyx"
"""The transformed filters times the transformed tiles, summed over the channels c, per element e."""
MIN_CHANNELS = 16
"""Input and output channels at least: fewer leave the MatMul too small to repay the transforms."""
MIN_OUTPUTS = 64
"""Output pixels (Ho * Wo) at least: a small map has too few tiles to pay."""

x, w, bias = (var(n, Tensor) for n in ("x", "w", "bias"))
dilations, kernel_shape, pads, strides = (var(n, Vec[Vec[i64]]) for n in ("dilations", "kernel_shape", "pads",
                                                                          "strides"))
sx, sy = var("sx", Vec[i64]), var("sy", Vec[i64])
F32 = String("float32")
UNIT = Vec[i64](i64(1), i64(1))
NO_PADS = Vec[i64](*[i64(0)] * 4)


def _or_default(attr: Any, default: Any) -> Any:
    """An optional attribute's value (a Vec of length 0 or 1), ``default`` where it is unset."""
    return attr.push(default)[0]


def _conv_winograd() -> None:
    # conv(x, W, B) = output(weights(W) @ input(x), B) for 3x3 stride 1, B given or not (none)
    conv = term("Conv", x, w, bias, auto_pad=String("NOTSET"), dilations=dilations, group=i64(1),
                kernel_shape=kernel_shape, pads=pads, strides=strides)
    weights, tiles = term("WinogradWeights", w), term("WinogradInput", x, pads=pads)
    product = term("Einsum", Vec[Tensor](weights, tiles), equation=String(PRODUCT))
    # shapes: X [N, C, H, W], Y [N, K, Ho, Wo]; W is read off them (after BatchNormalization folding
    # it is an expression with no type facts): stride 1, no dilation, so kh - 1 = H + top + bottom - Ho
    k, c, p = sy[1], sx[1], _or_default(pads, NO_PADS)
    grid = (sy[0], (sy[2] + i64(1)) / i64(2), (sy[3] + i64(1)) / i64(2))  # N x TH x TW tiles
    premises = [conv, eq(_or_default(strides, UNIT)).to(UNIT), eq(_or_default(dilations, UNIT)).to(UNIT),
                eq(dtype_of(conv)).to(F32), eq(shape_of(conv)).to(sy), eq(shape_of(x)).to(sx),
                eq(sy.length()).to(i64(4)), eq(sx[2] + p[0] + p[2] - sy[2]).to(i64(2)),
                eq(sx[3] + p[1] + p[3] - sy[3]).to(i64(2)), k >= i64(MIN_CHANNELS), c >= i64(MIN_CHANNELS),
                sy[2] * sy[3] >= i64(MIN_OUTPUTS)]
    shapes = ((weights, (k, c)), (tiles, (c, *grid)), (product, (k, *grid)))
    facts = [fact for term, dims in shapes for fact in
             (set_(shape_of(term)).to(Vec[i64](i64(16), *dims)), set_(dtype_of(term)).to(F32))]
    winograd.rule("conv-winograd", "conv(x, W, B) = A^T [sum over C of (G W G^T) * (B^T d B) per 4x4 tile d] "
                  "A + B for a 3x3 stride-1 Conv (Winograd F(2x2, 3x3), Lavin & Gray)", premises,
                  [union(conv).with_(term("WinogradOutput", product, bias, output_shape=sy)), *facts],
                  example=lambda: _example(), counter=lambda: _example(broken=True), exact=False)


_conv_winograd()


# ---- witness ----------------------------------------------------------------------------------------

def _example(broken: bool = False) -> Any:
    """x [N, C, H, W] -> Conv(W [K, C, 3, 3], B?) with pads, strides/dilations [1, 1] or unset,
    C, K >= 16 and an output of 8 to 11 rows and columns (even and odd). Values are positive, so that
    no output cancels to near zero (the check's tolerance is relative). ``broken``: a premise broken,
    one of: a kernel of 1 or 5 along one axis, a kernel of 2 dilated by 2 (3 wide, as the shapes
    premises see it) along one axis, or a third spatial axis. (A stride breaks nothing the shape
    premises do not: along an axis with one output row it does not matter.)"""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        n, c, k = draw(st.integers(1, 2)), draw(st.integers(16, 20)), draw(st.integers(16, 20))
        outs = [draw(st.integers(8, 11)), draw(st.integers(8, 11))]
        dilations, kernel = [1, 1], [3, 3]
        how = draw(st.sampled_from(["kernel", "dilation", "rank"])) if broken else ""
        axis = draw(st.integers(0, 1))
        if how == "kernel":
            kernel[axis] = draw(st.sampled_from([1, 5]))
        elif how == "dilation":
            kernel[axis], dilations[axis] = 2, 2
        elif how == "rank":  # pads and dilations unset, so that only the rank premise breaks
            outs, dilations, kernel = [*outs, 2], [1] * 3, [3, 3, draw(st.integers(1, 3))]
        pads = [draw(st.integers(0, 1)) for _ in range(4)]
        given = {"pads": pads, "dilations": dilations, "kernel_shape": kernel}
        attrs = {a: v for a, v in given.items()
                 if (a == "dilations" and how == "dilation") or (how != "rank" and draw(st.booleans()))}
        if "strides" not in attrs and draw(st.booleans()) and how != "rank":
            attrs["strides"] = [1, 1]
        if "pads" not in attrs:  # unset pads: zeros
            pads = [0] * (2 * len(outs))
        rank = len(outs)
        space = [o + (kk - 1) * d - pads[a] - pads[a + rank]
                 for a, (o, d, kk) in enumerate(zip(outs, dilations, kernel))]
        consts = {"w": rng.uniform(0, 1, (k, c, *kernel)).astype(np.float32)}
        if draw(st.booleans()):
            consts["b"] = rng.uniform(0, 1, k).astype(np.float32)
        feeds = {"x": rng.uniform(0, 1, (n, c, *space)).astype(np.float32)}
        conv = Node("Conv", ("x", "w", "b" if "b" in consts else ""), ("y",), attrs)
        return Graph({"x": TensorType.of(feeds["x"])}, consts, [conv], ["y"]), feeds

    return build()
