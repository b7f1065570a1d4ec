import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto

from tensoregg.testing import check_op

WINDOWS = ["HannWindow", "HammingWindow", "BlackmanWindow"]


def test_windows_by_hand():
    size = np.array(4, np.int64)
    check_op("HannWindow", [size], constant=(0,), expected=[np.array([0, 0.5, 1, 0.5], np.float32)])
    check_op("HannWindow", [np.array(3, np.int64)], {"periodic": 0}, constant=(0,),
             expected=[np.array([0, 1, 0], np.float32)])
    check_op("HammingWindow", [np.array(2, np.int64)], constant=(0,),
             expected=[np.array([4 / 46, 1], np.float32)])
    check_op("BlackmanWindow", [np.array(2, np.int64)], {"output_datatype": TensorProto.DOUBLE},
             constant=(0,), expected=[np.array([0, 1], np.float64)], atol=1e-12)


@pytest.mark.parametrize("name", WINDOWS)
@given(size=st.integers(2, 12), periodic=st.integers(0, 1),
       dtype=st.sampled_from([TensorProto.FLOAT, TensorProto.DOUBLE]))
def test_windows_match_onnx(name, size, periodic, dtype):
    check_op(name, [np.array(size, np.int64)], {"periodic": periodic, "output_datatype": dtype},
             constant=(0,), atol=1e-7)
