"""The llvm target's reductions, normalizations and pools against the reference interpreter, on the
forms the op tests do not reach (each case must compile: an unsupported lowering fails here)."""

import numpy as np
import pytest

from tensoregg.errors import UnsupportedOperator
from tensoregg.frontends.onnx import import_onnx
from tensoregg.testing import check_native, single_op_model

F16, F32, F64, I64 = np.float16, np.float32, np.float64, np.int64
RNG = np.random.default_rng(0)


def native(op, inputs, attrs=None, *, n_outputs=1, constant=(), opset=None):
    """Compile the one-op model for llvm and compare it with the reference interpreter."""
    model = single_op_model(op, inputs, attrs, n_outputs=n_outputs, constant=constant, opset=opset)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if a is not None and i not in constant}
    assert check_native(import_onnx(model), feeds, require=True)


def rand(*shape, dtype=F32, low=-1.0, high=3.0):
    """Uniform values whose sums do not cancel (native sums round in another order than numpy's)."""
    return RNG.uniform(low, high, shape).astype(dtype)


# ---- reductions -------------------------------------------------------------------------------------

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("axes", [[1], [0, 2], [-1], [], [0, 1, 2]])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_forms(op, axes, keepdims):
    x = np.abs(rand(3, 4, 70)) + 0.5 if op == "ReduceLogSum" else rand(3, 4, 70)
    if op == "ReduceProd":
        x = (x / 4 + 1).astype(F32)
    native(op, [x, np.array(axes, I64)], {"keepdims": keepdims}, constant=(1,))


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_float16_and_noop(op):
    x = (np.abs(rand(2, 3, 5)) + 0.5).astype(F16)
    native(op, [x, np.array([2], I64)], constant=(1,))
    native(op, [x, np.zeros(0, I64)], {"noop_with_empty_axes": 1}, constant=(1,))


@pytest.mark.parametrize("op", [o for o in REDUCE_OPS if o != "ReduceLogSumExp"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8])
def test_reduce_integers(op, dtype):
    x = RNG.integers(0 if op in ("ReduceLogSum", "ReduceL2") else -50, 100, (3, 5, 4)).astype(dtype)
    native(op, [x, np.array([1], I64)], {"keepdims": 0}, constant=(1,))
    native(op, [x, np.array([0, 2], I64)], constant=(1,))


def test_reduce_nan_and_inf():
    x = rand(3, 6)
    x[0, 2], x[1, 1], x[2, :] = np.nan, np.inf, -np.inf
    for op in ("ReduceMax", "ReduceMin", "ReduceLogSumExp", "ReduceSum"):
        native(op, [x, np.array([1], I64)], constant=(1,))


def test_reduce_bool():
    x = RNG.integers(0, 2, (4, 3)).astype(bool)
    native("ReduceMax", [x, np.array([0], I64)], constant=(1,))
    native("ReduceMin", [x, np.array([1], I64)], {"keepdims": 0}, constant=(1,))
    with pytest.raises(UnsupportedOperator):
        native("ReduceSum", [x, np.array([1], I64)], constant=(1,))


# ---- ArgMax, ArgMin, softmax family, CumSum ---------------------------------------------------------

@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_arg_ties_and_nan(op, last, keepdims):
    x = RNG.integers(-2, 3, (4, 5, 6)).astype(F32)  # many ties
    x[1, 2, 3] = x[2, 0, 1] = x[2, 4, 1] = np.nan
    for axis in (0, 1, -1):
        native(op, [x], {"axis": axis, "keepdims": keepdims, "select_last_index": last})
    attrs = {"axis": 1, "keepdims": keepdims, "select_last_index": last}
    native(op, [np.nan_to_num(x).astype(np.int32)], attrs)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("dtype", [F16, F32, F64])
def test_softmax_family(op, dtype):
    x = (rand(2, 3, 70) * 5).astype(dtype)
    x[0, 1, :] = 1.0  # ties for Hardmax
    x[1, 2, 5] = np.nan
    x[1, 0, :] = -np.inf
    for axis in (0, 1, 2):
        native(op, [x], {"axis": axis})


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("dtype", [F32, np.int32, F16])
def test_cumsum(exclusive, reverse, dtype):
    x = RNG.integers(-9, 10, (3, 7, 5)).astype(dtype)
    for axis in (0, 1, -1):
        native("CumSum", [x, np.array(axis, I64)], {"exclusive": exclusive, "reverse": reverse},
               constant=(1,))


# ---- pools ------------------------------------------------------------------------------------------

WINDOWS = [  # (spatial shape, attributes)
    ((9,), {"kernel_shape": [3]}),
    ((9,), {"kernel_shape": [2], "strides": [2], "pads": [1, 1], "ceil_mode": 1}),
    ((7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((7, 8), {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [0, 1, 2, 0], "ceil_mode": 1}),
    ((8, 9), {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 2, 1, 0]}),
    ((8, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((8, 9), {"kernel_shape": [2, 4], "strides": [3, 2], "auto_pad": "SAME_LOWER"}),
    ((8, 9), {"kernel_shape": [3, 3], "strides": [2, 1], "auto_pad": "VALID"}),
    ((4, 5, 6), {"kernel_shape": [2, 3, 2], "strides": [1, 2, 2], "pads": [1, 0, 1, 0, 1, 1]}),
    ((5, 70), {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize("spatial, attrs", WINDOWS)
@pytest.mark.parametrize("order", [0, 1])
def test_max_pool(spatial, attrs, order):
    x = rand(2, 3, *spatial, low=-4, high=4)
    x.reshape(-1)[::7] = 1.0  # ties
    x.reshape(-1)[5::23] = np.nan
    native("MaxPool", [x], {**attrs, "storage_order": order}, n_outputs=2)
    native("MaxPool", [x], attrs)
    for dtype in (np.int8, np.uint8):
        native("MaxPool", [RNG.integers(-128 if dtype == np.int8 else 0, 128, x.shape).astype(dtype)], attrs,
               n_outputs=2)
    native("MaxPool", [np.nan_to_num(x).astype(F16)], attrs)


@pytest.mark.parametrize("spatial, attrs", WINDOWS)
@pytest.mark.parametrize("include_pad", [0, 1])
def test_average_pool(spatial, attrs, include_pad):
    x = rand(2, 3, *spatial)
    native("AveragePool", [x], {**attrs, "count_include_pad": include_pad})
    native("AveragePool", [x.astype(F16)], {**attrs, "count_include_pad": include_pad})


@pytest.mark.parametrize("spatial, attrs", WINDOWS[::2])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(spatial, attrs, p):
    native("LpPool", [rand(2, 3, *spatial)], {**attrs, "p": p})


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (2, 3, 4, 70), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("dtype", [F32, F16])
def test_global_pools(op, shape, dtype):
    native(op, [rand(*shape, dtype=dtype)])
    if op == "GlobalLpPool":
        native(op, [rand(*shape, dtype=dtype)], {"p": 3})


# ---- normalizations ---------------------------------------------------------------------------------

def params(c, dtype=F32):
    return [rand(c, dtype=dtype), rand(c, dtype=dtype), rand(c, dtype=dtype), rand(c, dtype=dtype, low=0.5)]


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 70), (2, 3, 4, 5)])
@pytest.mark.parametrize("dtype", [F32, F16, F64])
def test_batch_norm(shape, dtype):
    x = rand(*shape, dtype=dtype)
    native("BatchNormalization", [x, *params(shape[1], dtype)])
    native("BatchNormalization", [x, *params(shape[1])[:2], *params(shape[1], F64)[2:]])  # mixed dtypes
    native("BatchNormalization", [x, *params(shape[1], dtype)], {"training_mode": 1, "momentum": 0.8},
           n_outputs=3)
    native("BatchNormalization", [x, *params(shape[1], dtype)], {"training_mode": 1})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference divides 0 by float16(1e-9) = 0
@pytest.mark.parametrize("shape", [(2, 3, 70), (2, 4, 3, 5), (1, 2, 1)])
@pytest.mark.parametrize("dtype", [F32, F16])
def test_instance_and_group_norm(shape, dtype):
    x = rand(*shape, dtype=dtype)
    c = shape[1]
    native("InstanceNormalization", [x, *params(c, dtype)[:2]], {"epsilon": 1e-3})
    for groups in (1, c):
        native("GroupNormalization", [x, *params(c, dtype)[:2]], {"num_groups": groups})
    x[0] = 1.5  # a constant instance: E[x^2] - E[x]^2 is 0 exactly
    native("GroupNormalization", [x, *params(c, dtype)[:2]], {"num_groups": 1})
    native("MeanVarianceNormalization", [x], {"axes": [2]})


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("stash", [1, 10, 11])
def test_layer_and_rms_norm(axis, stash):
    x = rand(2, 3, 70)
    scale, bias = rand(*x.shape[axis % 3:]), rand(x.shape[-1])
    native("LayerNormalization", [x, scale, bias], {"axis": axis, "stash_type": stash}, n_outputs=3)
    native("LayerNormalization", [x, scale], {"axis": axis, "stash_type": stash})
    native("LayerNormalization", [x.astype(F16), scale.astype(F16), None],
           {"axis": axis, "stash_type": stash}, n_outputs=2)
    native("RMSNormalization", [x, scale], {"axis": axis, "stash_type": stash})
    native("RMSNormalization", [x.astype(F16), scale.astype(F16)], {"axis": axis, "stash_type": stash})


@pytest.mark.parametrize("p", [1, 2])
def test_lp_norm_and_mvn(p):
    x = rand(2, 3, 4, 5, low=-2, high=2)
    x[0, :, 1, :] = 0.0
    for axis in (0, 1, -1):
        native("LpNormalization", [x], {"axis": axis, "p": p})
    native("MeanVarianceNormalization", [x], {"axes": [0, 2, 3]})
    native("MeanVarianceNormalization", [x.astype(F64)], {"axes": [1]})


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("dtype", [F32, F16])
def test_lrn(size, dtype):
    native("LRN", [rand(2, 6, 3, 70, dtype=dtype)], {"size": size, "alpha": 0.01, "beta": 0.75, "bias": 2.0})
    native("LRN", [rand(2, 4, dtype=dtype)], {"size": size, "beta": 0.5})


@pytest.mark.parametrize("n", [65, 100, 257])
@pytest.mark.parametrize("exclusive, reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum_in_blocks(n, exclusive, reverse):
    x = RNG.integers(-9, 10, (3, n, 2)).astype(np.int32)
    for axis in (1, 0):
        native("CumSum", [np.moveaxis(x, 1, axis).copy(), np.array(axis, I64)],
               {"exclusive": exclusive, "reverse": reverse}, constant=(1,))
    native("CumSum", [rand(2, n), np.array(-1, I64)], {"exclusive": exclusive, "reverse": reverse},
           constant=(1,))
