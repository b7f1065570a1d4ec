import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensoregg.errors import InvalidModel, ShapeError, UnsupportedOperator
from tensoregg.frontends.onnx import import_onnx
from tensoregg.testing import arrays, broadcastable_shapes, check_op, shapes, single_op_model

f32, i8, i32, i64, u8 = np.float32, np.int8, np.int32, np.int64, np.uint8
INF, NAN = math.inf, math.nan


def a(values, dtype=f32):
    return np.array(values, dtype)


# ---- hand-computed values ------------------------------------------------------------------------

BY_HAND = [
    ("Abs", [a([-1.5, 2.0])], {}, a([1.5, 2.0])),
    ("Abs", [a([-128, 5], i8)], {}, a([-128, 5], i8)),  # wraps like C/numpy
    ("Neg", [a([3, -4], i32)], {}, a([-3, 4], i32)),
    ("Sign", [a([-2.5, 0.0, 7.0])], {}, a([-1.0, 0.0, 1.0])),
    ("Sqrt", [a([4.0, 2.25])], {}, a([2.0, 1.5])),
    ("Exp", [a([0.0, 1.0])], {}, a([1.0, math.e])),
    ("Log", [a([1.0, math.e, 0.0])], {}, a([0.0, 1.0, -INF])),
    ("Reciprocal", [a([4.0, -0.5])], {}, a([0.25, -2.0])),
    ("Floor", [a([1.5, -1.5])], {}, a([1.0, -2.0])),
    ("Ceil", [a([1.5, -1.5])], {}, a([2.0, -1.0])),
    ("Round", [a([0.5, 1.5, 2.5, -0.5, -1.6])], {}, a([0.0, 2.0, 2.0, -0.0, -2.0])),
    ("Sin", [a([0.0, math.pi / 2])], {}, a([0.0, 1.0])),
    ("Cos", [a([0.0, math.pi])], {}, a([1.0, -1.0])),
    ("Tan", [a([0.0, math.pi / 4])], {}, a([0.0, 1.0])),
    ("Asin", [a([0.0, 1.0])], {}, a([0.0, math.pi / 2])),
    ("Acos", [a([1.0, -1.0])], {}, a([0.0, math.pi])),
    ("Atan", [a([0.0, 1.0])], {}, a([0.0, math.pi / 4])),
    ("Sinh", [a([0.0, 1.0])], {}, a([0.0, math.sinh(1.0)])),
    ("Cosh", [a([0.0, 1.0])], {}, a([1.0, math.cosh(1.0)])),
    ("Asinh", [a([0.0, math.sinh(2.0)])], {}, a([0.0, 2.0])),
    ("Acosh", [a([1.0, math.cosh(2.0)])], {}, a([0.0, 2.0])),
    ("Atanh", [a([0.0, math.tanh(0.5)])], {}, a([0.0, 0.5])),
    ("Erf", [a([0.0, 1.0, -3.0])], {}, a([0.0, 0.8427007929497149, -0.9999779095030014])),
    ("Erf", [a([1.0, 0.5], np.float64)], {}, a([0.8427007929497149, 0.5204998778130465], np.float64)),
    ("IsNaN", [a([NAN, 1.0, INF])], {}, a([True, False, False], bool)),
    ("IsInf", [a([INF, -INF, NAN, 1.0])], {}, a([True, True, False, False], bool)),
    ("IsInf", [a([INF, -INF, 1.0])], {"detect_negative": 0}, a([True, False, False], bool)),
    ("IsInf", [a([INF, -INF, 1.0])], {"detect_positive": 0}, a([False, True, False], bool)),
    ("Not", [a([True, False], bool)], {}, a([False, True], bool)),
    ("BitwiseNot", [a([0, 5, 255], u8)], {}, a([255, 250, 0], u8)),
    ("Add", [a([250, 3], u8), a([10, 4], u8)], {}, a([4, 7], u8)),  # uint8 wraps
    ("Add", [a([[1.0], [2.0]]), a([10.0, 20.0])], {}, a([[11.0, 21.0], [12.0, 22.0]])),
    ("Sub", [a([1, 2], u8), a([2, 1], u8)], {}, a([255, 1], u8)),
    ("Mul", [a([100, -3], i8), a([2, 4], i8)], {}, a([-56, -12], i8)),
    ("Div", [a([7.0, -1.0]), a([2.0, 0.0])], {}, a([3.5, -INF])),
    ("Div", [a([7, -7, 7, -7], i32), a([2, 2, -2, -2], i32)], {}, a([3, -3, -3, 3], i32)),
    ("Pow", [a([2.0, 4.0]), a([3.0, 0.5])], {}, a([8.0, 2.0])),
    ("Pow", [a([2.0, 3.0]), a([3, -1], i64)], {}, a([8.0, 1 / 3])),
    ("Pow", [a([3, 2, -1, 1, -1], i32), a([2, -1, -3, -5, -2], i32)], {}, a([9, 0, -1, 1, 1], i32)),
    ("Pow", [a([3, 4], i64), a([2.0, 0.5])], {}, a([9, 2], i64)),
    ("Mod", [a([5, -5, 5, -5], i32), a([3, 3, -3, -3], i32)], {}, a([2, 1, -1, -2], i32)),
    ("Mod", [a([5, -5, 5, -5], i32), a([3, 3, -3, -3], i32)], {"fmod": 1}, a([2, -2, 2, -2], i32)),
    ("Mod", [a([5.5, -5.5, INF, 1.0]), a([2.0, 2.0, 2.0, -INF])], {}, a([1.5, 0.5, NAN, -INF])),
    ("Mod", [a([5.5, -5.5]), a([2.0, 2.0])], {"fmod": 1}, a([1.5, -1.5])),
    ("BitShift", [a([1, 4], u8), a([1, 1], u8)], {"direction": "RIGHT"}, a([0, 2], u8)),
    ("BitShift", [a([1, 2, 64], i8), a([1, 2, 1], i8)], {"direction": "LEFT"}, a([2, 8, -128], i8)),
    ("BitShift", [a([-8, -8, 8, 1], i8), a([1, 9, 9, -1], i8)], {"direction": "RIGHT"},
     a([-4, -1, 0, 0], i8)),  # out-of-range shifts leave the sign fill
    ("BitwiseAnd", [a([12, -1], i32), a([10, 7], i32)], {}, a([8, 7], i32)),
    ("BitwiseOr", [a([12, 0], u8), a([10, 255], u8)], {}, a([14, 255], u8)),
    ("BitwiseXor", [a([12, 5], i64), a([10, 5], i64)], {}, a([6, 0], i64)),
    ("Equal", [a([1.0, 2.0]), a([1.0, 3.0])], {}, a([True, False], bool)),
    ("Equal", [a(["ab", "c"], object), a(["ab", "d"], object)], {}, a([True, False], bool)),
    ("Less", [a([1, 2, 3], i32), a([2], i32)], {}, a([True, False, False], bool)),
    ("Greater", [a([1, 2, 3], i32), a([2], i32)], {}, a([False, False, True], bool)),
    ("LessOrEqual", [a([1, 2, 3], i32), a([2], i32)], {}, a([True, True, False], bool)),
    ("GreaterOrEqual", [a([1.0, NAN, 3.0]), a([2.0])], {}, a([False, False, True], bool)),
    ("And", [a([True, True, False], bool), a([True, False, False], bool)], {}, a([True, False, False], bool)),
    ("Or", [a([True, True, False], bool), a([True, False, False], bool)], {}, a([True, True, False], bool)),
    ("Xor", [a([True, True, False], bool), a([True, False, False], bool)], {}, a([False, True, False], bool)),
    ("Sum", [a([1.0, 2.0]), a([10.0]), a([[100.0], [200.0]])], {}, a([[111.0, 112.0], [211.0, 212.0]])),
    ("Sum", [a([200], u8), a([100], u8)], {}, a([44], u8)),
    ("Max", [a([1, 5], i32), a([3, 2], i32), a([0], i32)], {}, a([3, 5], i32)),
    ("Max", [a([1.0, NAN])], {}, a([1.0, NAN])),
    ("Min", [a([1.0, 5.0]), a([3.0, NAN])], {}, a([1.0, NAN])),
    ("Mean", [a([1.0, 2.0]), a([3.0, 6.0]), a([2.0])], {}, a([2.0, 10 / 3])),
    ("Where", [a([[True], [False]], bool), a([1, 2], i64), a([9], i64)], {}, a([[1, 2], [9, 9]], i64)),
    ("Identity", [a([1, 2], u8)], {}, a([1, 2], u8)),
]


@pytest.mark.parametrize("op,inputs,attrs,want", BY_HAND,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(BY_HAND)])
def test_by_hand(op, inputs, attrs, want):
    check_op(op, inputs, attrs, expected=[want])


# ---- against onnx's reference evaluator ----------------------------------------------------------

FLOAT_UNARY = {  # op -> input range where the op is defined
    "Sqrt": (0.0, 4.0), "Exp": (-4.0, 4.0), "Log": (0.125, 4.0), "Reciprocal": (0.125, 4.0),
    "Floor": (-4.0, 4.0), "Ceil": (-4.0, 4.0), "Round": (-4.0, 4.0), "Sin": (-4.0, 4.0),
    "Cos": (-4.0, 4.0), "Tan": (-1.5, 1.5), "Asin": (-1.0, 1.0), "Acos": (-1.0, 1.0),
    "Atan": (-4.0, 4.0), "Sinh": (-4.0, 4.0), "Cosh": (-4.0, 4.0), "Asinh": (-4.0, 4.0),
    "Acosh": (1.0, 4.0), "Atanh": (-0.875, 0.875), "Erf": (-4.0, 4.0),
}
FLOATS = [np.float16, np.float32, np.float64]
INTS = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64]


@pytest.mark.parametrize("op", sorted(FLOAT_UNARY))
@given(shape=shapes(), dtype=st.sampled_from(FLOATS), data=st.data())
def test_float_unary_matches_onnx(op, shape, dtype, data):
    low, high = FLOAT_UNARY[op]
    if op == "Erf" and dtype == np.float64:
        dtype = np.float32  # onnx's Erf rounds through float32; ours is exact in float64
    check_op(op, [data.draw(arrays(dtype, shape, low=low, high=high))])


@pytest.mark.parametrize("op,dtypes", [("Abs", [f32, i8, i64, u8]), ("Neg", [f32, i8, i64]),
                                       ("Sign", [f32, i32, u8]), ("BitwiseNot", INTS),
                                       ("Not", [np.bool_]), ("Identity", [f32, i64, np.bool_])])
@given(shape=shapes(), data=st.data())
def test_unary_matches_onnx(op, dtypes, shape, data):
    dtype = data.draw(st.sampled_from(dtypes))
    check_op(op, [data.draw(arrays(dtype, shape, low=-200, high=200))])


def specials(shape):
    """float32 arrays mixing finite values, infinities and NaN."""
    n = int(np.prod(shape))
    return st.lists(st.sampled_from([0.0, -1.5, 2.0, INF, -INF, NAN]), min_size=n, max_size=n).map(
        lambda xs: np.array(xs, f32).reshape(shape))


@given(shape=shapes(), neg=st.integers(0, 1), pos=st.integers(0, 1), data=st.data())
def test_isinf_isnan_match_onnx(shape, neg, pos, data):
    x = data.draw(specials(shape))
    check_op("IsInf", [x], {"detect_negative": neg, "detect_positive": pos})
    check_op("IsNaN", [x])


def pair(data, shape, dtype, low=-4.0, high=4.0, nonzero=False):
    """Two arrays whose shapes broadcast together (in either order); ``nonzero`` keeps B off 0."""
    first = data.draw(arrays(dtype, shape, low=low, high=high))
    second = data.draw(arrays(dtype, data.draw(broadcastable_shapes(shape)), low=low, high=high))
    if data.draw(st.booleans()):
        first, second = second, first
    if nonzero:
        second = np.where(second == 0, np.ones_like(second), second)
    return first, second


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
@given(shape=shapes(), dtype=st.sampled_from([f32, np.float64, i8, u8, i64]), data=st.data())
def test_arithmetic_matches_onnx(op, shape, dtype, data):
    check_op(op, list(pair(data, shape, dtype, low=-128, high=127)))


@given(shape=shapes(), dtype=st.sampled_from([f32, i8, u8, i32, i64]), data=st.data())
def test_div_matches_onnx(shape, dtype, data):
    check_op("Div", list(pair(data, shape, dtype, low=-100, high=100, nonzero=True)))


@given(shape=shapes(), fmod=st.integers(0, 1), dtype=st.sampled_from([f32, np.float64, i8, i32, u8]),
       data=st.data())
def test_mod_matches_onnx(shape, fmod, dtype, data):
    check_op("Mod", list(pair(data, shape, dtype, low=-20, high=20, nonzero=True)), {"fmod": fmod})


@given(shape=shapes(), types=st.sampled_from([(f32, f32), (f32, i64), (f32, i32), (i32, f32), (i64, i64),
                                              (np.float64, f32)]), data=st.data())
def test_pow_matches_onnx(shape, types, data):
    base = data.draw(arrays(types[0], shape, low=0.5, high=4))
    exponent = data.draw(arrays(types[1], data.draw(broadcastable_shapes(shape)), low=0, high=4))
    if data.draw(st.booleans()):
        base = -base  # a negative base: integral exponents only, else NaN on both sides
        exponent = exponent.round().astype(types[1])
    check_op("Pow", [base, exponent])


@given(shape=shapes(), direction=st.sampled_from(["LEFT", "RIGHT"]), dtype=st.sampled_from(INTS),
       data=st.data())
def test_bitshift_matches_onnx(shape, direction, dtype, data):
    x = data.draw(arrays(dtype, shape, low=-(2 ** 62), high=2 ** 62))
    y = data.draw(arrays(dtype, data.draw(broadcastable_shapes(shape)), low=-2, high=70))
    check_op("BitShift", [x, y], {"direction": direction})


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
@given(shape=shapes(), dtype=st.sampled_from(INTS), data=st.data())
def test_bitwise_matches_onnx(op, shape, dtype, data):
    check_op(op, list(pair(data, shape, dtype, low=-(2 ** 62), high=2 ** 62)))


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
@given(shape=shapes(), dtype=st.sampled_from([f32, i32, u8]), data=st.data())
def test_comparison_matches_onnx(op, shape, dtype, data):
    check_op(op, list(pair(data, shape, dtype, low=0, high=3)))  # small range: ties are common


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
@given(shape=shapes(), data=st.data())
def test_logic_matches_onnx(op, shape, data):
    check_op(op, list(pair(data, shape, np.bool_)))


@pytest.mark.parametrize("op,dtypes", [("Sum", [f32, i32, u8]), ("Max", [f32, i8, u8]), ("Min", [f32, i64]),
                                       ("Mean", [f32, np.float64])])
@given(shape=shapes(), n=st.integers(1, 4), data=st.data())
def test_variadic_matches_onnx(op, dtypes, shape, n, data):
    dtype = data.draw(st.sampled_from(dtypes))
    # the first input has the full shape (onnx's Mean accumulates into a copy of it)
    inputs = [data.draw(arrays(dtype, shape, low=-100, high=100))]
    inputs += [data.draw(arrays(dtype, data.draw(broadcastable_shapes(shape)), low=-100, high=100))
               for _ in range(n - 1)]
    check_op(op, inputs)


@given(shape=shapes(), dtype=st.sampled_from([f32, i64, np.bool_]), data=st.data())
def test_where_matches_onnx(shape, dtype, data):
    cond = data.draw(arrays(np.bool_, data.draw(broadcastable_shapes(shape))))
    x, y = pair(data, shape, dtype)
    check_op("Where", [cond, x, y])


# ---- shape/attribute errors and older opsets -----------------------------------------------------

@pytest.mark.parametrize("op,inputs,attrs,error", [
    ("Add", [a([1.0]), a([1], i32)], {}, ShapeError),
    ("Add", [a([1.0, 2.0]), a([1.0, 2.0, 3.0])], {}, ShapeError),
    ("Not", [a([1.0])], {}, ShapeError),
    ("Sqrt", [a([4], i32)], {}, ShapeError),
    ("BitwiseAnd", [a([1.0]), a([1.0])], {}, ShapeError),
    ("Where", [a([1.0]), a([1.0]), a([1.0])], {}, ShapeError),
    ("Mod", [a([1.0]), a([1.0])], {"fmod": 2}, InvalidModel),
    ("BitShift", [a([1], u8), a([1], u8)], {"direction": "UP"}, InvalidModel),
    ("BitShift", [a([1], u8), a([1], u8)], {}, InvalidModel),
])
def test_rejects_bad_nodes(op, inputs, attrs, error):
    with pytest.raises(error):
        import_onnx(single_op_model(op, inputs, attrs))


def test_opset1_consumed_inputs_is_dropped():
    check_op("Abs", [a([-1.0])], {"consumed_inputs": [0]}, opset=1, expected=[a([1.0])])


def test_opset6_broadcast_attribute_becomes_numpy_broadcasting():
    x, y = a([[1.0, 2.0], [3.0, 4.0]]), a([10.0, 20.0])
    check_op("Div", [x, y], {"broadcast": 1}, opset=6, expected=[a([[0.1, 0.1], [0.3, 0.2]])])


def test_opset6_broadcast_with_axis_is_unsupported():
    model = single_op_model("Add", [a([[1.0, 2.0]]), a([1.0])], {"broadcast": 1, "axis": 0}, opset=6)
    with pytest.raises(UnsupportedOperator, match="axis"):
        import_onnx(model)


def test_opset6_broadcast_with_end_aligned_axis_is_numpy_broadcasting():
    x, y = a([[1.0, 2.0], [3.0, 4.0]]), a([10.0, 20.0])
    check_op("Add", [x, y], {"broadcast": 1, "axis": 1}, opset=6, expected=[a([[11.0, 22.0], [13.0, 24.0]])])
