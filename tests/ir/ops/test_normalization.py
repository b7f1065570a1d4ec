import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tensoregg.errors import InvalidModel, ShapeError, UnsupportedOperator
from tensoregg.testing import arrays, check_op, shapes

F32 = np.float32
X = np.array([[1, 2, 3, 6], [0, 0, 4, 4]], F32)  # row statistics: mean 3, var 3.5 / mean 2, var 4


def _standardized(x, mean, var, eps):
    return ((x - mean) / np.sqrt(var + eps)).astype(F32)


# ---- BatchNormalization -----------------------------------------------------------------------

def test_batchnorm_by_hand():
    x = np.array([[[1, 3]], [[5, 7]]], F32)  # N=2, C=1, D=2: batch mean 4, var 5
    one, zero = np.ones(1, F32), np.zeros(1, F32)
    scale, bias, mean, var = np.array([2], F32), np.array([1], F32), np.array([3], F32), np.array([4], F32)
    check_op("BatchNormalization", [x, scale, bias, mean, var], {"epsilon": 0.0},
             expected=[(x - 3) / 2 * 2 + 1])
    y = _standardized(x, 4, 5, 0.0)
    check_op("BatchNormalization", [x, one, zero, zero, one], {"epsilon": 0.0, "training_mode": 1,
                                                                  "momentum": 0.75},
             n_outputs=3, expected=[y, np.array([1.0], F32), np.array([0.75 + 1.25], F32)])


def test_batchnorm_old_forms():
    x = np.arange(8, dtype=F32).reshape(2, 2, 2)
    p = [np.ones(2, F32), np.zeros(2, F32), np.array([1, 2], F32), np.array([4, 4], F32)]
    want = ((x - p[2].reshape(2, 1)) / np.sqrt(4 + 1e-5)).astype(F32)
    check_op("BatchNormalization", [x, *p], {"is_test": 1, "momentum": 0.5}, opset=6, expected=[want])
    check_op("BatchNormalization", [x, *p], {"spatial": 1}, opset=7, expected=[want])
    with pytest.raises(UnsupportedOperator, match="spatial"):
        check_op("BatchNormalization", [x, *p], {"spatial": 0}, opset=7)


def test_batchnorm_rejects_bad_params_and_extra_outputs():
    x = np.zeros((2, 3, 2), F32)
    with pytest.raises(ShapeError, match=r"shape \[3\]"):
        check_op("BatchNormalization", [x] + [np.ones(2, F32)] * 4)
    with pytest.raises(ShapeError, match="training mode"):
        check_op("BatchNormalization", [x] + [np.ones(3, F32)] * 4, n_outputs=3)


@given(shapes(1, 4), st.sampled_from([0, 1]), st.sampled_from([np.float32, np.float64]), st.data())
def test_batchnorm_matches_onnx(shape, training, dtype, data):
    assume(len(shape) > 1 or not training)  # onnx's reference trains on (N, C, ...) only
    c = shape[1] if len(shape) > 1 else 1
    params = [data.draw(arrays(dtype, (c,), low=lo, high=4)) for lo in (-4, -4, -4, 0.125)]
    attrs = {"training_mode": training, "epsilon": data.draw(st.sampled_from([1e-5, 1e-2])),
             "momentum": data.draw(st.sampled_from([0.9, 0.5]))}
    check_op("BatchNormalization", [data.draw(arrays(dtype, shape)), *params], attrs,
             n_outputs=3 if training else 1, rtol=1e-4, atol=1e-5)


# ---- InstanceNormalization and GroupNormalization ----------------------------------------------

def test_instancenorm_by_hand():
    x = X.reshape(1, 2, 4)
    scale, bias = np.array([1, 2], F32), np.array([0, 1], F32)
    rows = _standardized(X, np.array([[3], [2]], F32), np.array([[3.5], [4]], F32), 1e-5)
    want = (rows * F32([[1], [2]]) + F32([[0], [1]]))[None]
    check_op("InstanceNormalization", [x, scale, bias], expected=[want])


@given(shapes(3, 4, max_side=4), st.sampled_from([np.float32, np.float64]), st.data())
def test_instancenorm_matches_onnx(shape, dtype, data):
    params = [data.draw(arrays(dtype, (shape[1],))) for _ in range(2)]
    check_op("InstanceNormalization", [data.draw(arrays(dtype, shape)), *params],
             {"epsilon": data.draw(st.sampled_from([1e-5, 1e-2]))}, rtol=1e-4, atol=1e-5)


def test_groupnorm_by_hand():
    x = X.reshape(1, 4, 2)  # 2 groups: the two rows of X
    scale, bias = np.array([1, 1, 2, 2], F32), np.array([0, 0, 1, 1], F32)
    rows = _standardized(X, np.array([[3], [2]], F32), np.array([[3.5], [4]], F32), 1e-5)
    want = (rows * F32([[1], [2]]) + F32([[0], [1]])).reshape(1, 4, 2)
    check_op("GroupNormalization", [x, scale, bias], {"num_groups": 2}, expected=[want])


def test_groupnorm_rejects_bad_groups():
    x, p = np.zeros((1, 4, 2), F32), np.ones(4, F32)
    with pytest.raises(ShapeError, match="num_groups 3"):
        check_op("GroupNormalization", [x, p, p], {"num_groups": 3})


@pytest.mark.parametrize("constant", [(), (1, 2)], ids=["runtime-params", "constant-params"])
def test_groupnorm_18_takes_params_per_group(constant):
    """Opset 18's per-group scale/bias equal opset 21's with each repeated over its channels."""
    x = np.arange(16, dtype=F32).reshape(1, 4, 4) ** 1.5
    scale, bias = np.array([2.0, -1.0], F32), np.array([0.5, 3.0], F32)
    want = check_op("GroupNormalization", [x, np.repeat(scale, 2), np.repeat(bias, 2)], {"num_groups": 2})
    check_op("GroupNormalization", [x, scale, bias], {"num_groups": 2}, opset=18, constant=constant,
             expected=want)


@given(st.integers(1, 3), st.sampled_from([1, 2, 4]), st.integers(1, 3), shapes(0, 2, max_side=3), st.data())
def test_groupnorm_matches_onnx(n, groups, per_group, spatial, data):
    c = groups * per_group
    x = data.draw(arrays(F32, (n, c, *spatial)))
    params = [data.draw(arrays(F32, (c,))) for _ in range(2)]
    check_op("GroupNormalization", [x, *params], {"num_groups": groups,
                                                  "epsilon": data.draw(st.sampled_from([1e-5, 1e-2]))},
             rtol=1e-4, atol=1e-5)


# ---- LayerNormalization and RMSNormalization --------------------------------------------------

def test_layernorm_by_hand():
    scale, bias = np.array([1, 2, 1, 2], F32), np.array([1, 0, 0, 0], F32)
    mean, var = np.array([[3], [2]], F32), np.array([[3.5], [4]], F32)
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(F32)
    check_op("LayerNormalization", [X, scale, bias], n_outputs=3,
             expected=[_standardized(X, mean, var, 1e-5) * scale + bias, mean, inv_std])
    everything = _standardized(X, X.mean(), X.var(), 1e-5)
    check_op("LayerNormalization", [X, np.ones((2, 4), F32)], {"axis": 0}, expected=[everything])


def test_layernorm_stats_use_stash_type():
    x = X.astype(np.float16)
    _, mean, _ = check_op("LayerNormalization", [x, np.ones(4, np.float16)], n_outputs=3, rtol=1e-2,
                          expected=[_standardized(X, X.mean(1, keepdims=True), X.var(1, keepdims=True), 1e-5)
                                    .astype(np.float16), np.array([[3], [2]], F32),
                                    (1 / np.sqrt(np.array([[3.5], [4]]) + 1e-5)).astype(F32)])
    assert mean.dtype == F32
    with pytest.raises(InvalidModel, match="stash_type"):
        check_op("LayerNormalization", [X, np.ones(4, F32)], {"stash_type": 6})


def test_layernorm_scale_must_broadcast():
    with pytest.raises(ShapeError, match="does not broadcast"):
        check_op("LayerNormalization", [X, np.ones(3, F32)])


@given(shapes(1, 4), st.data())
def test_layernorm_matches_onnx(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    normalized = shape[axis % len(shape):]
    scale_shape = data.draw(st.sampled_from([normalized, normalized[-1:]]))
    bias = data.draw(st.one_of(st.none(), arrays(F32, scale_shape)))
    inputs = [data.draw(arrays(F32, shape)), data.draw(arrays(F32, scale_shape)), bias]
    attrs = {"axis": axis, "epsilon": data.draw(st.sampled_from([1e-5, 1e-2]))}
    check_op("LayerNormalization", inputs, attrs, n_outputs=data.draw(st.sampled_from([1, 3])),
             rtol=1e-4, atol=1e-5)


def test_rmsnorm_by_hand():
    rms = np.sqrt(np.array([[50 / 4], [8]], F32) + 1e-5)
    scale = np.array([1, 2, 1, 2], F32)
    check_op("RMSNormalization", [X, scale], expected=[(X / rms * scale).astype(F32)])


@given(shapes(1, 4), st.sampled_from([np.float32, np.float64]), st.data())
def test_rmsnorm_matches_onnx(shape, dtype, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    scale = data.draw(arrays(dtype, shape[axis % len(shape):]))
    check_op("RMSNormalization", [data.draw(arrays(dtype, shape)), scale], {"axis": axis},
             rtol=1e-4, atol=1e-5)


# ---- LpNormalization and MeanVarianceNormalization --------------------------------------------

def test_lpnorm_by_hand():
    x = np.array([[3, -4], [0, 0]], F32)
    check_op("LpNormalization", [x], expected=[np.array([[0.6, -0.8], [0, 0]], F32)])
    check_op("LpNormalization", [x], {"p": 1, "axis": 0}, expected=[np.array([[1, -1], [0, 0]], F32)])
    with pytest.raises(InvalidModel, match="p must be"):
        check_op("LpNormalization", [x], {"p": 3})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # onnx's reference divides by a zero norm
@given(shapes(1, 4), st.sampled_from([1, 2]), st.sampled_from([np.float32, np.float64]), st.data())
def test_lpnorm_matches_onnx(shape, p, dtype, data):
    x = data.draw(arrays(dtype, shape))
    if p == 1:
        x = np.abs(x)  # onnx's reference sums x, not |x|, for p=1
    check_op("LpNormalization", [x], {"p": p, "axis": data.draw(st.integers(-len(shape), len(shape) - 1))})


def test_mvn_by_hand():
    x = X.reshape(1, 2, 4, 1)
    want = ((X - [[3], [2]]) / (np.sqrt([[3.5], [4]]) + 1e-9)).astype(F32).reshape(1, 2, 4, 1)
    check_op("MeanVarianceNormalization", [x], expected=[want])


@given(shapes(4, 4, max_side=4), st.data())
def test_mvn_matches_onnx(shape, data):
    axes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True))
    check_op("MeanVarianceNormalization", [data.draw(arrays(F32, shape))], {"axes": axes},
             rtol=1e-4, atol=1e-5)


# ---- Dropout ----------------------------------------------------------------------------------

def test_dropout_by_hand():
    ratio, off, on = np.array(0.5, F32), np.array(False), np.array(True)
    ones = np.ones(X.shape, bool)
    check_op("Dropout", [X], n_outputs=2, expected=[X, ones])
    check_op("Dropout", [X, ratio, off], constant=(1, 2), n_outputs=2, expected=[X, ones])
    check_op("Dropout", [X, np.array(0.0, F32), on], constant=(1, 2), expected=[X])
    check_op("Dropout", [X], {"ratio": 0.3}, opset=7, expected=[X])
    check_op("Dropout", [X], {"is_test": 1}, opset=6, expected=[X])


def test_dropout_in_training_is_unsupported():
    with pytest.raises(UnsupportedOperator, match="at random"):
        check_op("Dropout", [X, np.array(0.5, F32), np.array(True)], constant=(1, 2))
    with pytest.raises(UnsupportedOperator, match="at random"):
        check_op("Dropout", [X], {"is_test": 0, "ratio": 0.2}, opset=6)


@given(shapes(), st.sampled_from([np.float32, np.float64]), st.booleans(), st.sampled_from([1, 2]), st.data())
def test_dropout_matches_onnx(shape, dtype, with_inputs, n_outputs, data):
    inputs = [data.draw(arrays(dtype, shape))]
    if with_inputs:
        inputs += [np.array(data.draw(st.sampled_from([0.0, 0.5])), dtype), np.array(False)]
    check_op("Dropout", inputs, n_outputs=n_outputs, constant=(1, 2))
