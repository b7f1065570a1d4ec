"""The interpreter on one-op models of every compute family, and on random graphs, against the
reference interpreter."""

import numpy as np
import pytest
from hypothesis import given, settings
from onnx import TensorProto

from tensoregg.errors import IndexOutOfRange
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.targets.interp.program import InterpProgram
from tensoregg.testing import NATIVE_SLACK, assert_same, graphs, single_op_model, tolerance

R = np.random.default_rng(0)
I64 = np.int64


def f(*shape):
    return R.standard_normal(shape).astype(np.float32)


def ints(dtype, *shape, low=-100, high=100):
    return R.integers(low, high, shape).astype(dtype)


def x4(c=4):
    return f(2, c, 7, 6)


CASES = [
    # element-wise, broadcasting, integers
    ("Add", [f(2, 3, 4), f(3, 1)], {}, ()),
    ("Div", [ints(np.int32, 24), ints(np.int32, 24, low=1, high=9) * R.choice([-1, 1], 24).astype(np.int32)],
     {}, ()),
    ("Mod", [ints(np.int16, 24), ints(np.int16, 24, low=1, high=9) * np.int16(-1)], {"fmod": 0}, ()),
    ("Mod", [f(24), f(24)], {"fmod": 1}, ()),
    ("BitShift", [ints(np.uint8, 16, low=0, high=255), ints(np.uint8, 16, low=0, high=8)],
     {"direction": "LEFT"}, ()),
    ("Where", [R.random((3, 4)) > 0.5, f(3, 4), f(4)], {}, ()),
    ("Pow", [np.abs(f(10)) + 0.1, f(10)], {}, ()),
    ("Clip", [f(12), np.float32(-0.5), np.float32(0.5)], {}, (1, 2)),
    ("Max", [f(3, 4), f(4), f(3, 1)], {}, ()),
    # activations
    ("Sigmoid", [f(20) * 10], {}, ()),
    ("Gelu", [f(20)], {}, ()),
    ("Erf", [f(20)], {}, ()),
    ("HardSwish", [f(20) * 4], {}, ()),
    ("Elu", [f(20)], {"alpha": 0.7}, ()),
    ("Softmax", [f(3, 5, 6)], {"axis": 1}, ()),
    ("LogSoftmax", [f(4, 9)], {}, ()),
    # casts and quantization
    ("Cast", [f(30) * 300], {"to": TensorProto.INT8}, ()),
    ("Cast", [f(30) * 300], {"to": TensorProto.UINT16}, ()),
    ("Cast", [f(30)], {"to": TensorProto.BFLOAT16}, ()),
    ("Cast", [f(30) * 100], {"to": TensorProto.FLOAT8E4M3FN}, ()),
    ("Cast", [ints(np.int32, 30)], {"to": TensorProto.FLOAT16}, ()),
    ("QuantizeLinear", [f(2, 3, 4) * 50, np.float32(0.3), np.uint8(128)], {}, (1, 2)),
    ("DequantizeLinear", [ints(np.int8, 2, 3), np.array([0.5, 2.0, 0.1], np.float32),
                          np.array([1, -2, 3], np.int8)], {"axis": 1}, (1, 2)),
    # convolutions
    ("Conv", [x4(), f(6, 2, 3, 3), f(6)], {"pads": [1, 0, 1, 2], "strides": [2, 1], "group": 2}, (1, 2)),
    ("Conv", [x4(), f(4, 1, 3, 3)], {"dilations": [2, 1], "group": 4}, (1,)),
    ("ConvTranspose", [x4(), f(4, 3, 3, 2)], {"strides": [2, 2], "pads": [1, 0, 0, 1]}, (1,)),
    # contractions
    ("MatMul", [f(2, 3, 4), f(4, 5)], {}, ()),
    ("Gemm", [f(3, 4), f(5, 4), f(5)], {"transB": 1, "alpha": 0.5}, (1, 2)),
    ("Einsum", [f(2, 3, 4), f(2, 4, 5)], {"equation": "bij,bjk->bik"}, ()),
    # indexing
    ("Gather", [f(5, 4), np.array([[4, 0], [-1, 2]], I64)], {"axis": 0}, ()),
    ("GatherElements", [f(3, 4), ints(I64, 3, 4, low=-4, high=4)], {"axis": 1}, ()),
    ("ScatterElements", [f(4, 3), np.array([[1, 0, 2], [3, 1, 0]], I64), f(2, 3)], {"axis": 0}, ()),
    ("ScatterND", [f(4, 3), np.array([[2], [0]], I64), f(2, 3)], {}, ()),
    ("Slice", [f(6, 8), np.array([1, -1], I64), np.array([5, 0], I64), np.array([0, 1], I64),
               np.array([2, -3], I64)], {}, (1, 2, 3, 4)),
    # normalization, pooling, reductions
    ("BatchNormalization", [x4(), f(4), f(4), f(4), np.abs(f(4)) + 0.5], {}, (1, 2, 3, 4)),
    ("LayerNormalization", [f(3, 4, 8), f(8), f(8)], {"axis": -1}, (1, 2)),
    ("InstanceNormalization", [x4(), f(4), f(4)], {}, (1, 2)),
    ("LRN", [x4(5)], {"size": 3}, ()),
    ("MaxPool", [x4()], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, ()),
    ("AveragePool", [x4()], {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1], "count_include_pad": 0}, ()),
    ("GlobalAveragePool", [x4()], {}, ()),
    ("ReduceSum", [f(3, 4, 5), np.array([0, 2], I64)], {"keepdims": 0}, (1,)),
    ("ReduceMax", [f(3, 4, 5), np.array([1], I64)], {}, (1,)),
    ("ReduceLogSumExp", [f(3, 4, 5), np.array([-1], I64)], {}, (1,)),
    ("ArgMax", [f(3, 7)], {"axis": 1}, ()),
    ("CumSum", [f(4, 6), np.array(1, I64)], {"reverse": 1}, (1,)),
    ("SoftmaxCrossEntropyLoss", [f(3, 5), np.array([1, 4, 0], I64)], {}, ()),
    # sampling and layout
    ("Resize", [x4(), np.array([], np.float32), np.array([1, 1, 1.5, 2], np.float32)], {"mode": "linear"},
     (1, 2)),
    ("Transpose", [f(2, 3, 4)], {"perm": [2, 0, 1]}, ()),
    ("Concat", [f(2, 3), f(4, 3), f(1, 3)], {"axis": 0}, ()),
    ("Split", [f(6, 4), np.array([2, 4], I64)], {"axis": 0}, (1,)),
    ("Pad", [f(3, 4), np.array([1, 0, 0, 2], I64)], {"mode": "reflect"}, (1,)),
    ("Tile", [f(2, 3), np.array([2, 3], I64)], {}, (1,)),
    ("Expand", [f(3, 1), np.array([2, 3, 4], I64)], {}, (1,)),
    ("DepthToSpace", [f(1, 8, 2, 3)], {"blocksize": 2}, ()),
    ("TopK", [f(3, 9), np.array([4], I64)], {"axis": 1}, (1,)),
]


def check_interp(graph, feeds):
    """The interpreter's outputs equal the reference interpreter's (within the native tolerance)."""
    want = run_graph(graph, dict(feeds))
    got = InterpProgram(graph).run(feeds)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        rtol, atol = tolerance(np.asarray(w).dtype)
        assert_same(g, np.asarray(w), f"interp output {k}", rtol * NATIVE_SLACK, atol * NATIVE_SLACK)


@pytest.mark.parametrize("op, inputs, attrs, constant", CASES, ids=[c[0] for c in CASES])
def test_one_op_models(op, inputs, attrs, constant):
    outputs = {"Split": 2, "TopK": 2}.get(op, 1)
    model = single_op_model(op, inputs, attrs, n_outputs=outputs, constant=constant)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if i not in constant}
    graph = import_onnx(model)
    with np.errstate(all="ignore"):
        check_interp(graph, feeds)


@settings(max_examples=15)
@given(graphs())
def test_random_graphs(case):
    graph, feeds = case
    with np.errstate(all="ignore"):
        check_interp(graph, feeds)


@pytest.mark.parametrize("op,indices,attrs", [("Gather", np.array([5], I64), {"axis": 0}),
                                              ("GatherElements", np.full((5, 4), -6, I64), {"axis": 0}),
                                              ("GatherND", np.array([[0, 4]], I64), {})])
def test_out_of_range_index_raises_naming_the_node(op, indices, attrs):
    """As the reference (and onnxruntime): an index outside its axis is an error, not a clamped read."""
    model = single_op_model(op, [f(5, 4), indices], attrs)
    with pytest.raises(IndexOutOfRange, match=f"{op} node 'out0'"):
        InterpProgram(import_onnx(model)).run({"in0": f(5, 4), "in1": indices})
