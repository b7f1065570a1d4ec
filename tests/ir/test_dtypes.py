"""The IR's table of ONNX element types agrees with onnx's own, code for code."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from tensoregg.errors import InvalidModel
from tensoregg.ir.dtypes import ELEMENT_TYPES, code_named, code_of, dtype_of


def test_the_table_is_onnx_s():
    onnx_codes = {code: name for name, code in TensorProto.DataType.items() if code != TensorProto.UNDEFINED}
    assert {code: name for code, (name, _) in ELEMENT_TYPES.items()} == onnx_codes
    for code in onnx_codes:
        assert dtype_of(code) == np.dtype(helper.tensor_dtype_to_np_dtype(code))
        assert code_of(dtype_of(code)) == code
        assert code_named(onnx_codes[code].lower()) == code


def test_unknown_codes_and_names_are_invalid_models():
    with pytest.raises(InvalidModel, match="99 is not an ONNX element type"):
        dtype_of(99)
    with pytest.raises(InvalidModel, match="unknown type name 'REAL'"):
        code_named("REAL")
    with pytest.raises(InvalidModel, match="no ONNX element type"):
        code_of(np.dtype("datetime64[s]"))
