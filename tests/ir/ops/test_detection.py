"""NonMaxSuppression against onnxruntime: ties, identical and empty boxes, everything suppressed,
both box formats, optional inputs left out; its inputs at run time, so the output is planned at its
upper bound and the op runs on the host (tensoregg.staging)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensoregg
from tensoregg.errors import ShapeError
from tensoregg.testing import check_op, single_op_model

F32, I64 = np.float32, np.int64


@st.composite
def nms_inputs(draw):
    batches, classes, n = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 6))
    corners = st.integers(0, 4).map(float)  # a small grid: identical, nested and empty boxes
    boxes = np.array(draw(st.lists(corners, min_size=batches * n * 4, max_size=batches * n * 4)), F32)
    scores = draw(st.lists(st.sampled_from([0.1, 0.5, 0.5, 0.9]), min_size=batches * classes * n,
                           max_size=batches * classes * n))  # ties
    inputs = [boxes.reshape(batches, n, 4), np.array(scores, F32).reshape(batches, classes, n)]
    def maybe(values, dtype):
        return draw(st.one_of(st.none(), st.sampled_from(values).map(lambda v: np.array([v], dtype))))

    optional = [maybe(range(n + 2), I64), maybe([0.0, 0.3, 0.5, 1.0], F32), maybe([0.0, 0.5, 0.95], F32)]
    while optional and optional[-1] is None:
        optional.pop()
    return inputs + optional, draw(st.integers(0, 1))


def run_both(inputs, center, constant=()):
    model = single_op_model("NonMaxSuppression", inputs, {"center_point_box": center}, constant=constant)
    model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.INT64  # onnxruntime needs it
    feeds = {f"in{i}": a for i, a in enumerate(inputs) if a is not None and i not in constant}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)[0]
    module = tensoregg.compile(model, "llvm")
    return module, module.run(**feeds)[0], want


@settings(max_examples=60, deadline=None)
@given(nms_inputs())
def test_nms_matches_onnxruntime(case):
    inputs, center = case
    _, got, want = run_both(inputs, center)
    assert got.dtype == want.dtype and got.shape == want.shape, (got, want)
    np.testing.assert_array_equal(got, want)


def test_nms_by_hand_and_its_bound():
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 10, 1, 11], [0, 10.1, 1, 11.1]]], F32)
    scores = np.array([[[0.9, 0.75, 0.6, 0.95], [0.1, 0.2, 0.3, 0.4]]], F32)
    inputs = [boxes, scores, np.array([3], I64), np.array([0.5], F32), np.array([0.25], F32)]
    module, got, want = run_both(inputs, 0, constant=(2, 3, 4))
    np.testing.assert_array_equal(got, [[0, 0, 3], [0, 0, 0], [0, 1, 3]])
    np.testing.assert_array_equal(got, want)
    assert module.outputs[0].shape == (1 * 2 * 3, 3)  # batches x classes x min(max_output, boxes)
    every = [boxes, scores, np.array([3], I64), np.array([0.5], F32), np.array([0.99], F32)]
    assert run_both(every, 0)[1].shape == (0, 3)  # all under the score threshold


@pytest.mark.parametrize("constant", [(), (0, 1, 2, 3)], ids=["at run time", "folded at import"])
def test_nms_center_point_boxes_by_hand(constant):
    boxes = np.array([[[0.5, 0.5, 1, 1], [0.5, 0.6, 1, 1], [0.5, 10.5, 1, 1], [5, 5, 0, 0]]], F32)
    scores = np.array([[[0.9, 0.9, 0.8, 0.99]]], F32)  # a tie (lower index first), a box of no area
    want = np.array([[0, 0, 3], [0, 0, 0], [0, 0, 2]], I64)
    check_op("NonMaxSuppression", [boxes, scores, np.array([4], I64), np.array([0.5], F32)],
             {"center_point_box": 1}, constant=constant, expected=[want])


def test_nms_refuses_mismatched_scores():
    model = single_op_model("NonMaxSuppression", [np.zeros((1, 3, 4), F32), np.zeros((1, 1, 4), F32)])
    with pytest.raises(ShapeError, match=r"NonMaxSuppression node .*scores must be"):
        tensoregg.compile(model, "ref")
