"""The llvm target's Attention, RotaryEmbedding, CausalConvWithState, TopK, CumProd, Det and windows
against the reference interpreter, on the forms the op tests do not reach (each case must compile:
an unsupported lowering fails here)."""

import numpy as np
import pytest
from onnx import TensorProto

from tensoregg.errors import UnsupportedOperator
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import Graph, Node, TensorType
from tensoregg.testing import check_native, single_op_model

F16, F32, F64, I64 = np.float16, np.float32, np.float64, np.int64
RNG = np.random.default_rng(0)


def native(op, inputs, attrs=None, *, n_outputs=1, constant=(), rtol=None):
    """Compile the one-op model for llvm and compare it with the reference interpreter."""
    model = single_op_model(op, inputs, attrs, n_outputs=n_outputs, constant=constant)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if a is not None and i not in constant}
    assert check_native(import_onnx(model), feeds, rtol=rtol, require=True)


def rand(*shape, dtype=F32, low=-1.0, high=1.0):
    return RNG.uniform(low, high, shape).astype(dtype)


# ---- Attention --------------------------------------------------------------------------------------

def qkv(b=2, hq=4, hkv=2, sq=3, skv=5, d=8, dv=6, dtype=F32, rank3=False):
    shapes = [(b, hq, sq, d), (b, hkv, skv, d), (b, hkv, skv, dv)]
    if rank3:
        shapes = [(s[0], s[2], s[1] * s[3]) for s in shapes]
    return [rand(*s, dtype=dtype, low=-2, high=2) for s in shapes]


@pytest.mark.parametrize("dtype", [F16, F32, F64])
@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_attention_outputs_and_modes(dtype, mode):
    q, k, v = qkv(dtype=dtype)
    past = [rand(2, 2, 4, 8, dtype=dtype), rand(2, 2, 4, 6, dtype=dtype)]
    mask = rand(3, 9, dtype=dtype)
    attrs = {"qk_matmul_output_mode": mode, "softcap": 2.5, "is_causal": 1}
    native("Attention", [q, k, v, mask, *past], attrs, n_outputs=4)


@pytest.mark.parametrize("rank3", [False, True])
@pytest.mark.parametrize("dtype", [F16, F32])
def test_attention_gqa_scale_and_softmax_precision(rank3, dtype):
    q, k, v = qkv(hq=6, hkv=2, dtype=dtype, rank3=rank3)
    heads = {"q_num_heads": 6, "kv_num_heads": 2} if rank3 else {}
    for precision in (TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE):
        attrs = {**heads, "scale": 0.3, "softmax_precision": precision, "qk_matmul_output_mode": 3}
        native("Attention", [q, k, v], attrs, n_outputs=4)


@pytest.mark.parametrize("shape", [(5,), (3, 5), (3, 2), (4, 3, 5), (2, 1, 3, 5), (2, 4, 1, 4), (1, 1, 1, 5)])
@pytest.mark.parametrize("kind", [np.bool_, F32])
def test_attention_masks(shape, kind):
    q, k, v = qkv()
    mask = RNG.random(shape) < 0.6 if kind is np.bool_ else rand(*shape, low=-3, high=3)
    if kind is F32:
        mask.reshape(-1)[::4] = -np.inf
    native("Attention", [q, k, v, mask], {"qk_matmul_output_mode": 2}, n_outputs=4)


@pytest.mark.parametrize("window", [(-1, -1), (1, -1), (0, 0), (2, 1), (-1, 0)])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_windows_past_and_padding(window, causal):
    q, k, v = qkv(sq=4, skv=3)
    attrs = {"is_causal": causal, "left_window_size": window[0], "right_window_size": window[1]}
    native("Attention", [q, k, v], attrs)
    past = [rand(2, 2, 3, 8), rand(2, 2, 3, 6)]
    native("Attention", [q, k, v, None, *past], attrs, n_outputs=3)
    nonpad = np.array([0, 2], I64)  # the first batch sees no key at all: its output is 0
    native("Attention", [q, k, v, np.ones((4, 3), np.bool_), None, None, nonpad], attrs)


def test_attention_dead_rows_ignore_nan_and_overflow():
    q, k, v = qkv(dtype=F16)
    q[0, 0, 0, 0] = np.nan
    q[1] *= 300  # float16 scores overflow to inf
    mask = np.ones((3, 5), np.bool_)
    mask[0] = False  # query 0 sees no key
    native("Attention", [q, k, v, mask], {"qk_matmul_output_mode": 3}, n_outputs=4)
    float_mask = np.where(mask, 0, -np.inf).astype(F16)
    native("Attention", [q, k, v, float_mask], {"softcap": 3.0})


def test_attention_rejects_bfloat16_and_mixed_dtypes():
    q, k, v = qkv()
    with pytest.raises(UnsupportedOperator, match="float16/32/64"):
        native("Attention", [q, k, v.astype(F64)])
    with pytest.raises(UnsupportedOperator, match="float16/32/64"):
        native("Attention", [q, k, v], {"softmax_precision": TensorProto.BFLOAT16})


# ---- RotaryEmbedding --------------------------------------------------------------------------------

@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rot", [0, 4])
@pytest.mark.parametrize("rank3", [False, True])
@pytest.mark.parametrize("dtype", [F16, F32])
def test_rotary_embedding(interleaved, rot, rank3, dtype):
    b, heads, seq, head = 2, 3, 4, 10
    x = rand(b, seq, heads * head, dtype=dtype) if rank3 else rand(b, heads, seq, head, dtype=dtype)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rot}
    if rank3:
        attrs["num_heads"] = heads
    half = (rot or head) // 2
    cos, sin = rand(8, half, dtype=dtype), rand(8, half, dtype=dtype)
    ids = RNG.integers(-8, 8, (b, seq)).astype(I64)  # negative ids count from the end
    native("RotaryEmbedding", [x, cos, sin, ids], attrs)
    native("RotaryEmbedding", [x, rand(b, seq, half, dtype=dtype), rand(b, seq, half, dtype=dtype)], attrs)


# ---- CausalConvWithState ----------------------------------------------------------------------------

@pytest.mark.parametrize("taps", [1, 2, 4])
@pytest.mark.parametrize("activation", ["none", "silu"])
@pytest.mark.parametrize("dtype", [F16, F32, F64])
def test_causal_conv_with_state(taps, activation, dtype):
    x, w, bias = rand(2, 3, 5, dtype=dtype), rand(3, 1, taps, dtype=dtype), rand(3, dtype=dtype)
    state = rand(2, 3, taps - 1, dtype=dtype)
    attrs = {"activation": activation}
    # the reference takes SiLU in float32 whatever the dtype: float64 results agree to float32's exp
    rtol = 1e-6 if dtype is F64 and activation == "silu" else None
    native("CausalConvWithState", [x, w, bias, state], attrs, n_outputs=2, rtol=rtol)
    native("CausalConvWithState", [x, w], attrs, n_outputs=2, rtol=rtol)
    native("CausalConvWithState", [x[:, :, :1], w, None, state], attrs, n_outputs=2, rtol=rtol)


# ---- TopK -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", [F16, F32, I64, np.uint8])
def test_top_k_ties_and_nan(largest, axis, dtype):
    x = RNG.integers(0, 4, (5, 6, 7)).astype(dtype)  # many ties
    if dtype in (F16, F32):
        x[x == 3] = np.nan
        x[0, 0, 0] = -0.0
    n = x.shape[axis]
    for k in (0, 1, 3, n):
        native("TopK", [x, np.array([k], I64)], {"axis": axis, "largest": largest, "sorted": 1},
               n_outputs=2, constant=(1,))


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("dtype", [F32, np.int32])
def test_top_k_long_axis(largest, dtype):
    """K <= 16 of a long axis select entry by entry; more rank every entry."""
    x = RNG.integers(-10, 10, (3, 100, 2)).astype(dtype)
    if dtype is F32:
        x[0, ::3] = np.nan
        x[1, 5:] = np.inf
        x[2, :, 0] = np.nan
    for k in (1, 5, 16, 40, 100):
        native("TopK", [x, np.array([k], I64)], {"axis": 1, "largest": largest}, n_outputs=2, constant=(1,))


# ---- CumProd ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("n", [1, 7, 100])
@pytest.mark.parametrize("dtype", [F32, F64, np.int32, I64])
def test_cumprod(exclusive, reverse, n, dtype):
    # products of values near 1 (floats) or of small integers that wrap (integers)
    x = (RNG.uniform(0.9, 1.1, (3, n)) if dtype in (F32, F64) else RNG.integers(-3, 4, (3, n))).astype(dtype)
    for axis in (0, 1):
        native("CumProd", [x, np.array(axis, I64)], {"exclusive": exclusive, "reverse": reverse},
               constant=(1,))


# ---- Det --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 12])
@pytest.mark.parametrize("dtype", [F16, F32, F64])
def test_det(size, dtype):
    x = rand(2, 3, size, size, dtype=dtype, low=-2, high=2)
    native("Det", [x])
    native("Det", [x[0, 0]])


def test_det_singular_and_pivoting():
    x = np.zeros((4, 3, 3), F32)
    x[0] = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # singular, needs swaps
    x[1] = [[0, 0, 1], [0, 1, 0], [1, 0, 0]]  # a permutation: -1
    x[2] = [[1, 2, 3], [2, 4, 6], [0, 0, 1]]  # a zero pivot after the first step
    x[3] = [[2, 0, 0], [0, 0, 0], [0, 0, 3]]  # a zero column
    native("Det", [x])


# ---- windows ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_windows_unfolded(op, periodic, dtype):
    """Windows fold at import (their size is a constant): lowered here from a graph as it is."""
    code = TensorProto.FLOAT if dtype is F32 else TensorProto.DOUBLE
    node = Node(op, ("size",), ("w",), {"periodic": periodic, "output_datatype": code})
    graph = Graph({}, {"size": np.array(9, I64)}, [node], ["w"])
    assert graph.types["w"] == TensorType(np.dtype(dtype), (9,))
    assert check_native(graph, {}, require=True)
