"""Compute definitions of MatMul, Gemm, Conv and their fused forms (an epilogue after the sum).

Products accumulate in the reference's precision: float16 in float32, then rounded once. A Conv
with padding first copies its input into a zero-padded stage, so that the sum reads it without
bounds tests (and its innermost loop, along the output's last axis, reads contiguously at stride 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tensoregg.ir.compute.elementwise import SCALAR, clip
from tensoregg.ir.compute.expr import (
    INDEX,
    Buffer,
    ComputeCtx,
    Expr,
    call,
    cast,
    const,
    define,
    reduce,
    select,
)
from tensoregg.ir.ops.fused import ACTIVATIONS, DOMAIN, FUSED
from tensoregg.ir.ops.nn import _window


def wide(dtype: np.dtype) -> np.dtype:
    """The accumulation dtype of ``dtype`` (float16 sums run in float32)."""
    return np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize < 4 else dtype


def idx(value: int) -> Expr:
    return const(value, INDEX)


def _batch(buf: Buffer, batch: Sequence[Expr], core: int) -> tuple[Expr, ...]:
    """The batch part of an index into ``buf`` (whose last ``core`` axes are the matrix) at the
    output's ``batch`` index, under broadcasting."""
    dims = buf.shape[:len(buf.shape) - core]
    lead = len(batch) - len(dims)
    return tuple(idx(0) if d == 1 else batch[lead + a] for a, d in enumerate(dims))


def matmul_sum(ctx: ComputeCtx, a: Buffer, b: Buffer, acc: np.dtype) -> Expr:
    """numpy.matmul(A, B) at the output index, summed in ``acc``."""
    out = ctx.index()
    a1, b1 = len(a.shape) == 1, len(b.shape) == 1
    k = a.shape[-1]
    batch = out[:len(out) - (not a1) - (not b1)]
    row = None if a1 else out[len(batch)]
    col = None if b1 else out[-1]

    def term(r: Expr) -> Expr:
        x = a[r] if a1 else a[(*_batch(a, batch, 2), row, r)]
        y = b[r] if b1 else b[(*_batch(b, batch, 2), r, col)]
        return cast(x, acc) * cast(y, acc)
    return reduce("add", [k], term, 0)


@define("MatMul")
def _matmul(ctx: ComputeCtx) -> Sequence[Expr]:
    a, b = ctx.input(0), ctx.input(1)
    if a.dtype.kind not in "f":
        raise ctx.unsupported(f"integer MatMul ({a.dtype}) is not lowered")
    return [cast(matmul_sum(ctx, a, b, wide(a.dtype)), a.dtype)]


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


@define("Gemm")
def _gemm(ctx: ComputeCtx) -> Sequence[Expr]:
    if ctx.input(0).dtype.kind != "f":
        raise ctx.unsupported(f"integer Gemm ({ctx.input(0).dtype}) is not lowered")
    return [cast(gemm_value(ctx), ctx.input(0).dtype)]


def conv_value(ctx: ComputeCtx) -> Expr:
    """Conv's value (bias included) at the output index, in the accumulation dtype."""
    x, w = ctx.input(0), ctx.input(1)
    acc = wide(x.dtype)
    spatial, kernel = x.shape[2:], w.shape[2:]
    win = _window(dict(ctx.attrs), spatial, kernel)
    need = [(o - 1) * s + sp for o, s, sp in zip(win.out, win.strides, win.span)]
    source, shift = x, win.begin
    if any(b > 0 for b in win.begin) or any(n > s + b for n, s, b in zip(need, spatial, win.begin)):
        source, shift = _padded(ctx, x, win.begin, need), (0,) * len(spatial)
    n, m, *out = ctx.index()
    cg, per_group = w.shape[1], w.shape[0] // ctx.attrs["group"]
    group = call("div", m, idx(per_group)) if ctx.attrs["group"] > 1 else idx(0)

    def term(c: Expr, *taps: Expr) -> Expr:
        at = [o * idx(s) + t * idx(d) - idx(sh)
              for o, t, s, d, sh in zip(out, taps, win.strides, win.dilations, shift)]
        channel = group * idx(cg) + c if ctx.attrs["group"] > 1 else c
        return cast(source[(n, channel, *at)], acc) * cast(w[(m, c, *taps)], acc)
    y = reduce("add", [cg, *kernel], term, 0)
    if ctx.has(2):
        y = y + cast(ctx.input(2)[m], acc)
    return y


def _padded(ctx: ComputeCtx, x: Buffer, begin: Sequence[int], need: Sequence[int]) -> Buffer:
    """A stage: ``x`` with zeros ``begin`` before and enough after each spatial axis to hold ``need``
    positions from the start of the padding (negative begins crop)."""
    spatial = x.shape[2:]
    shape = (*x.shape[:2], *[max(nd, 1) for nd in need])

    def value(n: Expr, c: Expr, *p: Expr) -> Expr:
        at = [q - idx(b) for q, b in zip(p, begin)]
        inside = None
        for a, size in zip(at, spatial):
            ok = call("and", call("ge", a, idx(0)), call("lt", a, idx(size)))
            inside = ok if inside is None else call("and", inside, ok)
        clamped = [call("min", call("max", a, idx(0)), idx(size - 1)) for a, size in zip(at, spatial)]
        assert inside is not None
        return select(inside, x[(n, c, *clamped)], const(0, x.dtype))
    return ctx.stage("pad", shape, value)


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
        if ctx.input(0).dtype.kind != "f":
            raise ctx.unsupported(f"integer {fused.base} ({ctx.input(0).dtype}) is not lowered")
        return [epilogue(ctx, _BASE_VALUE[fused.base](ctx), fused.residual)]
    define(_name, domain=DOMAIN)(_fused_compute)
