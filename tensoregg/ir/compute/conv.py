"""Compute definitions of the convolutions beyond Conv: ConvTranspose, Col2Im, DeformConv and the
integer forms ConvInteger and QLinearConv.

ConvTranspose and Col2Im end in the reference's scatter ("fold": tap k of input position j lands on
output coordinate j * stride + k * dilation - begin), stated as a gather: each output position sums,
in the reference's order, the taps that land on it (:func:`folded`). ConvTranspose first contracts
the channels into a stage of columns (N, M, *kernel, *X's spatial shape), the reference's matmul,
which reads X contiguously and wastes no products on the zeros a stride would stuff in. DeformConv
samples X bilinearly into a stage first, as the reference's im2col does, in float64. The integer
convolutions sum in int32 (the reference's exact float64 sums of 8-bit products, wrapped alike).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from tensoregg.ir.compute.expr import (
    INDEX,
    Buffer,
    ComputeCtx,
    Expr,
    all_of,
    call,
    cast,
    clamp_index,
    const,
    define,
    idx,
    in_range,
    reduce,
    select,
)
from tensoregg.ir.compute.linalg import I32, conv_sum, first, requantized, wide
from tensoregg.ir.compute.shape import ravel
from tensoregg.ir.ops.nn import ConvWindow, col2im_window, conv_window, transpose_window

F64 = np.dtype(np.float64)


def landing(t: Expr, stride: int, count: int) -> tuple[Expr, Expr]:
    """Input position j (clamped into [0, count)) with j * stride == t, and whether there is one."""
    if stride == 1:
        return clamp_index(t, count), in_range(t, 0, count)
    j = call("div", t, idx(stride))  # truncated: a negative multiple of stride gives j < 0
    multiple = call("eq", call("rem", t, idx(stride)), idx(0))
    return clamp_index(j, count), call("and", multiple, in_range(j, 0, count))


def folded(win: ConvWindow, out: Sequence[Expr], n_in: Sequence[int],
           read: Callable[[Sequence[Expr], Sequence[Expr]], Expr]) -> Expr:
    """The reference's fold at output coordinates ``out``, as a gather: the sum, over the taps k in
    row-major order, of ``read(k, j)`` for the input position j whose tap k lands on ``out``
    (j * stride + k * dilation - begin == out), 0 for the taps where none does."""
    def term(*k: Expr) -> Expr:
        found = [landing(o + idx(b) - t * idx(d), s, n)
                 for o, t, b, d, s, n in zip(out, k, win.begin, win.dilations, win.strides, n_in)]
        v = read(k, [j for j, _ in found])
        ok = all_of([hit for _, hit in found])
        return v if ok is None else select(ok, v, const(0, v.dtype))
    return reduce("add", win.kernel, term, 0)


# ---- ConvTranspose -----------------------------------------------------------------------------------

@define("ConvTranspose")
def _conv_transpose(ctx: ComputeCtx) -> Sequence[Expr]:
    """As the reference: a stage of columns cols[n, m, k, j] = sum over the group's channels c of
    X[n, c, j] * W[c, m, k] (in the accumulation dtype), folded into the output; plus bias."""
    x, w = ctx.input(0), ctx.input(1)
    acc, group = wide(x.dtype), ctx.attrs["group"]
    spatial, kernel = x.shape[2:], w.shape[2:]
    win = transpose_window(dict(ctx.attrs), spatial, kernel)
    cg, mg = w.shape[0] // group, w.shape[1]
    r = len(spatial)

    def column(n: Expr, m: Expr, *rest: Expr) -> Expr:
        taps, j = rest[:r], rest[r:]
        base = call("div", m, idx(mg)) * idx(cg) if group > 1 else idx(0)
        local = call("rem", m, idx(mg)) if group > 1 else m

        def term(c: Expr) -> Expr:
            return cast(x[(n, base + c, *j)], acc) * cast(w[(base + c, local, *taps)], acc)
        return reduce("add", [cg], term, 0)
    cols = ctx.stage("cols", (x.shape[0], group * mg, *kernel, *spatial), column)
    n, m, *out = ctx.index()
    y = folded(win, out, spatial, lambda k, j: cols[(n, m, *k, *j)])
    if ctx.has(2):
        y = y + cast(ctx.input(2)[m], acc)
    return [cast(y, x.dtype)]


# ---- Col2Im --------------------------------------------------------------------------------------

@define("Col2Im")
def _col2im(ctx: ComputeCtx) -> Sequence[Expr]:
    """Each image element adds up, in the reference's order (and in x's dtype), the column entries
    whose block tap lands on it."""
    x = ctx.input(0)
    image_shape, block_shape = ctx.value(1), ctx.value(2)
    assert image_shape is not None and block_shape is not None  # static inputs
    image, block = tuple(int(d) for d in image_shape), tuple(int(d) for d in block_shape)
    win = col2im_window(dict(ctx.attrs), image, block)
    n, c, *out = ctx.index()
    taps = math.prod(block)
    return [folded(win, out, win.out,
                   lambda k, j: x[n, c * idx(taps) + ravel(k, block), ravel(j, win.out)])]


# ---- DeformConv ------------------------------------------------------------------------------------

@define("DeformConv")
def _deform_conv(ctx: ComputeCtx) -> Sequence[Expr]:
    """Conv's sum (in float64) over a stage of samples (N, C, *kernel, *out): tap k of output pixel
    o reads X multilinearly (zero outside) at its regular coordinate plus its offset, times its mask."""
    x, w = ctx.input(0), ctx.input(1)
    spatial, kernel = x.shape[2:], w.shape[2:]
    r, channels = len(spatial), x.shape[1]
    win = conv_window(dict(ctx.attrs), spatial, kernel)
    per_offset_group = channels // ctx.attrs["offset_group"]
    offset = ctx.input(2)
    mask = ctx.input(4) if ctx.has(4) else None

    def sample(n: Expr, c: Expr, *rest: Expr) -> Expr:
        taps, out = rest[:r], rest[r:]
        slot = call("div", c, idx(per_offset_group)) * idx(math.prod(kernel)) + ravel(taps, kernel)
        regular = [o * idx(s) - idx(b) + t * idx(d)
                   for o, t, s, b, d in zip(out, taps, win.strides, win.begin, win.dilations)]
        pos = [cast(a, F64) + cast(offset[(n, slot * idx(r) + idx(i), *out)], F64)
               for i, a in enumerate(regular)]
        low = [call("floor", p) for p in pos]
        total: Expr = const(0, F64)
        for corner in itertools.product((0, 1), repeat=r):
            weight: Expr = const(1, F64)
            at = []
            for p, lo, bit, size in zip(pos, low, corner, spatial):
                coord = lo + bit
                inside = call("and", call("ge", coord, 0), call("lt", coord, size))
                weight = weight * select(inside, 1 - call("abs", p - coord), const(0, F64))
                at.append(clamp_index(cast(coord, INDEX), size))
            total = total + cast(x[(n, c, *at)], F64) * weight
        return total if mask is None else total * cast(mask[(n, slot, *out)], F64)
    samples = ctx.stage("samples", (x.shape[0], channels, *kernel, *win.out), sample)
    n, m, *out = ctx.index()
    group = ctx.attrs["group"]
    cg = w.shape[1]
    base = call("div", m, idx(w.shape[0] // group)) * idx(cg) if group > 1 else idx(0)

    def term(c: Expr, *taps: Expr) -> Expr:
        return samples[(n, base + c, *taps, *out)] * cast(w[(m, c, *taps)], F64)
    y = reduce("add", [cg, *kernel], term, 0)
    if ctx.has(3):
        y = y + cast(ctx.input(3)[m], F64)
    return [cast(y, x.dtype)]


# ---- ConvInteger and QLinearConv -----------------------------------------------------------------

def _integer_sum(ctx: ComputeCtx, x: Buffer, w: Buffer, x_zero: int, w_zero: int) -> Expr:
    """Conv of (x - input ``x_zero``) and (w - input ``w_zero``, per tensor or per output channel)
    in int32; absent zero points are 0."""
    x_zp = cast(first(ctx.input(x_zero)), I32) if ctx.has(x_zero) else None
    w_zp = ctx.input(w_zero) if ctx.has(w_zero) else None

    def x_value(v: Expr) -> Expr:
        return cast(v, I32) if x_zp is None else cast(v, I32) - x_zp

    def w_value(v: Expr, m: Expr) -> Expr:
        if w_zp is None:
            return cast(v, I32)
        return cast(v, I32) - cast(first(w_zp) if w_zp.size == 1 else w_zp[m], I32)
    return conv_sum(ctx, x, w, I32, x_value, w_value)


@define("ConvInteger")
def _conv_integer(ctx: ComputeCtx) -> Sequence[Expr]:
    return [_integer_sum(ctx, ctx.input(0), ctx.input(1), 2, 3)]


@define("QLinearConv")
def _qlinear_conv(ctx: ComputeCtx) -> Sequence[Expr]:
    """(the int32 sum + B) * (x_scale * w_scale / y_scale, in the scales' dtype), requantized in
    float32."""
    acc = _integer_sum(ctx, ctx.input(0), ctx.input(3), 2, 5)
    m = ctx.index()[1]
    if ctx.has(8):
        acc = acc + ctx.input(8)[m]  # int32, as onnxruntime accumulates
    w_scale = ctx.input(4)
    scale = first(ctx.input(1)) * (first(w_scale) if w_scale.size == 1 else w_scale[m]) / first(ctx.input(6))
    return [requantized(acc, scale, ctx.input(7))]
