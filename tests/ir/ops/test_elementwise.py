import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensoregg.testing import arrays, broadcastable_shapes, check_op, shapes


@pytest.mark.parametrize("op,want", [("Add", [4.0, 0.0]), ("Sub", [-2.0, 4.0]), ("Mul", [3.0, -4.0])])
def test_binary_by_hand(op, want):
    a = np.array([1.0, 2.0], np.float32)
    b = np.array([3.0, -2.0], np.float32)
    check_op(op, [a, b], expected=[np.array(want, np.float32)])


@given(st.sampled_from(["Add", "Sub", "Mul"]), shapes(), st.data())
def test_binary_broadcast_matches_onnx(op, shape, data):
    other = data.draw(broadcastable_shapes(shape))
    a = data.draw(arrays(np.float32, shape))
    b = data.draw(arrays(np.float32, other))
    if data.draw(st.booleans()):
        a, b = b, a
    check_op(op, [a, b])
