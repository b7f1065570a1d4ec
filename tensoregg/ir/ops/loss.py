"""Loss operators: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Both take scores of shape (N, C, d1..dk) and integer labels of shape (N, d1..dk); a label equal to
``ignore_index`` contributes no loss and no weight. The per-sample loss is reduced by ``reduction``:
'none' keeps it, 'sum' adds it up, 'mean' divides that sum by the total weight of the samples
(their count when no weights are given). Computation stays in the scores' dtype.
"""

from __future__ import annotations

import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.ir.ops.activations import log_softmax
from tensoregg.ir.registry import Attr, InferCtx, op
from tensoregg.ir.types import TensorType, dtype_name

_ATTRS = {"reduction": Attr("string", "mean"), "ignore_index": Attr("int", None)}
_REDUCTIONS = ("none", "sum", "mean")


def _loss_shape(ctx: InferCtx) -> list[TensorType]:
    """Scores (N, C, d...), labels (N, d...) of int32/int64, weights (C,): the loss and the scores' type."""
    if ctx.attrs["reduction"] not in _REDUCTIONS:
        raise InvalidModel(f"{ctx.op} node {ctx.node!r}: reduction must be one of {', '.join(_REDUCTIONS)}, "
                           f"got {ctx.attrs['reduction']!r}")
    scores, labels = ctx.type(0), ctx.type(1)
    if not scores.dtype.name.startswith(("float", "bfloat")):
        ctx.fail(f"scores are {dtype_name(scores.dtype)}, expected a float tensor")
    if scores.rank < 2:
        ctx.fail(f"scores {list(scores.shape)} must be (N, C) or (N, C, d1, ...)")
    if labels.dtype not in (np.int32, np.int64):
        ctx.fail(f"labels are {dtype_name(labels.dtype)}, expected int32 or int64")
    if labels.shape != scores.shape[:1] + scores.shape[2:]:
        ctx.fail(f"labels {list(labels.shape)} do not fit scores {list(scores.shape)} (expected "
                 f"{list(scores.shape[:1] + scores.shape[2:])})")
    if ctx.has(2) and ctx.type(2) != TensorType(scores.dtype, scores.shape[1:2]):
        ctx.fail(f"weights {ctx.type(2)} must be 1-D of the {scores.shape[1]} classes in the scores' dtype")
    loss = TensorType(scores.dtype, labels.shape if ctx.attrs["reduction"] == "none" else ())
    return [loss, scores]


def _nll(attrs: dict, log_prob: np.ndarray, labels: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """The reduced negative log likelihood of ``labels`` under ``log_prob`` (N, C, d...)."""
    ignore = attrs["ignore_index"]
    ignored = np.zeros(labels.shape, bool) if ignore is None else labels == ignore
    classes = log_prob.shape[1]
    index = np.where(ignored, 0, labels)
    if np.any((index < 0) | (index >= classes)):
        raise IndexError(f"a label lies outside [0, {classes}) and is not ignore_index")
    picked = np.take_along_axis(log_prob, np.expand_dims(index, 1), axis=1).squeeze(1)
    weight = np.ones((), log_prob.dtype) if weights is None else weights[index]
    weight = np.where(ignored, np.zeros((), log_prob.dtype), weight)
    loss = np.where(ignored, np.zeros((), log_prob.dtype), -picked * weight)
    if attrs["reduction"] == "none":
        return loss
    total = np.sum(loss, dtype=log_prob.dtype)
    if attrs["reduction"] == "sum":
        return total
    return np.asarray(total / np.sum(weight, dtype=log_prob.dtype))


@op("NegativeLogLikelihoodLoss", "input target weight?", "loss", shape=_loss_shape, attrs=_ATTRS)
def negative_log_likelihood_loss(attrs, log_prob, target, weight):
    """-input[n, target[n, d...], d...] * weight[target], reduced by ``reduction``."""
    with np.errstate(all="ignore"):
        return _nll(attrs, log_prob, target, weight)


@op("SoftmaxCrossEntropyLoss", "scores labels weights?", "output log_prob?", shape=_loss_shape,
    attrs=_ATTRS)
def softmax_cross_entropy_loss(attrs, scores, labels, weights):
    """NegativeLogLikelihoodLoss of LogSoftmax(scores) over the class axis 1; also returns the log_prob."""
    log_prob = log_softmax({"axis": 1, "coerce_2d": 0}, scores)
    with np.errstate(all="ignore"):
        return _nll(attrs, log_prob, labels, weights), log_prob
