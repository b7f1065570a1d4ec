import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensoregg.errors import InvalidModel, ShapeError
from tensoregg.frontends.onnx import import_onnx
from tensoregg.testing import arrays, broadcastable_shapes, check_op, shapes, single_op_model

f16, f32, f64, i32 = np.float16, np.float32, np.float64, np.int32
FLOATS = [f16, f32, f64]


def a(values, dtype=f32):
    return np.array(values, dtype)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


E1 = math.e - 1  # exp(1) - 1
SOFT = [math.exp(v) / (math.exp(1) + math.exp(2) + math.exp(3)) for v in (1, 2, 3)]

# ---- hand-computed values ------------------------------------------------------------------------

BY_HAND = [
    ("Relu", [a([-1.0, 0.0, 2.5])], {}, a([0.0, 0.0, 2.5])),
    ("Relu", [a([-3, 4], i32)], {}, a([0, 4], i32)),
    ("Sigmoid", [a([0.0, 1.0])], {}, a([0.5, sigmoid(1.0)])),
    ("Tanh", [a([0.0, 1.0])], {}, a([0.0, math.tanh(1.0)])),
    ("LeakyRelu", [a([-2.0, 3.0])], {}, a([-0.02, 3.0])),
    ("LeakyRelu", [a([-2.0, 3.0])], {"alpha": 0.5}, a([-1.0, 3.0])),
    ("Elu", [a([-1.0, 2.0])], {"alpha": 2.0}, a([-2 * (1 - math.exp(-1)), 2.0])),
    ("Selu", [a([-1.0, 2.0])], {"alpha": 2.0, "gamma": 3.0}, a([3 * 2 * (math.exp(-1) - 1), 6.0])),
    ("Celu", [a([-2.0, 2.0])], {"alpha": 2.0}, a([2 * (math.exp(-1) - 1), 2.0])),
    ("ThresholdedRelu", [a([0.5, 1.0, 1.5])], {}, a([0.0, 0.0, 1.5])),
    ("Softplus", [a([0.0, 1.0, 100.0])], {}, a([math.log(2), math.log(1 + math.e), 100.0])),
    ("Softsign", [a([-1.0, 3.0])], {}, a([-0.5, 0.75])),
    ("Mish", [a([0.0, 1.0])], {}, a([0.0, math.tanh(math.log(1 + math.e))])),
    ("HardSigmoid", [a([-5.0, 0.0, 1.0, 5.0])], {}, a([0.0, 0.5, 0.7, 1.0])),
    ("HardSigmoid", [a([1.0])], {"alpha": 0.5, "beta": 0.25}, a([0.75])),
    ("HardSwish", [a([-4.0, 0.0, 1.0, 4.0])], {}, a([0.0, 0.0, 1 * (1 / 6 + 0.5), 4.0])),
    ("Swish", [a([0.0, 1.0])], {"alpha": 2.0}, a([0.0, sigmoid(2.0)])),
    ("Gelu", [a([0.0, 1.0, -1.0])], {}, a([0.0, 0.8413447460685429, -0.15865525393145707])),
    ("Gelu", [a([1.0])], {"approximate": "tanh"},
     a([0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * 1.044715))])),
    ("Shrink", [a([-2.0, 0.3, 2.0])], {"lambd": 1.0, "bias": 0.5}, a([-1.5, 0.0, 1.5])),
    ("Shrink", [a([-3, 0, 3], i32)], {"lambd": 1.0, "bias": 1.0}, a([-2, 0, 2], i32)),
    ("SwiGLU", [a([0.0, 1.0]), a([5.0, 2.0])], {}, a([0.0, 2 * sigmoid(1.0)])),
    ("PRelu", [a([[-2.0, 3.0], [-4.0, -1.0]]), a([0.5, 2.0])], {}, a([[-1.0, 3.0], [-2.0, -2.0]])),
    ("Clip", [a([-2.0, 0.5, 3.0]), a(-1.0), a(1.0)], {}, a([-1.0, 0.5, 1.0])),
    ("Clip", [a([-2, 5], i32), None, a(1, i32)], {}, a([-2, 1], i32)),
    ("Clip", [a([-2.0, 5.0]), a(3.0), a(1.0)], {}, a([1.0, 1.0])),  # min > max: all max
    ("Softmax", [a([1.0, 2.0, 3.0])], {}, a(SOFT)),
    ("Softmax", [a([[1.0, 1.0], [1000.0, 1000.0]])], {"axis": 0}, a([[0.0, 0.0], [1.0, 1.0]])),
    ("LogSoftmax", [a([1.0, 2.0, 3.0])], {}, a([math.log(p) for p in SOFT])),
    ("Hardmax", [a([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])], {}, a([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])),
]


@pytest.mark.parametrize("op,inputs,attrs,want", BY_HAND, ids=[f"{c[0]}-{i}" for i, c in enumerate(BY_HAND)])
def test_by_hand(op, inputs, attrs, want):
    check_op(op, inputs, attrs, expected=[want])


OLD_FORMS = [  # (op, opset, inputs, attrs, expected): older opset forms through the adapt hooks
    ("Relu", 1, [a([-1.0, 1.0])], {"consumed_inputs": [0]}, a([0.0, 1.0])),
    ("LeakyRelu", 1, [a([-1.0, 1.0])], {"consumed_inputs": [0], "alpha": 0.5}, a([-0.5, 1.0])),
    ("Clip", 6, [a([-2.0, 0.5, 3.0])], {"min": -1.0, "max": 1.0}, a([-1.0, 0.5, 1.0])),
    ("Clip", 6, [a([-2.0, 0.5, 3.0])], {"max": 1.0}, a([-2.0, 0.5, 1.0])),
    ("Clip", 1, [a([-2.0, 3.0], f64)], {"min": 0.0, "consumed_inputs": [0]}, a([0.0, 3.0], f64)),
    ("PRelu", 6, [a([[[-1.0], [-1.0]]]), a([0.5, 2.0])], {}, a([[[-0.5], [-2.0]]])),  # channel slope
    ("Softmax", 11, [a([[[1.0], [2.0], [3.0]]])], {}, a([[[p] for p in SOFT]])),  # over axes 1, 2
    ("Softmax", 9, [a([[1.0, 2.0, 3.0]])], {}, a([SOFT])),  # default axis 1 is the last: plain Softmax
    ("LogSoftmax", 6, [a([[[1.0, 2.0, 3.0]]])], {"axis": 1}, a([[[math.log(p) for p in SOFT]]])),
    ("Hardmax", 11, [a([[[1.0, 3.0], [3.0, 0.0]]])], {}, a([[[0.0, 1.0], [0.0, 0.0]]])),
]


@pytest.mark.parametrize("op,opset,inputs,attrs,want", OLD_FORMS,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(OLD_FORMS)])
def test_old_forms(op, opset, inputs, attrs, want):
    check_op(op, inputs, attrs, opset=opset, expected=[want])


@pytest.mark.parametrize("op,inputs,attrs,error", [
    ("Sigmoid", [a([1, 2], i32)], {}, ShapeError),
    ("PRelu", [a([1.0, 2.0]), a([1.0, 2.0, 3.0])], {}, ShapeError),
    ("PRelu", [a([1.0]), a([1.0, 2.0])], {}, ShapeError),  # slope broadcasts only to X
    ("Clip", [a([1.0]), a([1.0, 2.0])], {}, ShapeError),
    ("Softmax", [a([1.0])], {"axis": 1}, ShapeError),
    ("SwiGLU", [a([1.0]), a([1.0, 2.0])], {}, ShapeError),
    ("Gelu", [a([1.0])], {"approximate": "erf"}, InvalidModel),
])
def test_bad_nodes(op, inputs, attrs, error):
    with pytest.raises(error):
        import_onnx(single_op_model(op, inputs, attrs))


# ---- against onnx's reference evaluator ----------------------------------------------------------

UNARY = {  # op -> attribute strategies
    "Relu": {}, "Sigmoid": {}, "Tanh": {}, "Softplus": {}, "Softsign": {}, "Mish": {}, "HardSwish": {},
    "LeakyRelu": {"alpha": st.floats(0.0, 1.0)},
    "Elu": {"alpha": st.floats(0.1, 2.0)},
    "Selu": {"alpha": st.floats(0.1, 2.0), "gamma": st.floats(0.1, 2.0)},
    "Celu": {"alpha": st.floats(0.5, 2.0)},
    "ThresholdedRelu": {"alpha": st.floats(-1.0, 2.0)},
    "HardSigmoid": {"alpha": st.floats(0.0, 1.0), "beta": st.floats(-1.0, 1.0)},
    "Swish": {"alpha": st.floats(0.1, 2.0)},
    "Gelu": {"approximate": st.sampled_from(["none", "tanh"])},
    "Shrink": {"lambd": st.floats(0.0, 2.0), "bias": st.floats(-1.0, 1.0)},
}


@pytest.mark.parametrize("op", sorted(UNARY))
@given(shape=shapes(min_rank=1), dtype=st.sampled_from(FLOATS), data=st.data())
def test_unary_matches_onnx(op, shape, dtype, data):
    attrs = data.draw(st.fixed_dictionaries(UNARY[op]))
    if op in ("Gelu", "HardSwish") and dtype == f64:
        dtype = f32  # onnx rounds Erf and HardSwish's 1/6 through float32; ours are exact in float64
    check_op(op, [data.draw(arrays(dtype, shape))], attrs)


@given(shape=shapes(), dtype=st.sampled_from([f32, i32, np.int64]), data=st.data())
def test_prelu_matches_onnx(shape, dtype, data):
    slope = data.draw(arrays(dtype, data.draw(broadcastable_shapes(shape))))
    check_op("PRelu", [data.draw(arrays(dtype, shape)), slope])


@given(shape=shapes(), dtype=st.sampled_from([f32, f64, i32, np.uint8]), low=st.booleans(),
       high=st.booleans(), data=st.data())
def test_clip_matches_onnx(shape, dtype, low, high, data):
    bound = arrays(dtype, (), low=0 if dtype == np.uint8 else -4, high=4)
    x = data.draw(arrays(dtype, shape, low=0 if dtype == np.uint8 else -4))
    check_op("Clip", [x, data.draw(bound) if low else None, data.draw(bound) if high else None])


@given(shape=shapes(), dtype=st.sampled_from(FLOATS), data=st.data())
def test_swiglu_matches_onnx(shape, dtype, data):
    check_op("SwiGLU", [data.draw(arrays(dtype, shape)), data.draw(arrays(dtype, shape))],
             {"alpha": data.draw(st.floats(0.1, 2.0))})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@given(shape=shapes(min_rank=1), dtype=st.sampled_from(FLOATS), data=st.data())
def test_softmax_family_matches_onnx(op, shape, dtype, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    check_op(op, [data.draw(arrays(dtype, shape))], {"axis": axis})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@given(shape=shapes(min_rank=1), opset=st.sampled_from([1, 11]), data=st.data())
def test_softmax_family_before_13_matches_onnx_on_2d(op, shape, opset, data):
    """onnx's evaluator only knows the current form: compare with it on the input coerced to 2-D."""
    rank = len(shape)
    axis = data.draw(st.integers(-rank if opset == 11 else 0, rank - 1))  # opset 1 had no negative axes
    x = data.draw(arrays(f32, shape))
    k = axis % len(shape)
    flat = x.reshape(int(np.prod(shape[:k])), -1)
    want = check_op(op, [flat], {"axis": 1})[0].reshape(shape)
    check_op(op, [x], {"axis": axis}, opset=opset, expected=[want])
