"""Compute definitions of the loss ops: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

A sample's loss gathers its label's log probability (the label clamped into the class range, so an
invalid one, an error in the reference, still reads inside the buffer), times the label's weight;
a label equal to ``ignore_index`` gives 0 and weighs 0. 'sum' and 'mean' reduce all samples into a
scalar, summing in the accumulation dtype (float16 in float32, as numpy's sum does) and rounding
once; 'mean' divides by the summed weights, in the scores' dtype. SoftmaxCrossEntropyLoss first
computes the log softmax over the class axis into a stage (its second output, when asked for).
"""

from __future__ import annotations

from collections.abc import Sequence

from tensoregg.ir.compute.expr import (
    INDEX,
    Buffer,
    ComputeCtx,
    Expr,
    call,
    cast,
    clamp_index,
    const,
    define,
    idx,
    reduce,
    select,
)
from tensoregg.ir.compute.linalg import wide
from tensoregg.ir.compute.reductions import kept, peak_stage, stat


def _sample(ctx: ComputeCtx, log_prob: Buffer, at: Sequence[Expr]) -> tuple[Expr, Expr]:
    """The loss and the weight of the sample at label index ``at`` (N, d...)."""
    labels = ctx.input(1)
    dtype, classes = log_prob.dtype, log_prob.shape[1]
    label = cast(labels[tuple(at)], INDEX)
    ignore = ctx.attrs["ignore_index"]
    ignored = None if ignore is None else call("eq", label, idx(int(ignore)))
    cls = clamp_index(label if ignored is None else select(ignored, idx(0), label), classes)
    loss = -log_prob[(at[0], cls, *at[1:])]
    weight: Expr = const(1, dtype)
    if ctx.has(2):
        weight = ctx.input(2)[cls]
        loss = loss * weight
    if ignored is None:
        return loss, weight
    zero = const(0, dtype)
    return select(ignored, zero, loss), select(ignored, zero, weight)


def _reduced(ctx: ComputeCtx, log_prob: Buffer) -> Expr:
    """The loss reduced as ``reduction`` says, at output 0's index."""
    shape, dtype = ctx.input(1).shape, log_prob.dtype
    reduction = ctx.attrs["reduction"]
    if reduction == "none":
        return _sample(ctx, log_prob, ctx.index(0))[0]

    def total(k: int) -> Expr:
        return cast(reduce("add", shape, lambda *at: cast(_sample(ctx, log_prob, at)[k], wide(dtype)), 0),
                    dtype)
    if reduction == "sum":
        return total(0)
    return total(0) / total(1)


@define("NegativeLogLikelihoodLoss")
def _nll(ctx: ComputeCtx) -> Sequence[Expr]:
    return [_reduced(ctx, ctx.input(0))]


def log_softmax_stage(ctx: ComputeCtx, x: Buffer, axis: int) -> Buffer:
    """A stage: (x - max) - log(sum(exp(x - max))) along ``axis``, the sum in the accumulation dtype
    and rounded to x's dtype (as the LogSoftmax reference computes it)."""
    peak = peak_stage(ctx, x, axis)

    def shifted(at: Sequence[Expr]) -> Expr:
        return x[tuple(at)] - peak[kept(at, (axis,))]
    total = stat(ctx, "sum", x.shape, (axis,), "add",
                 lambda at: cast(call("exp", shifted(at)), wide(x.dtype)), lambda s: cast(s, x.dtype))
    return ctx.stage("log_prob", x.shape, lambda *i: shifted(i) - call("log", total[kept(i, (axis,))]))


@define("SoftmaxCrossEntropyLoss")
def _sce(ctx: ComputeCtx) -> Sequence[Expr]:
    log_prob = log_softmax_stage(ctx, ctx.input(0), 1)
    loss = _reduced(ctx, log_prob)
    return [loss, log_prob[ctx.index(1)]] if len(ctx.outputs) > 1 else [loss]
