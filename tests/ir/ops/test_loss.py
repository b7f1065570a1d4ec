import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tensoregg.errors import InvalidModel, ShapeError
from tensoregg.frontends.onnx import import_onnx
from tensoregg.testing import arrays, check_op, shapes, single_op_model

f32, i64 = np.float32, np.int64
LOSSES = ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"]


def a(values, dtype=f32):
    return np.array(values, dtype)


X = a([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])  # (N=2, C=3)
T = a([2, 0], i64)
W = a([1.0, 2.0, 4.0])
LSE = math.log(math.exp(1) + math.exp(2) + math.exp(3))  # log-sum-exp of each row of X, shifted


@pytest.mark.parametrize("attrs,weight,want", [
    ({"reduction": "none"}, None, a([3.0, 4.0])),
    ({"reduction": "sum"}, None, a(7.0)),
    ({}, None, a(3.5)),
    ({}, W, a((4 * 3.0 + 1 * 4.0) / 5)),
    ({"reduction": "none", "ignore_index": 0}, W, a([12.0, 0.0])),
    ({"ignore_index": 2}, None, a(4.0)),
])
def test_nll_by_hand(attrs, weight, want):
    check_op("NegativeLogLikelihoodLoss", [X, T, weight], attrs, expected=[want])


def test_sce_by_hand():
    log_prob = X - (X.max(axis=1, keepdims=True) + (LSE - 3))  # row r: x - max - log(sum exp(x - max))
    want_loss = a([-log_prob[0, 2], -log_prob[1, 0]])
    check_op("SoftmaxCrossEntropyLoss", [X, T], {"reduction": "none"}, n_outputs=2,
             expected=[want_loss, log_prob.astype(f32)])
    check_op("SoftmaxCrossEntropyLoss", [X, T], {}, expected=[a(want_loss.mean())])


@pytest.mark.parametrize("inputs,attrs,error", [
    ([X, T], {"reduction": "average"}, InvalidModel),
    ([X, a([[0, 1]], i64)], {}, ShapeError),  # labels shape is not (N, d...)
    ([X, T.astype(f32)], {}, ShapeError),
    ([X, T, a([1.0, 2.0])], {}, ShapeError),  # weight is not (C,)
])
@pytest.mark.parametrize("op", LOSSES)
def test_bad_nodes(op, inputs, attrs, error):
    with pytest.raises(error):
        import_onnx(single_op_model(op, inputs, attrs))


@st.composite
def loss_case(draw):
    """Scores (N, C, d...), labels in [0, C) with some at ignore_index, optional weights and attrs
    (all positions ignored under mean reduction: NaN on both sides)."""
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rest = draw(shapes(max_rank=2, max_side=3))
    dtype = draw(st.sampled_from([np.float16, f32, np.float64]))
    scores = draw(arrays(dtype, (n, c, *rest)))
    labels = draw(arrays(draw(st.sampled_from([np.int32, i64])), (n, *rest), low=0, high=c - 1))
    attrs = {"reduction": draw(st.sampled_from(["none", "sum", "mean"]))}
    if draw(st.booleans()):
        attrs["ignore_index"] = ignore = draw(st.sampled_from([0, -1, c]))
        labels = np.where(draw(arrays(np.bool_, labels.shape)), labels.dtype.type(ignore), labels)
    weight = draw(st.none() | arrays(dtype, (c,), low=0.5, high=2.0))
    return scores, labels, weight, attrs


@given(loss_case(), st.integers(1, 2))
def test_sce_matches_onnx(case, n_outputs):
    scores, labels, weight, attrs = case
    check_op("SoftmaxCrossEntropyLoss", [scores, labels, weight], attrs, n_outputs=n_outputs)


@given(loss_case())
def test_nll_matches_onnx(case):
    scores, labels, weight, attrs = case
    # onnx's evaluator forgets ignore_index == -1 when there are no weights (mean counts ignored positions)
    assume(weight is not None or attrs.get("ignore_index") != -1)
    check_op("NegativeLogLikelihoodLoss", [scores, labels, weight], attrs)
