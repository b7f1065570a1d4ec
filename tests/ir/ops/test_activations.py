import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tensoregg.testing import arrays, check_op, shapes


def test_relu_by_hand():
    x = np.array([-1.0, 0.0, 2.5], np.float32)
    check_op("Relu", [x], expected=[np.array([0.0, 0.0, 2.5], np.float32)])


@given(shapes(), st.sampled_from([np.float32, np.float64]), st.data())
def test_relu_matches_onnx(shape, dtype, data):
    check_op("Relu", [data.draw(arrays(dtype, shape))])
