"""Winograd F(2x2, 3x3) convolution (Lavin & Gray), tensoregg's own ops (domain ``tensoregg``): a 3x3
stride-1 Conv as three transforms around one batched MatMul, which does 2.25x fewer multiplications
than the direct sum (16 products per 2x2 output tile and channel pair, against 36).

    Conv(X, W, B) = WinogradOutput(Einsum(WinogradWeights(W), WinogradInput(X), "ekc,ecnyx->eknyx"), B)

Each 4x4 input tile d (tiles overlap by 2) becomes BT d BT^T, each 3x3 filter g becomes G g G^T; the
16 element positions of a tile are the product's batch, so the products sum over the channels as one
batched GEMM, [16, K, C] x [16, C, N, TH, TW] (the tiles kept as N x TH x TW, so that the transforms
index them without divisions); each 4x4 product tile m gives the 2x2 outputs AT m AT^T. The
``winograd`` rules create these ops; no ONNX model can name them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tensoregg.ir.ops.fused import DOMAIN, internal_only
from tensoregg.ir.registry import Attr, InferCtx, op
from tensoregg.ir.types import TensorType

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
"""The input transform: a tile d (4x4) becomes BT d BT^T."""
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
"""The filter transform: a filter g (3x3) becomes G g G^T (4x4)."""
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
"""The output transform: a product tile m (4x4) becomes AT m AT^T (2x2 outputs)."""

F32 = np.dtype(np.float32)


def tiles(height: int, width: int) -> tuple[int, int]:
    """The 2x2 output tiles (rows, columns) that cover an output of ``height`` x ``width``."""
    return -(-height // 2), -(-width // 2)


def input_pads(attrs: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """WinogradInput's pads (top, left, bottom, right); absent: none."""
    pads = attrs.get("pads")
    return (0, 0, 0, 0) if pads is None else (pads[0], pads[1], pads[2], pads[3])


def _float32(ctx: InferCtx, i: int, name: str) -> None:
    if ctx.dtype(i) != F32:
        ctx.fail(f"{name} must be float32, got {ctx.type(i)}")


def _rank(ctx: InferCtx, i: int, name: str, rank: int, layout: str) -> tuple[int, ...]:
    shape = ctx.shape(i)
    if len(shape) != rank:
        ctx.fail(f"{name} must be {layout} (rank {rank}), got shape {list(shape)}")
    return shape


def _weights_shape(ctx: InferCtx) -> TensorType:
    _float32(ctx, 0, "W")
    k, c, kh, kw = _rank(ctx, 0, "W", 4, "K x C x 3 x 3")
    if (kh, kw) != (3, 3):
        ctx.fail(f"W of shape {list(ctx.shape(0))} must be a 3x3 filter (K x C x 3 x 3)")
    return TensorType(F32, (16, k, c))


@op("WinogradWeights", "W", "U", shape=_weights_shape, domain=DOMAIN, adapt=internal_only,
    ops_per_element=27)  # the filter's 9 terms of two products and an add (unless folded)
def winograd_weights(attrs, w):
    """U[4 xi + nu, k, c] = (G W[k, c] G^T)[xi, nu]: each 3x3 filter transformed, [16, K, C]."""
    u = np.einsum("xa,kcab,yb->xykc", G, w, G)
    return u.reshape(16, *w.shape[:2]).astype(F32)


def _input_shape(ctx: InferCtx) -> TensorType:
    _float32(ctx, 0, "X")
    n, c, h, w = _rank(ctx, 0, "X", 4, "N x C x H x W")
    pads = ctx.attrs.get("pads")
    if pads is not None and (len(pads) != 4 or min(pads) < 0):
        ctx.fail(f"pads {list(pads)} must be 4 values >= 0 (top, left, bottom, right)")
    top, left, bottom, right = input_pads(ctx.attrs)
    ho, wo = h + top + bottom - 2, w + left + right - 2
    if ho < 1 or wo < 1:
        ctx.fail(f"a 3x3 filter does not fit X's spatial shape {[h, w]} with pads "
                 f"{[top, left, bottom, right]}")
    th, tw = tiles(ho, wo)
    return TensorType(F32, (16, c, n, th, tw))


@op("WinogradInput", "X", "V", shape=_input_shape, attrs={"pads": Attr("ints", None)}, domain=DOMAIN,
    adapt=internal_only, ops_per_element=4)  # a tile entry's 4 signed loads
def winograd_input(attrs, x):
    """V[4 xi + nu, c, n, ty, tx] = (BT d BT^T)[xi, nu], d the 4x4 tile of zero-padded X (``pads``:
    top, left, bottom, right, as Conv's) at row 2 ty, column 2 tx, of the TH x TW tiles covering the
    3x3 Conv's output; [16, C, N, TH, TW]."""
    top, left, bottom, right = input_pads(attrs)
    n, c, h, w = x.shape
    th, tw = tiles(h + top + bottom - 2, w + left + right - 2)
    padded = np.zeros((n, c, 2 * th + 2, 2 * tw + 2), F32)
    padded[:, :, top:top + h, left:left + w] = x
    rows = 2 * np.arange(th)[:, None] + np.arange(4)
    cols = 2 * np.arange(tw)[:, None] + np.arange(4)
    d = padded[:, :, rows[:, :, None, None], cols[None, None, :, :]]  # (N, C, TH, 4, TW, 4)
    v = np.einsum("xa,ncsatb,yb->xycnst", BT, d, BT)
    return v.reshape(16, c, n, th, tw).astype(F32)


def _output_shape(ctx: InferCtx) -> TensorType:
    _float32(ctx, 0, "M")
    sixteen, k, *tiled = _rank(ctx, 0, "M", 5, "16 x K x N x TH x TW")
    shape = tuple(ctx.attrs["output_shape"])
    if len(shape) != 4 or min(shape) < 1:
        ctx.fail(f"output_shape {list(shape)} must be 4 values >= 1 (N, K, Ho, Wo)")
    th, tw = tiles(shape[2], shape[3])
    if (sixteen, k, *tiled) != (16, shape[1], shape[0], th, tw):
        ctx.fail(f"M of shape {list(ctx.shape(0))} must be [16, {shape[1]}, {shape[0]}, {th}, {tw}] "
                 f"for output_shape {list(shape)} (16 x K x N x ceil(Ho/2) x ceil(Wo/2))")
    if ctx.has(1):
        _float32(ctx, 1, "B")
        if ctx.shape(1) != (k,):
            ctx.fail(f"B of shape {list(ctx.shape(1))} must be [{k}]")
    return TensorType(F32, shape)


@op("WinogradOutput", "M B?", "Y", shape=_output_shape, attrs={"output_shape": Attr("ints")}, domain=DOMAIN,
    adapt=internal_only, ops_per_element=9)  # an output's 9 signed loads with its bias
def winograd_output(attrs, m, b=None):
    """Y[n, k, 2 ty + i, 2 tx + j] = (AT m AT^T)[i, j] + B[k], m = M[:, k, n, ty, tx] as 4x4, cropped
    to ``output_shape`` (N, K, Ho, Wo)."""
    n, k, ho, wo = attrs["output_shape"]
    th, tw = tiles(ho, wo)
    y = np.einsum("ix,xyknst,jy->nksitj", AT, m.reshape(4, 4, k, n, th, tw), AT)
    y = y.reshape(n, k, 2 * th, 2 * tw)[:, :, :ho, :wo]
    if b is not None:
        y = y + b.reshape(k, 1, 1)
    return np.ascontiguousarray(y, F32)


