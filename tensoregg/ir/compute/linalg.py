"""Compute definitions of MatMul, Gemm, Conv and their fused forms (an epilogue after the sum).

Products accumulate in the reference's precision: float16 in float32, then rounded once. A Conv
with padding first copies its input into a zero-padded stage, so that the sum reads it without
bounds tests (and its innermost loop, along the output's last axis, reads contiguously at stride 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tensoregg.ir.compute.casts import saturate
from tensoregg.ir.compute.elementwise import SCALAR, clip
from tensoregg.ir.compute.expr import (
    Buffer,
    ComputeCtx,
    Expr,
    call,
    cast,
    const,
    define,
    idx,
    is_float,
    reduce,
    select,
)
from tensoregg.ir.ops.fused import ACTIVATIONS, DOMAIN, FUSED
from tensoregg.ir.ops.nn import conv_window


def wide(dtype: np.dtype) -> np.dtype:
    """The accumulation dtype of ``dtype`` (float16 sums run in float32)."""
    return np.dtype(np.float32) if is_float(dtype) and dtype.itemsize < 4 else dtype


def first(buf: Buffer) -> Expr:
    """The first element of ``buf`` (a scalar given as a tensor of one element)."""
    return buf[(idx(0),) * len(buf.shape)]


def _batch(buf: Buffer, batch: Sequence[Expr], core: int) -> tuple[Expr, ...]:
    """The batch part of an index into ``buf`` (whose last ``core`` axes are the matrix) at the
    output's ``batch`` index, under broadcasting."""
    dims = buf.shape[:len(buf.shape) - core]
    lead = len(batch) - len(dims)
    return tuple(idx(0) if d == 1 else batch[lead + a] for a, d in enumerate(dims))


Shift = Callable[[Sequence[Expr], Expr | None], Expr]
"""A zero point to subtract from an operand, as a function of the output's batch index and the
operand's row (of A) or column (of B), None for a vector operand."""


def matmul_sum(ctx: ComputeCtx, a: Buffer, b: Buffer, acc: np.dtype, a_zero: Shift | None = None,
               b_zero: Shift | None = None) -> Expr:
    """numpy.matmul(A - a_zero, B - b_zero) at the output index, summed in ``acc``."""
    out = ctx.index()
    a1, b1 = len(a.shape) == 1, len(b.shape) == 1
    k = a.shape[-1]
    batch = out[:len(out) - (not a1) - (not b1)]
    row = None if a1 else out[len(batch)]
    col = None if b1 else out[-1]
    za = None if a_zero is None else a_zero(batch, row)
    zb = None if b_zero is None else b_zero(batch, col)

    def term(r: Expr) -> Expr:
        x = cast(a[r] if a1 else a[(*_batch(a, batch, 2), row, r)], acc)
        y = cast(b[r] if b1 else b[(*_batch(b, batch, 2), r, col)], acc)
        return (x if za is None else x - za) * (y if zb is None else y - zb)
    return reduce("add", [k], term, 0)


@define("MatMul")
def _matmul(ctx: ComputeCtx) -> Sequence[Expr]:
    a, b = ctx.input(0), ctx.input(1)
    return [cast(matmul_sum(ctx, a, b, wide(a.dtype)), a.dtype)]


# ---- MatMulInteger and QLinearMatMul -------------------------------------------------------------

I32, F32, F64 = np.dtype(np.int32), np.dtype(np.float32), np.dtype(np.float64)


def line_param(p: Buffer, batch: Sequence[Expr], line: Expr | None, per_row: bool) -> Expr:
    """A quantization parameter of a matmul operand at the output's ``batch`` index and the operand's
    row (``per_row``, of A) or column (of B): one element, a vector along the rows / columns, or the
    operand's shape with the contracted axis of size 1."""
    if p.size == 1 or line is None:
        return first(p)
    if len(p.shape) == 1:
        return p[line]
    return p[(*_batch(p, batch, 2), *((line, idx(0)) if per_row else (idx(0), line)))]


def _zero_point(ctx: ComputeCtx, i: int, per_row: bool) -> Shift | None:
    """Input ``i`` as a zero point to subtract in int32 (None if absent)."""
    if not ctx.has(i):
        return None
    p = ctx.input(i)
    return lambda batch, line: cast(line_param(p, batch, line, per_row), I32)


def requantized(acc: Expr, scale: Expr, zero_point: Buffer) -> Expr:
    """saturate(round_half_even(float32(acc) * scale) + zero_point) in float32, as onnxruntime's
    ``MlasRequantizeOutput`` (float64 rounds differently near ties), to the zero point's dtype."""
    y = call("round", cast(acc, F32) * cast(scale, F32))
    return saturate(y + cast(first(zero_point), F32), zero_point.dtype)


@define("MatMulInteger")
def _matmul_integer(ctx: ComputeCtx) -> Sequence[Expr]:
    """(A - a_zero_point) @ (B - b_zero_point) summed in int32."""
    a_zero, b_zero = _zero_point(ctx, 2, True), _zero_point(ctx, 3, False)
    return [matmul_sum(ctx, ctx.input(0), ctx.input(1), I32, a_zero, b_zero)]


@define("QLinearMatMul")
def _qlinear_matmul(ctx: ComputeCtx) -> Sequence[Expr]:
    """The int32 (a - a_zp) @ (b - b_zp), times a_scale * b_scale / y_scale (in the scales' dtype),
    requantized to y_zero_point."""
    a, b = ctx.input(0), ctx.input(3)
    product = matmul_sum(ctx, a, b, I32, _zero_point(ctx, 2, True), _zero_point(ctx, 5, False))
    out = ctx.index()
    rows, cols = len(a.shape) > 1, len(b.shape) > 1
    batch = out[:len(out) - rows - cols]
    row = out[len(batch)] if rows else None
    col = out[-1] if cols else None
    scale = (line_param(ctx.input(1), batch, row, True) * line_param(ctx.input(4), batch, col, False)
             / first(ctx.input(6)))
    return [requantized(product, scale, ctx.input(7))]


def gemm_value(ctx: ComputeCtx) -> Expr:
    """Gemm's value in the accumulation dtype: alpha * A' @ B' + beta * C."""
    a, b = ctx.input(0), ctx.input(1)
    acc = wide(a.dtype)
    i, j = ctx.index()
    ta, tb = ctx.attrs["transA"], ctx.attrs["transB"]
    k = a.shape[0] if ta else a.shape[1]
    if tb and ctx.value(1) is not None:  # constant B (weights): stored transposed, read along rows
        b, tb = ctx.constant("bT", np.asarray(ctx.value(1)).T), 0

    def term(r: Expr) -> Expr:
        return cast(a[r, i] if ta else a[i, r], acc) * cast(b[j, r] if tb else b[r, j], acc)
    y = reduce("add", [k], term, 0)
    if ctx.attrs["alpha"] != 1.0:
        y = y * const(ctx.attrs["alpha"], acc)
    if ctx.has(2) and ctx.attrs["beta"] != 0.0:
        c = cast(ctx.broadcast(2), acc)
        y = y + (c if ctx.attrs["beta"] == 1.0 else c * const(ctx.attrs["beta"], acc))
    return y


def refuse_scaled_integer_gemm(ctx: ComputeCtx) -> None:
    """An integer Gemm runs in its own dtype (wrapping, as numpy's) only with alpha 1 and beta 0 or 1:
    the reference scales in float64 and truncates, which the lowering does not copy."""
    alpha, beta = ctx.attrs["alpha"], ctx.attrs["beta"]
    if not is_float(ctx.input(0).dtype) and (alpha != 1.0 or beta not in (0.0, 1.0)):
        raise ctx.unsupported(f"integer Gemm ({ctx.input(0).dtype}) with alpha {alpha} and beta {beta} "
                              "(lowered only with alpha 1 and beta 0 or 1)")


@define("Gemm")
def _gemm(ctx: ComputeCtx) -> Sequence[Expr]:
    refuse_scaled_integer_gemm(ctx)
    return [cast(gemm_value(ctx), ctx.input(0).dtype)]


def conv_value(ctx: ComputeCtx) -> Expr:
    """Conv's value (bias included) at the output index, in the accumulation dtype."""
    x, w = ctx.input(0), ctx.input(1)
    acc = wide(x.dtype)
    y = conv_sum(ctx, x, w, acc)
    if ctx.has(2):
        y = y + cast(ctx.input(2)[ctx.index()[1]], acc)
    return y


def conv_sum(ctx: ComputeCtx, x: Buffer, w: Buffer, acc: np.dtype,
             x_value: Callable[[Expr], Expr] | None = None,
             w_value: Callable[[Expr, Expr], Expr] | None = None) -> Expr:
    """The sum of Conv's products at the output index (N, M, *out) in ``acc``, the attributes' window
    and groups: of ``x_value(x)`` (a loaded element of X, e.g. less its zero point; padding is 0
    after it) and ``w_value(w, m)`` (an element of W for output channel m); by default both cast."""
    spatial, kernel = x.shape[2:], w.shape[2:]
    win = conv_window(dict(ctx.attrs), spatial, kernel)
    need = [(o - 1) * s + sp for o, s, sp in zip(win.out, win.strides, win.span)]
    read_x, source, shift = x_value, x, win.begin
    if any(b > 0 for b in win.begin) or any(n > s + b for n, s, b in zip(need, spatial, win.begin)):
        source, shift = padded(ctx, x, win.begin, need, x_value), (0,) * len(spatial)
        read_x = None  # the stage holds x_value already
    n, m, *out = ctx.index()
    cg, per_group = w.shape[1], w.shape[0] // ctx.attrs["group"]
    group = call("div", m, idx(per_group)) if ctx.attrs["group"] > 1 else idx(0)

    def term(c: Expr, *taps: Expr) -> Expr:
        at = [o * idx(s) + t * idx(d) - idx(sh)
              for o, t, s, d, sh in zip(out, taps, win.strides, win.dilations, shift)]
        channel = group * idx(cg) + c if ctx.attrs["group"] > 1 else c
        v: Expr = source[(n, channel, *at)]
        k: Expr = w[(m, c, *taps)]
        v, k = v if read_x is None else read_x(v), k if w_value is None else w_value(k, m)
        return cast(v, acc) * cast(k, acc)
    return reduce("add", [cg, *kernel], term, 0)


def padded(ctx: ComputeCtx, x: Buffer, begin: Sequence[int], need: Sequence[int],
           value: Callable[[Expr], Expr] | None = None, fill: float = 0) -> Buffer:
    """A stage: ``value`` of ``x`` with ``fill`` ``begin`` before and enough after each spatial axis
    to hold ``need`` positions from the start of the padding (negative begins crop)."""
    spatial = x.shape[2:]
    shape = (*x.shape[:2], *[max(nd, 1) for nd in need])

    def element(n: Expr, c: Expr, *p: Expr) -> Expr:
        at = [q - idx(b) for q, b in zip(p, begin)]
        inside = None
        for a, size in zip(at, spatial):
            ok = call("and", call("ge", a, idx(0)), call("lt", a, idx(size)))
            inside = ok if inside is None else call("and", inside, ok)
        clamped = [call("min", call("max", a, idx(0)), idx(size - 1)) for a, size in zip(at, spatial)]
        assert inside is not None
        v: Expr = x[(n, c, *clamped)]
        v = v if value is None else value(v)
        return select(inside, v, const(fill, v.dtype))
    return ctx.stage("pad", shape, element)


@define("Conv")
def _conv(ctx: ComputeCtx) -> Sequence[Expr]:
    return [cast(conv_value(ctx), ctx.input(0).dtype)]


def epilogue(ctx: ComputeCtx, y: Expr, residual: int | None) -> Expr:
    """A fused op's epilogue on ``y`` (in the accumulation dtype): round to the output dtype (as the
    unfused op does), add Z, apply the activation."""
    out = cast(y, ctx.outputs[0].dtype)
    if residual is not None and ctx.has(residual):
        out = out + ctx.broadcast(residual)
    act, params = ctx.attrs["activation"], tuple(ctx.attrs["activation_params"])
    if act == "Clip":
        return clip(out, *params)
    if act:
        return SCALAR[act](dict(zip(ACTIVATIONS[act], params)), out)
    return out


_BASE_VALUE: Mapping[str, Any] = {
    "Conv": conv_value, "Gemm": gemm_value,
    "MatMul": lambda ctx: matmul_sum(ctx, ctx.input(0), ctx.input(1), wide(ctx.input(0).dtype))}

for _name, _fused in FUSED.items():
    def _fused_compute(ctx: ComputeCtx, fused: Any = _fused) -> Sequence[Expr]:
        if fused.base == "Gemm":
            refuse_scaled_integer_gemm(ctx)
        return [epilogue(ctx, _BASE_VALUE[fused.base](ctx), fused.residual)]
    define(_name, domain=DOMAIN)(_fused_compute)
