"""ONNX's element types (``TensorProto.DataType``) as numpy dtypes: the codes the ONNX specification
fixes, stated here so that the IR needs no onnx import (tests check the table against onnx's own).
STRING is numpy's ``object``; ml_dtypes supplies bfloat16, the float8/6/4 formats and int4/uint4/
int2/uint2."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from tensoregg.errors import InvalidModel

ELEMENT_TYPES: dict[int, tuple[str, np.dtype]] = {code: (name, np.dtype(t)) for code, name, t in [
    (1, "FLOAT", np.float32), (2, "UINT8", np.uint8), (3, "INT8", np.int8), (4, "UINT16", np.uint16),
    (5, "INT16", np.int16), (6, "INT32", np.int32), (7, "INT64", np.int64), (8, "STRING", object),
    (9, "BOOL", np.bool_), (10, "FLOAT16", np.float16), (11, "DOUBLE", np.float64), (12, "UINT32", np.uint32),
    (13, "UINT64", np.uint64), (14, "COMPLEX64", np.complex64), (15, "COMPLEX128", np.complex128),
    (16, "BFLOAT16", ml_dtypes.bfloat16), (17, "FLOAT8E4M3FN", ml_dtypes.float8_e4m3fn),
    (18, "FLOAT8E4M3FNUZ", ml_dtypes.float8_e4m3fnuz), (19, "FLOAT8E5M2", ml_dtypes.float8_e5m2),
    (20, "FLOAT8E5M2FNUZ", ml_dtypes.float8_e5m2fnuz), (21, "UINT4", ml_dtypes.uint4),
    (22, "INT4", ml_dtypes.int4),
    (23, "FLOAT4E2M1", ml_dtypes.float4_e2m1fn), (24, "FLOAT8E8M0", ml_dtypes.float8_e8m0fnu),
    (25, "UINT2", ml_dtypes.uint2), (26, "INT2", ml_dtypes.int2), (27, "FLOAT6E2M3", ml_dtypes.float6_e2m3fn),
    (28, "FLOAT6E3M2", ml_dtypes.float6_e3m2fn),
]}
"""code -> (ONNX name, numpy dtype)."""
_CODES = {dtype: code for code, (_, dtype) in ELEMENT_TYPES.items()}
_NAMED = {name: code for code, (name, _) in ELEMENT_TYPES.items()}


def dtype_of(code: int) -> np.dtype:
    """The numpy dtype of ONNX element type ``code``; InvalidModel if there is none."""
    if code not in ELEMENT_TYPES:
        raise InvalidModel(f"{code!r} is not an ONNX element type")
    return ELEMENT_TYPES[code][1]


def code_of(dtype: np.dtype) -> int:
    """The ONNX element type of a numpy dtype; InvalidModel if there is none."""
    try:
        return _CODES[np.dtype(dtype)]
    except KeyError:
        raise InvalidModel(f"dtype {dtype} has no ONNX element type") from None


def code_named(name: str) -> int:
    """The code of the element type called ``name`` (``"FLOAT"``, case-insensitive)."""
    if name.upper() not in _NAMED:
        raise InvalidModel(f"unknown type name {name!r}")
    return _NAMED[name.upper()]
