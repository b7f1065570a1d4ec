"""The llvm target's element-wise, activation and cast definitions against the reference interpreter,
on the dtypes and values the op tests do not reach: every integer width, wrap-around, infinities,
NaN and signed zeros (each case must compile: an unsupported lowering fails here)."""

import itertools
import math

import numpy as np
import pytest
from onnx import TensorProto, helper

from tensoregg.errors import UnsupportedOperator
from tensoregg.frontends.onnx import import_onnx
from tensoregg.testing import check_native, single_op_model

F16, F32, F64 = np.float16, np.float32, np.float64
FLOATS = [F16, F32, F64]
INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
NATIVE = [np.bool_, *INTS, *FLOATS]
RNG = np.random.default_rng(0)
SPECIALS = [0.0, -0.0, math.inf, -math.inf, math.nan, 1.0, -1.0, 0.5, -2.5, 30.0, -30.0, 100.0, -100.0,
            1e-3, -1e-3, 60000.0, -60000.0]


def native(op, inputs, attrs=None, *, n_outputs=1, constant=()):
    """Compile the one-op model for llvm and compare it with the reference interpreter."""
    model = single_op_model(op, inputs, attrs, n_outputs=n_outputs, constant=constant)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if a is not None and i not in constant}
    graph = import_onnx(model)
    assert [n.op for n in graph.nodes] == [op]
    with np.errstate(all="ignore"):
        assert check_native(graph, feeds, require=True)


def full_range(dtype, n=64):
    """``n`` integers of ``dtype`` over its whole range, its extremes, 0 and +-1 included."""
    info = np.iinfo(dtype)
    edges = [info.min, info.max, 0, 1, info.max - 1] + ([-1, info.min + 1] if info.min else [2, 3])
    return np.concatenate([np.array(edges, dtype), RNG.integers(info.min, info.max, n - len(edges),
                                                                 dtype=dtype, endpoint=True)])


def floats(dtype, n=64):
    """Specials and random values of ``dtype`` over several magnitudes."""
    x = np.array(SPECIALS, F64)
    x = np.concatenate([x, RNG.standard_normal(n - len(x)) * 10.0 ** RNG.integers(-3, 3, n - len(x))])
    return x.astype(dtype)


# ---- arithmetic ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("types", [(np.int8, np.int8), (np.uint8, np.uint8), (np.int16, np.int16),
                                   (np.int32, np.int32), (np.int64, np.int64), (np.uint32, np.uint32),
                                   (np.uint64, np.uint64), (np.int32, np.int64), (np.int64, np.int8),
                                   (np.uint8, np.int8), (np.int16, np.uint32)])
def test_int_pow_wraps(types):
    x = np.tile(full_range(types[0], 32), 8)
    low = max(int(np.iinfo(types[1]).min) + 1, -5)  # numpy raises on the exponent MIN
    high = np.iinfo(types[1]).max
    y = np.concatenate([RNG.integers(low, 70, 128), RNG.integers(low, high, 128, dtype=types[1],
                                                                 endpoint=True)]).astype(types[1])
    native("Pow", [x, y])


@pytest.mark.parametrize("exponent", [[0], [2], [3, -1, 0], [37, 5], [200]])
def test_int_pow_constant_exponent(exponent):
    native("Pow", [full_range(np.int32).reshape(-1, 1), np.array(exponent, np.int16)], constant=(1,))


@pytest.mark.parametrize("types", [(np.uint64, np.int64), (np.int8, np.uint64)])
def test_int_pow_in_float64(types):
    """numpy promotes uint64 with a signed integer to float64 (powers kept inside the base's type)."""
    x, y = [0, 1, 2, 3, 5, 7, 2, 4], [0, 1, 2, 4, 3, 2, 6, 3]
    native("Pow", [np.array(x, types[0]), np.array(y, types[1])])


@pytest.mark.parametrize("types", [(F16, np.int8), (F16, np.int32), (F32, np.int64), (F32, np.uint32),
                                   (F64, F16), (F16, F64), (np.int8, F16), (np.int32, F32), (np.int64, F64),
                                   (np.uint8, F32)])
def test_mixed_pow(types):
    float_base = np.dtype(types[0]).kind == "f"
    x = floats(types[0]) / 10 if float_base else RNG.integers(1, 4, 64).astype(types[0])  # 0 ** -1: inf
    y = RNG.integers(-3, 4, 64).astype(types[1])
    native("Pow", [x, y])


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", INTS)
def test_int_mod(dtype, fmod):
    x = full_range(dtype, 48)
    native("Mod", [np.repeat(x, 48), np.tile(x, 48)], {"fmod": fmod})


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", FLOATS)
def test_float_mod(dtype, fmod):
    x = floats(dtype, 40)
    native("Mod", [np.repeat(x, 40), np.tile(x, 40)], {"fmod": fmod})


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", INTS)
def test_bitshift(dtype, direction):
    bits = np.dtype(dtype).itemsize * 8
    x = full_range(dtype, 32)
    shifts = np.arange(0 if np.dtype(dtype).kind == "u" else -3, bits + 3).astype(dtype)
    native("BitShift", [np.repeat(x, len(shifts)), np.tile(shifts, len(x))], {"direction": direction})


@pytest.mark.parametrize("dtype", [*FLOATS, np.int8, np.int64, np.uint8, np.uint64])
def test_sign(dtype):
    native("Sign", [floats(dtype) if np.dtype(dtype).kind == "f" else full_range(dtype)])


@pytest.mark.parametrize("neg,pos", list(itertools.product([0, 1], [0, 1])))
@pytest.mark.parametrize("dtype", FLOATS)
def test_isinf(dtype, neg, pos):
    native("IsInf", [floats(dtype)], {"detect_negative": neg, "detect_positive": pos})


# ---- activations --------------------------------------------------------------------------------------

ACTIVATIONS = [("Relu", {}), ("LeakyRelu", {"alpha": 0.3}), ("ThresholdedRelu", {"alpha": 0.1}),
               ("Elu", {"alpha": 0.7}), ("Selu", {}), ("Celu", {"alpha": 1.3}), ("Sigmoid", {}),
               ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}), ("Softplus", {}),
               ("Softsign", {}), ("Mish", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
               ("Swish", {"alpha": 0.6}), ("Shrink", {"bias": 0.3, "lambd": 0.1}), ("Tanh", {})]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op,attrs", ACTIVATIONS, ids=[f"{op}-{i}" for i, (op, _) in enumerate(ACTIVATIONS)])
def test_activation(op, attrs, dtype):
    native(op, [floats(dtype, 96).reshape(4, 24)], attrs)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint8, np.int64])
def test_integer_shrink(dtype):
    x = full_range(dtype) // 2  # x - bias stays inside the type (float -> int is undefined outside it)
    native("Shrink", [x], {"bias": 1.5, "lambd": 2.0})


@pytest.mark.parametrize("dtype", [F16, F32, np.int8, np.int64, np.uint16])
def test_prelu_broadcasts_slope(dtype):
    x = floats(dtype, 60) if np.dtype(dtype).kind == "f" else full_range(dtype, 60)
    slope = np.array([[2], [3], [-1 if np.dtype(dtype).kind != "u" else 7], [0], [5]], dtype)
    native("PRelu", [x.reshape(3, 5, 4), slope])


@pytest.mark.parametrize("dtype", FLOATS)
def test_swiglu(dtype):
    a = floats(dtype, 60).reshape(6, 10)
    native("SwiGLU", [a, a[::-1, ::-1].copy()], {"alpha": 1.7})


# ---- casts, dropout -----------------------------------------------------------------------------------

def castable(values, src, dst):
    """``values`` (float64) as ``src``, those outside ``dst``'s range made 0 where ``src`` is a float
    and ``dst`` an integer (undefined in ONNX; platform-dependent in numpy)."""
    if np.dtype(src).kind in "iu":
        info = np.iinfo(src)
        values = np.clip(np.nan_to_num(values), info.min, info.max)
    with np.errstate(all="ignore"):
        x = values.astype(src)
    if np.dtype(src).kind == "f" and np.dtype(dst).kind in "iu":
        info = np.iinfo(dst)
        wide, upper = x.astype(F64), float(info.max) + 1  # 2 ** bits (unsigned) or 2 ** (bits - 1)
        x[~((wide >= info.min) & (wide < upper))] = 0
    return x


@pytest.mark.parametrize("src,dst", list(itertools.product(NATIVE, NATIVE)))
def test_cast(src, dst):
    values = np.concatenate([floats(F64, 48) * 1000, full_range(np.int64, 16).astype(F64)])
    x = castable(values, src, dst)
    native("Cast", [x], {"to": helper.np_dtype_to_tensor_dtype(np.dtype(dst))})
    native("CastLike", [x, np.zeros((2, 1), dst)])


def test_dropout_mask():
    x = floats(F32).reshape(8, 8)
    native("Dropout", [x], n_outputs=2)
    native("Dropout", [x, np.array(0.0, F32), np.array(True)], n_outputs=2, constant=(1, 2))
    native("Dropout", [x, np.array(0.3, F32)], n_outputs=1, constant=(1,))


def test_unrepresentable_casts_are_unsupported():
    model = single_op_model("Cast", [np.zeros(3, F32)], {"to": TensorProto.STRING})
    with pytest.raises(UnsupportedOperator, match="target type object"):
        check_native(import_onnx(model), {"in0": np.zeros(3, F32)}, require=True)


# ---- linear quantization ------------------------------------------------------------------------------

LAYOUTS = [({}, ()), ({}, (1,)), ({"axis": 1}, (5,)), ({"axis": -1}, (6,)),
           ({"axis": 1, "block_size": 2}, (4, 3, 6)), ({"axis": 2, "block_size": 4}, (4, 5, 2))]


@pytest.mark.parametrize("attrs,param_shape", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("x_dtype,s_dtype", [(F32, F32), (F16, F16), (F32, F16), (np.int32, F32)])
def test_quantize(attrs, param_shape, dtype, x_dtype, s_dtype):
    x = (RNG.standard_normal((4, 5, 6)) * 300).astype(x_dtype)
    x.reshape(-1)[:4] = [0.5, 1.5, 2.5, -0.5]  # halves round to even
    scale = RNG.uniform(0.5, 3, param_shape).astype(s_dtype)
    zero_point = RNG.integers(0, 20, param_shape).astype(dtype)
    native("QuantizeLinear", [x, scale, zero_point], attrs)
    native("QuantizeLinear", [x, scale], {**attrs, "output_dtype": helper.np_dtype_to_tensor_dtype(
        np.dtype(dtype))})


def test_quantize_precision():
    x, scale = (RNG.standard_normal(40) * 300).astype(F32), np.array(0.37, F32)
    native("QuantizeLinear", [x, scale, np.uint8(3)], {"precision": helper.np_dtype_to_tensor_dtype(
        np.dtype(F16))})


@pytest.mark.parametrize("attrs,param_shape", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32])
@pytest.mark.parametrize("s_dtype,out", [(F32, 0), (F16, 0), (F32, F16), (F16, F32)])
def test_dequantize(attrs, param_shape, dtype, s_dtype, out):
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max, (4, 5, 6), endpoint=True).astype(dtype)
    scale = RNG.uniform(0.5, 3, param_shape).astype(s_dtype)
    attrs = {**attrs, "output_dtype": out and helper.np_dtype_to_tensor_dtype(np.dtype(out))}
    native("DequantizeLinear", [x, scale], attrs)
    if dtype != np.int32:
        zero_point = RNG.integers(0, 20, param_shape).astype(dtype)
        native("DequantizeLinear", [x, scale, zero_point], attrs)


@pytest.mark.parametrize("x", [np.zeros((3, 4), F32), np.arange(12, dtype=F32).reshape(3, 4),
                               -np.arange(12, dtype=F32), floats(F32)[5:] / 7, np.zeros((0, 3), F32),
                               np.array(5.0, F32)])
def test_dynamic_quantize(x):
    native("DynamicQuantizeLinear", [x], n_outputs=3)
