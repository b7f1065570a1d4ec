import math

import ml_dtypes as md
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from onnx import helper

from tensoregg.errors import InvalidModel, ShapeError
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.ir.ops.casts import cast_undefined
from tensoregg.testing import arrays, check_op, shapes, single_op_model

F32, F16, F64 = np.float32, np.float16, np.float64
NUMERIC = [np.float32, np.float64, np.float16, md.bfloat16, np.int8, np.uint8, np.int16, np.int32, np.int64,
           np.uint16, np.bool_, md.float8_e4m3fn, md.float8_e4m3fnuz, md.float8_e5m2, md.float8_e5m2fnuz,
           md.float4_e2m1fn, md.float6_e2m3fn, md.float6_e3m2fn, md.int4, md.uint4, md.int2, md.uint2]
FLOAT8 = {np.dtype(t) for t in (md.float8_e4m3fn, md.float8_e4m3fnuz, md.float8_e5m2, md.float8_e5m2fnuz)}
LOW_FLOATS = FLOAT8 | {np.dtype(md.float4_e2m1fn)}
"""Types whose zero points onnx's reference ignores or requires to be zero."""


def code(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def run_bits(op, inputs, attrs, opset=None):
    """tensoregg's outputs of a one-node model, as raw bytes (NaN payloads and signs compare exactly)."""
    graph = import_onnx(single_op_model(op, inputs, attrs, opset=opset))
    return [o.view(np.uint8) for o in run_graph(graph, {f"in{i}": a for i, a in enumerate(inputs)})]


# --- Cast -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x,src,dst,want", [
    ([1.7, -1.7, 0.0], F32, np.int32, [1, -1, 0]),
    ([0.0, -0.0, 0.5, np.nan], F32, np.bool_, [False, False, True, True]),
    ([70000.0, 1.5], F32, F16, [np.inf, 1.5]),
    ([200, -129, 5], np.int16, np.int8, [-56, 127, 5]),  # integers wrap
    ([-9.0, 8.0, 3.0, 2315.87], F32, md.int4, [7, -8, 3, -5]),  # out of range: undefined; ours wraps
    ([np.nan, np.inf, -np.inf, 3e19, -1.5], F32, np.int64, [0, 2**63 - 1, -(2**63), 2**63 - 1, -1]),
    ([1e19, 2e20, -1.0, np.nan], F64, np.uint64, [10**19, 2**64 - 1, 2**64 - 1, 0]),
    ([np.inf, 300.5, -1.0], F32, np.uint8, [255, 44, 255]),
    ([-1, 7, -8], md.int4, md.uint4, [15, 7, 8]),  # casts ml_dtypes lacks among its own types
    ([1.5, -3], md.float6_e2m3fn, md.int4, [1, -3]),
    ([0.5, 4], md.float8_e8m0fnu, md.float8_e4m3fn, [0.5, 4]),
])
def test_cast_by_hand(x, src, dst, want):
    check_op("Cast", [np.array(x, src)], {"to": code(dst)}, expected=[np.array(want, dst)])


def test_cast_float8_saturate_by_hand():
    x = np.array([np.inf, -np.inf, 1000.0, -1000.0, np.nan, 1.0, -0.0], F32)
    sat = run_bits("Cast", [x], {"to": code(md.float8_e4m3fn)})[0]
    assert sat.tolist() == [0x7E, 0xFE, 0x7E, 0xFE, 0x7F, 0x38, 0x80]  # +-448, NaN, 1, -0
    raw = run_bits("Cast", [x], {"to": code(md.float8_e4m3fn), "saturate": 0})[0]
    assert raw.tolist() == [0x7F, 0xFF, 0x7F, 0xFF, 0x7F, 0x38, 0x80]  # out of range -> (-)NaN
    e5m2 = run_bits("Cast", [x], {"to": code(md.float8_e5m2), "saturate": 0})[0]
    assert e5m2.tolist()[:4] == [0x7C, 0xFC, 0x64, 0xE4]  # +-inf stays inf; 1000 -> 1024
    fnuz = run_bits("Cast", [x], {"to": code(md.float8_e4m3fnuz), "saturate": 0})[0]
    assert fnuz.tolist() == [0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 0x00]  # one NaN, no -0


E8M0_MAX, E8M0_NAN = 0xFE, 0xFF


@pytest.mark.parametrize("mode,saturate,want", [
    ("up", 1, [0, 124, 126, 128, E8M0_MAX, E8M0_MAX, 0, 1, E8M0_NAN]),
    ("down", 1, [0, 123, 126, 127, E8M0_MAX, E8M0_MAX, 0, 0, E8M0_NAN]),
    ("nearest", 1, [0, 124, 126, 127, E8M0_MAX, E8M0_MAX, 0, 1, E8M0_NAN]),
    ("up", 0, [E8M0_NAN, 124, 126, 128, E8M0_NAN, E8M0_NAN, 0, 1, E8M0_NAN]),
    ("nearest", 0, [E8M0_NAN, 124, 126, 127, E8M0_NAN, E8M0_NAN, 0, 1, E8M0_NAN]),
])
def test_cast_e8m0_by_hand(mode, saturate, want):
    """The spec's table: 0 -> E8M0_MIN (2**-127, code 0) with saturate, NaN without; inf -> E8M0_MAX
    with saturate (onnx's reference gives NaN), NaN without. 3e38 rounds up past 2**127 with "up" and
    "nearest"; 2**-127 (a float32 subnormal) is code 0 exactly, 1.5 * 2**-127 a tie that "nearest"
    rounds up (and "up" too, "down" not)."""
    x = np.array([0.0, 0.1, 0.5, 1.1, 3e38, np.inf, 2.0 ** -127, 1.5 * 2.0 ** -127, np.nan], F32)
    out = run_bits("Cast", [x], {"to": code(md.float8_e8m0fnu), "round_mode": mode, "saturate": saturate})[0]
    np.testing.assert_array_equal(out, np.array(want, np.uint8))


def test_cast_e8m0_rounds_float64_once():
    """1 + 2**-40 in float64 rounds up to 2 ("up"); through float32 it would be 1."""
    out = run_bits("Cast", [np.array([1 + 2.0 ** -40], F64)], {"to": code(md.float8_e8m0fnu)})[0]
    assert out.tolist() == [128]


@pytest.mark.parametrize("x,dst,saturate,undefined", [
    ([1.5, 7.9, 8.0, -8.0, -8.9, -9.0, np.nan, np.inf], md.int4, 1, [0, 0, 1, 0, 0, 1, 1, 1]),
    ([255.9, 256.0, -0.9, -1.0], np.uint8, 1, [0, 1, 0, 1]),
    ([np.nan, 1e9, 2.0], md.float4_e2m1fn, 1, [1, 0, 0]),
    ([-1.0, -0.0, 0.0, 1e-39, 1.0], md.float8_e8m0fnu, 1, [1, 1, 0, 0, 0]),
    ([-1.0, 0.0, 1e-39, 1.0, 3e38, np.inf], md.float8_e8m0fnu, 0, [1, 1, 1, 0, 1, 0]),
    ([1e9, np.nan], np.float16, 1, [0, 0]),
])
def test_cast_undefined_where_the_spec_says(x, dst, saturate, undefined):
    got = cast_undefined(np.array(x, F32), np.dtype(dst), bool(saturate))
    assert got.astype(int).tolist() == undefined


def test_cast_strings_by_hand():
    check_op("Cast", [np.array([0.1, 1e-7, 3.0, -np.inf], F32)], {"to": code(object)},
             expected=[np.array(["0.1", "1e-07", "3.0", "-inf"], dtype=object)])
    text = np.array(["3.25", "1E2", "+INF", "-inf", "NaN"], dtype=object)
    check_op("Cast", [text], {"to": code(F32)},
             expected=[np.array([3.25, 100, np.inf, -np.inf, np.nan], F32)])
    check_op("Cast", [np.array(["100", "-7", "100.5"], dtype=object)], {"to": code(np.int64)},
             expected=[np.array([100, -7, 100], np.int64)])


def test_cast_old_opset_names_type():
    check_op("Cast", [np.array([1.5, -2.0], F32)], {"to": "INT32"}, opset=5,
             expected=[np.array([1, -2], np.int32)])
    with pytest.raises(InvalidModel, match="unknown type name"):
        check_op("Cast", [np.array([1.5], F32)], {"to": "REAL"}, opset=5, expected=[])


def test_cast_bad_attributes():
    with pytest.raises(InvalidModel, match="not an ONNX element type"):
        check_op("Cast", [np.array([1.5], F32)], {"to": 99}, expected=[])
    with pytest.raises(InvalidModel, match="round_mode"):
        check_op("Cast", [np.array([1.5], F32)], {"to": code(md.float8_e8m0fnu), "round_mode": "odd"},
                 expected=[])


def castable_by_ml_dtypes(src, dst) -> bool:
    try:
        np.zeros(1, src).astype(dst)
    except TypeError:
        return False
    return True


def numeric_inputs(src, dst, saturate, shape, data):
    """Values that convert without NaN in ``dst`` (reference NaNs in ml_dtypes arrays never compare
    equal), with the elements whose conversion the spec leaves undefined set to 0."""
    limit = 200.0 if np.dtype(dst) in FLOAT8 and not saturate else 600.0
    x = data.draw(arrays(F32, shape, low=-limit, high=limit))
    if np.dtype(src).kind == "V" and np.dtype(src).itemsize == 1:
        x = x / 100  # keep inputs inside a byte-sized ml_dtypes type's range
    if np.dtype(src).kind == "u" or np.dtype(src).name.startswith("uint"):
        x = np.abs(x)  # a negative float -> unsigned is undefined
    with np.errstate(all="ignore"):
        x = np.asarray(x.astype(src))
    return np.where(cast_undefined(x, np.dtype(dst), saturate), np.zeros((), src), x)


@given(st.sampled_from(NUMERIC), st.sampled_from(NUMERIC), st.booleans(), shapes(max_rank=3), st.data())
def test_cast_matches_onnx(src, dst, saturate, shape, data):
    assume(castable_by_ml_dtypes(src, dst))  # else onnx's reference fails
    x = numeric_inputs(src, dst, saturate, shape, data)
    attrs = {"to": code(dst), "saturate": int(saturate)}
    check_op("Cast", [x], attrs)
    check_op("CastLike", [x, np.zeros((1,), dst)], {"saturate": int(saturate)})


@given(st.sampled_from(["up", "down", "nearest"]), st.booleans(), shapes(min_rank=1, max_rank=3), st.data())
def test_cast_e8m0_matches_onnx(mode, saturate, shape, data):
    x = data.draw(arrays(F32, shape, low=2.0 ** -10, high=2.0 ** 10))
    check_op("Cast", [x], {"to": code(md.float8_e8m0fnu), "round_mode": mode, "saturate": int(saturate)})


# --- CastLike ---------------------------------------------------------------------------------------


def test_castlike_by_hand():
    check_op("CastLike", [np.array([1.9, -1.9], F32), np.zeros((3, 3), np.int8)],
             expected=[np.array([1, -1], np.int8)])
    check_op("CastLike", [np.array([2, 0], np.int32), np.array(["a"], dtype=object)],
             expected=[np.array(["2", "0"], dtype=object)])


# --- BitCast ----------------------------------------------------------------------------------------


def test_bitcast_by_hand():
    check_op("BitCast", [np.array([1.0, -2.0], F32)], {"to": code(np.int32)},
             expected=[np.array([0x3F800000, -0x40000000], np.int32)])
    check_op("BitCast", [np.array([-1, 7], md.int4)], {"to": code(md.uint4)},
             expected=[np.array([15, 7], md.uint4)])
    check_op("BitCast", [np.array(2.0, F16)], {"to": code(np.uint16)}, expected=[np.array(0x4000, np.uint16)])


def test_bitcast_rejects_other_width():
    with pytest.raises(ShapeError, match="bit width"):
        check_op("BitCast", [np.array([1.0], F32)], {"to": code(np.int64)}, expected=[])
    with pytest.raises(ShapeError, match="bit width"):
        check_op("BitCast", [np.array([1], np.int8)], {"to": code(md.int4)}, expected=[])


BITCAST_PAIRS = [(F32, np.int32), (np.int32, F32), (F64, np.int64), (np.int64, np.uint64),
                 (np.uint16, np.int16), (F16, np.int16), (np.int16, F16), (md.bfloat16, np.uint16),
                 (np.int8, np.uint8), (np.bool_, np.uint8), (md.int4, md.uint4), (md.uint4, md.int4),
                 (md.float8_e5m2, np.int8)]


@given(st.sampled_from(BITCAST_PAIRS), shapes(max_rank=3), st.data())
def test_bitcast_matches_onnx(pair, shape, data):
    src, dst = map(np.dtype, pair)
    if src == np.bool_:
        x = data.draw(arrays(np.bool_, shape))
    else:
        raw = np.dtype(f"u{src.itemsize}")
        x = data.draw(arrays(raw, shape, low=0, high=15 if src.name.endswith("int4") else 2 ** 62)).view(src)
    check_op("BitCast", [x], {"to": code(dst)})


# --- QuantizeLinear ---------------------------------------------------------------------------------


def test_quantize_by_hand():
    x = np.array([0.0, 2.0, 3.0, 1000.0, -254.0, 5.0], F32)
    check_op("QuantizeLinear", [x, np.float32(2.0), np.uint8(128)],
             expected=[np.array([128, 129, 130, 255, 1, 130], np.uint8)])  # 1.5 -> 2, 2.5 -> 2: half to even
    check_op("QuantizeLinear", [x, np.float32(2.0)], {"output_dtype": code(md.int4)},
             expected=[np.array([0, 1, 2, 7, -8, 2], md.int4)])
    check_op("QuantizeLinear", [x, np.float32(2.0), np.zeros((), md.float8_e4m3fn)],
             expected=[np.array([0, 1, 1.5, 448, -128, 2.5], md.float8_e4m3fn)])


def test_quantize_per_axis_and_blocked_by_hand():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], F32)
    check_op("QuantizeLinear", [x, np.array([1.0, 2.0], F32), np.array([0, 10], np.int8)], {"axis": 0},
             expected=[np.array([[1, 2, 3], [12, 12, 13]], np.int8)])
    check_op("QuantizeLinear", [x, np.array([[1.0, 0.5], [2.0, 1.0]], F32)], {"axis": 1, "block_size": 2},
             expected=[np.array([[1, 2, 6], [2, 2, 6]], np.uint8)])


@pytest.mark.parametrize("scale_shape,attrs,message", [
    ((3,), {"axis": 0}, "per-axis"),
    ((2, 1), {"axis": 1}, "needs block_size"),
    ((2, 1), {"axis": 1, "block_size": 2}, "blocked"),
    ((2,), {"axis": 2}, "out of range"),
])
def test_quantize_rejects_bad_scale_shape(scale_shape, attrs, message):
    with pytest.raises(ShapeError, match=message):
        check_op("QuantizeLinear", [np.zeros((2, 3), F32), np.ones(scale_shape, F32)], attrs, expected=[])


def test_quantize_rejects_conflicting_output_type():
    with pytest.raises(ShapeError, match="output_dtype"):
        check_op("QuantizeLinear", [np.zeros(2, F32), np.float32(1), np.uint8(0)],
                 {"output_dtype": code(np.int8)}, expected=[])


QUANT_TARGETS = [np.uint8, np.int8, np.uint16, np.int16, md.int4, md.uint4, md.int2, md.uint2,
                 md.float8_e4m3fn, md.float8_e4m3fnuz, md.float8_e5m2, md.float8_e5m2fnuz, md.float4_e2m1fn]


@st.composite
def quant_layout(draw, dtype=F32):
    """(x shape, scale shape, attrs) for per-tensor, per-axis or blocked quantization."""
    shape = draw(shapes(min_rank=1, max_rank=3))
    mode = draw(st.sampled_from(["tensor", "axis", "block"]))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    if mode == "tensor":
        return shape, draw(st.sampled_from([(), (1,)])), {}
    if mode == "axis":
        return shape, (shape[axis],), {"axis": axis}
    block = draw(st.integers(1, shape[axis]))
    scale = tuple(math.ceil(d / block) if i == axis % len(shape) else d for i, d in enumerate(shape))
    return shape, scale, {"axis": axis, "block_size": block}


@given(quant_layout(), st.sampled_from(QUANT_TARGETS), st.sampled_from(["zp", "none", "output_dtype"]),
       st.sampled_from([(F32, F32, 0), (F16, F16, 0), (F16, F32, 0), (F32, F16, code(F32))]),
       st.booleans(), st.data())
def test_quantize_matches_onnx(layout, dtype, zp_mode, types, saturate, data):
    shape, s_shape, attrs = layout
    x_dtype, s_dtype, precision = types
    x = data.draw(arrays(x_dtype, shape, low=-300, high=300))
    scale = data.draw(arrays(s_dtype, s_shape, low=0.5, high=4.0))
    attrs = {**attrs, "saturate": int(saturate), "precision": precision}
    inputs = [x, scale]
    if zp_mode == "output_dtype":
        attrs["output_dtype"] = code(dtype)
    elif zp_mode == "zp":
        zero_point = np.zeros(s_shape, dtype)  # the reference ignores float8 zero points
        if np.dtype(dtype) not in LOW_FLOATS:
            zero_point = data.draw(arrays(np.int8, s_shape, low=-1, high=1)).astype(dtype)
        inputs.append(zero_point)
    if not saturate and np.dtype(dtype) in FLOAT8:
        inputs[0] = np.clip(x, -100, 100)  # x / scale in range: no NaN (ml_dtypes NaNs never compare equal)
    check_op("QuantizeLinear", inputs, attrs)


# --- DequantizeLinear -------------------------------------------------------------------------------


def test_dequantize_by_hand():
    check_op("DequantizeLinear", [np.array([0, 3, 255], np.uint8), np.float32(0.5), np.uint8(1)],
             expected=[np.array([-0.5, 1.0, 127.0], F32)])
    check_op("DequantizeLinear", [np.array([[1, -1], [2, -2]], np.int8), np.array([2.0, 3.0], F16)],
             {"axis": 0}, expected=[np.array([[2, -2], [6, -6]], F16)])
    check_op("DequantizeLinear", [np.array([1, 2, 3], md.int4), np.array([1.0, 10.0], F32)],
             {"axis": 0, "block_size": 2, "output_dtype": code(md.bfloat16)},
             expected=[np.array([1, 2, 30], md.bfloat16)])
    check_op("DequantizeLinear", [np.array([1, 3], np.int32), np.array([2.0], F32)], {"axis": 0},
             expected=[np.array([2, 6], F32)])


def test_dequantize_rejects_mismatched_zero_point():
    with pytest.raises(ShapeError, match="zero point type"):
        check_op("DequantizeLinear", [np.zeros(2, np.uint8), np.float32(1), np.int8(0)], expected=[])


DEQUANT_SOURCES = [np.uint8, np.int8, np.uint16, np.int16, np.int32, md.int4, md.uint4, md.int2, md.uint2,
                   md.float8_e4m3fn, md.float8_e5m2, md.float4_e2m1fn]


@given(quant_layout(), st.sampled_from(DEQUANT_SOURCES), st.booleans(), st.sampled_from([F32, F16]),
       st.sampled_from([0, code(F32), code(F16)]), st.data())
def test_dequantize_matches_onnx(layout, dtype, with_zp, s_dtype, output_dtype, data):
    shape, s_shape, attrs = layout
    x = data.draw(arrays(F32, shape, low=-4, high=4)).astype(dtype)
    inputs = [x, data.draw(arrays(s_dtype, s_shape, low=0.5, high=4.0))]
    if with_zp and np.dtype(dtype) != np.int32:
        inputs.append(data.draw(arrays(F32, s_shape, low=0, high=2)).astype(dtype))
    if np.dtype(dtype) in LOW_FLOATS:
        inputs = inputs[:2]  # the reference requires float zero points to be zero
    check_op("DequantizeLinear", inputs, {**attrs, "output_dtype": output_dtype})


# --- DynamicQuantizeLinear --------------------------------------------------------------------------


def test_dynamic_quantize_by_hand():
    x = np.array([0.0, 2.0, -3.0, 2.55], F32)
    scale = np.float32(5.55) / np.float32(255)
    check_op("DynamicQuantizeLinear", [x], n_outputs=3,
             expected=[np.array([138, 230, 0, 255], np.uint8), np.array(scale, F32), np.array(138, np.uint8)])
    check_op("DynamicQuantizeLinear", [np.zeros(3, F32)], n_outputs=3,
             expected=[np.zeros(3, np.uint8), np.array(1 / 255, F32), np.array(0, np.uint8)])


@given(shapes(min_rank=1, max_rank=3), st.floats(-4, 4), st.data())
def test_dynamic_quantize_matches_onnx(shape, shift, data):
    x = data.draw(arrays(F32, shape)) + np.float32(shift)
    x[np.abs(x) < 1e-30] = 0  # a subnormal range makes the scale 0: NaN zero point, undefined
    check_op("DynamicQuantizeLinear", [x], n_outputs=3)
