"""Compute definitions of normalizations: Batch (inference and training), Instance, Group, Layer, RMS,
Lp and mean-variance normalization, and LRN.

Statistics are stages (the normalized axes kept, of size 1) computed before the output: the mean
first, then the spread from it (variance, inverse standard deviation, RMS), so that the output is
element-wise over the input and the stages. Each step runs in the dtype the reference computes it
in: the stash type where the op has one, x's dtype otherwise (sums of float16 accumulate in float32),
and numpy's promotion where parameters of another float dtype enter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tensoregg.ir.compute.expr import (
    Buffer,
    ComputeCtx,
    Expr,
    broadcast_load,
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
from tensoregg.ir.compute.linalg import wide
from tensoregg.ir.compute.reductions import Term, by_rows, count, kept, power, promoted, square, stat
from tensoregg.ir.dtypes import dtype_of


def _stash(ctx: ComputeCtx) -> np.dtype:
    dtype = dtype_of(ctx.attrs["stash_type"])
    if dtype.kind != "f":
        raise ctx.unsupported(f"stash_type {dtype}")
    return dtype


def mean_over(ctx: ComputeCtx, name: str, x: Buffer, axes: Sequence[int], index: Sequence[Expr],
              dtype: np.dtype, value: Term | None = None) -> Expr:
    """The mean over ``axes`` at ``index`` (``axes`` kept, of size 1) of ``value`` (a function of
    the full index, in ``dtype``; by default x in ``dtype``), summed in the accumulation dtype and
    rounded to ``dtype`` as numpy's mean is."""
    acc = wide(dtype)
    of = value or (lambda at: cast(x[at], dtype))
    total = by_rows(ctx, f"{name}_rows", "add", x.shape, axes, index, True, lambda at: cast(of(at), acc))
    return cast(total / const(count(x.shape, axes), acc), dtype)


def mean_stage(ctx: ComputeCtx, name: str, x: Buffer, axes: Sequence[int], dtype: np.dtype,
               value: Term | None = None, finish: Callable[[Expr], Expr] = lambda v: v) -> Buffer:
    """A stage (``axes`` kept, of size 1) of ``finish`` of :func:`mean_over`."""
    shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape))
    return ctx.stage(name, shape, lambda *k: finish(mean_over(ctx, name, x, axes, k, dtype, value)))


def moments(ctx: ComputeCtx, x: Buffer, axes: Sequence[int], dtype: np.dtype,
            spread: Callable[[Expr], Expr] = lambda v: v) -> tuple[Buffer, Buffer]:
    """Stages of the mean over ``axes`` and ``spread`` of the variance (the mean squared deviation
    from that mean), both in ``dtype``."""
    mean = mean_stage(ctx, "mean", x, axes, dtype)
    return mean, mean_stage(ctx, "spread", x, axes, dtype,
                            lambda at: square(cast(x[at], dtype) - mean[kept(at, axes)]), spread)


def rounded_square(x: Expr) -> Expr:
    """x * x, rounded before it is added or subtracted: E[x^2] - E[x]^2 must subtract rounded squares
    as numpy does (the target may fuse a multiply into an addition, an FMA, which turns the exact 0
    of a constant input into a rounding error of either sign, and sqrt into NaN). pow(x, 2) is
    rounded x * x, a multiply that the compiler does not fuse."""
    return call("pow", x, const(2, x.dtype))


def scale_shift(x: Expr, mean: Expr, var: Expr, epsilon: float, scale: Expr, bias: Expr) -> Expr:
    """scale * (x - mean) / sqrt(var + epsilon) + bias, each step in numpy's promoted dtype."""
    spread = call("sqrt", var + const(epsilon, var.dtype))
    return promoted("add", promoted("div", promoted("mul", scale, promoted("sub", x, mean)), spread), bias)


# ---- BatchNormalization and InstanceNormalization ---------------------------------------------------

@define("BatchNormalization")
def _batch_norm(ctx: ComputeCtx) -> Sequence[Expr]:
    x, scale, bias, mean, var = (ctx.input(k) for k in range(5))
    i, eps = ctx.index(), ctx.attrs["epsilon"]
    if not ctx.attrs["training_mode"]:
        c = i[1] if len(x.shape) >= 2 else idx(0)
        return [cast(scale_shift(x[i], mean[c], var[c], eps, scale[c], bias[c]), x.dtype)]
    if len(x.shape) < 2:
        raise ctx.unsupported("training mode on a 1-D input")
    axes = tuple(a for a in range(len(x.shape)) if a != 1)
    current, spread = moments(ctx, x, axes, wide(x.dtype))  # the batch's statistics, as (1, C, 1...)
    at = kept(i, axes)
    y = cast(scale_shift(x[i], current[at], spread[at], eps, scale[i[1]], bias[i[1]]), x.dtype)
    momentum = ctx.attrs["momentum"]

    def running(k: int, old: Buffer, new: Buffer) -> Expr:
        """old * momentum + new * (1 - momentum), in old's dtype."""
        c = ctx.index(k)[0]
        at = tuple(c if a == 1 else idx(0) for a in range(len(x.shape)))
        blend = promoted("add", old[c] * const(momentum, old.dtype), new[at] * const(1 - momentum, new.dtype))
        return cast(blend, old.dtype)
    return [y, *(running(k, old, new) for k, old, new in ((1, mean, current), (2, var, spread))
                 if k < len(ctx.outputs))]


@define("InstanceNormalization")
def _instance_norm(ctx: ComputeCtx) -> Sequence[Expr]:
    x, scale, bias = (ctx.input(k) for k in range(3))
    axes, i = tuple(range(2, len(x.shape))), ctx.index()
    mean, var = moments(ctx, x, axes, x.dtype)
    at, eps = kept(i, axes), ctx.attrs["epsilon"]
    return [cast(scale_shift(x[i], mean[at], var[at], eps, scale[i[1]], bias[i[1]]), x.dtype)]


# ---- GroupNormalization -----------------------------------------------------------------------------

@define("GroupNormalization")
def _group_norm(ctx: ComputeCtx) -> Sequence[Expr]:
    """Statistics per (instance, group) over the group's channels and the spatial axes, in the stash
    dtype, the variance as E[x^2] - E[x]^2."""
    x, scale, bias = (ctx.input(k) for k in range(3))
    stash, groups = _stash(ctx), ctx.attrs["num_groups"]
    n, channels, *spatial = x.shape
    # one running sum over the whole group (not rows of partial sums, as mean_over's): in float64,
    # as its error grows with the count (265,000 float32 values: 200 times numpy's pairwise mean's
    # error, soak seed 102567)
    per, acc = channels // groups, np.dtype(np.float64)

    def group_mean(b: Expr, g: Expr, term: Callable[[Expr], Expr]) -> Expr:
        def value(r: Expr, *at: Expr) -> Expr:
            return cast(term(cast(x[(b, g * idx(per) + r, *at)], stash)), acc)
        total = reduce("add", [per, *spatial], value, 0)
        return cast(total / const(per * int(np.prod(spatial, dtype=np.int64)), acc), stash)
    eps = const(ctx.attrs["epsilon"], stash)
    mean = ctx.stage("mean", (n, groups), lambda b, g: group_mean(b, g, lambda v: v))
    std = ctx.stage("std", (n, groups), lambda b, g: call(
        "sqrt", group_mean(b, g, rounded_square) - rounded_square(mean[b, g]) + eps))
    b, c, *_ = i = ctx.index()
    at = (b, call("div", c, idx(per)))
    normalized = cast((cast(x[i], stash) - mean[at]) / std[at], x.dtype)
    return [cast(promoted("add", promoted("mul", scale[c], normalized), bias[c]), x.dtype)]


# ---- LayerNormalization and RMSNormalization --------------------------------------------------------

@define("LayerNormalization")
def _layer_norm(ctx: ComputeCtx) -> Sequence[Expr]:
    x, scale = ctx.input(0), ctx.input(1)
    axes = tuple(range(ctx.attrs["axis"] % len(x.shape), len(x.shape)))
    stash, i = _stash(ctx), ctx.index()
    eps = const(ctx.attrs["epsilon"], stash)
    mean, inv_std = moments(ctx, x, axes, stash, lambda var: const(1, stash) / call("sqrt", var + eps))
    at = kept(i, axes)
    y = promoted("mul", cast((cast(x[i], stash) - mean[at]) * inv_std[at], x.dtype), broadcast_load(scale, i))
    if ctx.has(2):
        y = promoted("add", y, broadcast_load(ctx.input(2), i))
    outputs = [cast(y, x.dtype)]
    if len(ctx.outputs) > 1:
        outputs.append(mean[ctx.index(1)])
    if len(ctx.outputs) > 2:
        outputs.append(inv_std[ctx.index(2)])
    return outputs


@define("RMSNormalization")
def _rms_norm(ctx: ComputeCtx) -> Sequence[Expr]:
    x, scale = ctx.input(0), ctx.input(1)
    axes = tuple(range(ctx.attrs["axis"] % len(x.shape), len(x.shape)))
    stash, i = _stash(ctx), ctx.index()
    eps = const(ctx.attrs["epsilon"], stash)
    rms = mean_stage(ctx, "rms", x, axes, stash, lambda at: square(cast(x[at], stash)),
                     lambda ms: call("sqrt", ms + eps))
    normalized = cast(cast(x[i], stash) / rms[kept(i, axes)], x.dtype)
    return [cast(promoted("mul", normalized, broadcast_load(scale, i)), scale.dtype)]


# ---- LpNormalization and MeanVarianceNormalization --------------------------------------------------

@define("LpNormalization")
def _lp_norm(ctx: ComputeCtx) -> Sequence[Expr]:
    """x / ||x||_p along the axis (the norm in x's dtype), 0 where the norm is 0."""
    x, i = ctx.input(0), ctx.index()
    axes = (ctx.attrs["axis"] % len(x.shape),)
    acc = wide(x.dtype)
    if ctx.attrs["p"] == 1:
        norm = stat(ctx, "norm", x.shape, axes, "add", lambda at: cast(call("abs", x[at]), acc),
                    lambda s: cast(s, x.dtype))
    else:
        norm = stat(ctx, "norm", x.shape, axes, "add", lambda at: cast(square(x[at]), acc),
                    lambda s: call("sqrt", cast(s, x.dtype)))
    d = norm[kept(i, axes)]
    return [select(call("eq", d, const(0, x.dtype)), const(0, x.dtype), x[i] / d)]


@define("MeanVarianceNormalization")
def _mvn(ctx: ComputeCtx) -> Sequence[Expr]:
    """(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9) over the axes."""
    x, i = ctx.input(0), ctx.index()
    axes = tuple(sorted(a % len(x.shape) for a in ctx.attrs["axes"]))
    mean = mean_stage(ctx, "mean", x, axes, x.dtype)

    def std(*k: Expr) -> Expr:
        squares = mean_over(ctx, "std", x, axes, k, x.dtype, lambda at: rounded_square(x[at]))
        return call("sqrt", squares - rounded_square(mean[k])) + const(1e-9, x.dtype)
    deviation = ctx.stage("std", mean.shape, std)
    at = kept(i, axes)
    return [(x[i] - mean[at]) / deviation[at]]


# ---- LRN --------------------------------------------------------------------------------------------

@define("LRN")
def _lrn(ctx: ComputeCtx) -> Sequence[Expr]:
    """x / (bias + alpha / size * square_sum) ** beta, square_sum over the channels c - (size - 1) // 2
    .. c + size // 2 that exist, in the accumulation dtype."""
    x, i = ctx.input(0), ctx.index()
    size, acc = ctx.attrs["size"], wide(x.dtype)
    before, channels = (size - 1) // 2, x.shape[1]

    def term(r: Expr) -> Expr:
        c = i[1] + r - idx(before)
        value = cast(x[(i[0], clamp_index(c, channels), *i[2:])], acc)
        return select(in_range(c, 0, channels), square(value), const(0, acc))
    square_sum = reduce("add", [size], term, 0)
    base = const(ctx.attrs["bias"], acc) + const(ctx.attrs["alpha"] / size, acc) * square_sum
    return [cast(cast(x[i], acc) / power(base, ctx.attrs["beta"]), x.dtype)]
