"""The quantization family: QDQ products into QLinearConv/QLinearMatMul, within one quantization step
for any scales, and the premises that keep the rules from firing where the QLinear ops cannot say
what the QDQ program does."""

import numpy as np
import pytest

from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.terms import encode, serialize
from tensoregg.optimize import optimize
from tensoregg.rules import RULESETS, Phase, saturate
from tensoregg.targets import REF
from tensoregg.testing import programs


def conv_case(seed, *, x_scale_shape=(), x_zero_point=True, w_axis=0, bias=True, x_dtype=np.uint8):
    """DQ(x) (1, 4, 5, 5) -> Conv 3x3 pad 1 with per-channel int8 weights and an int32 bias -> Q
    (uint8), all scales random floats (not powers of two)."""
    rng = np.random.default_rng(seed)
    consts = {"xs": rng.uniform(0.01, 0.05, x_scale_shape).astype(np.float32),
              "xz": np.full(x_scale_shape, 7, x_dtype),
              "wq": rng.integers(-127, 128, (6, 4, 3, 3)).astype(np.int8),
              "ws": rng.uniform(0.001, 0.01, 6 - 2 * w_axis).astype(np.float32),  # per channel of axis w_axis
              "wz": np.zeros(6 - 2 * w_axis, np.int8),
              "ys": np.float32(rng.uniform(0.05, 0.2)), "yz": np.uint8(rng.integers(0, 256))}
    consts["bq"] = rng.integers(-5000, 5000, 6).astype(np.int32)
    per_output = consts["ws"] if w_axis == 0 else np.full(6, consts["ws"][0])
    consts["bs"] = (consts["xs"].reshape(-1)[0] * per_output).astype(np.float32)
    nodes = [Node("DequantizeLinear", ("xq", "xs", "xz" if x_zero_point else ""), ("x",), {"axis": 1}),
             Node("DequantizeLinear", ("wq", "ws", "wz"), ("w",), {"axis": w_axis}),
             Node("DequantizeLinear", ("bq", "bs"), ("b",), {"axis": 0}),
             Node("Conv", ("x", "w", "b" if bias else ""), ("p",), {"pads": [1, 1, 1, 1]}),
             Node("QuantizeLinear", ("p", "ys", "yz"), ("y",))]
    info = np.iinfo(x_dtype)
    feeds = {"xq": rng.integers(info.min, int(info.max) + 1, (1, 4, 5, 5)).astype(x_dtype)}
    return Graph({"xq": TensorType.of(feeds["xq"])}, consts, nodes, ["y"]), feeds


def fired(graph):
    (report,) = saturate(encode(graph).egraph, [Phase("quantization", RULESETS["quantization"].ruleset)])
    return {name: n for name, n in report.fired.items() if n}


@pytest.mark.parametrize("seed", range(4))
def test_any_scales_agree_within_one_step(seed):
    graph, feeds = conv_case(seed)
    enc = encode(graph)
    enc.egraph.run(RULESETS["quantization"].ruleset)
    found = programs(serialize(enc.egraph), enc)
    assert any(n.op == "QLinearConv" for g in found for n in g.nodes)
    want = run_graph(graph, feeds)[0].astype(np.int32)
    for g in found:
        assert np.abs(run_graph(g, feeds)[0].astype(np.int32) - want).max() <= 1


def test_optimize_extracts_the_integer_kernel():
    graph, feeds = conv_case(0)
    result, _ = optimize(graph, REF, families=("quantization",))
    assert [n.op for n in result.nodes] == ["QLinearConv"]  # the bias folded to an int32 constant
    bias = result.initializers[result.nodes[0].inputs[8]]
    np.testing.assert_array_equal(bias, graph.initializers["bq"])  # b_scale = x_scale * w_scale
    assert np.abs(run_graph(result, feeds)[0].astype(np.int32) - run_graph(graph, feeds)[0]).max() <= 1


@pytest.mark.parametrize("case", [
    {"x_scale_shape": (4,)},  # x per channel: QLinearConv takes one x scale
    {"x_zero_point": False},  # QLinearConv needs x's zero point
    {"w_axis": 1},  # w's scale along its input channels
    {"x_dtype": np.int32},  # not 8-bit data
], ids=["x-per-channel", "no-x-zero-point", "w-axis-1", "x-int32"])
def test_premises_keep_the_rules_off(case):
    graph, _ = conv_case(0, **case)
    assert fired(graph) == {}


def test_matmul_with_per_column_weight_scale_stays():
    rng = np.random.default_rng(0)
    consts = {"as": np.float32(0.1), "az": np.uint8(3), "bq": rng.integers(-9, 9, (3, 4)).astype(np.int8),
              "bs": np.full(4, 0.5, np.float32), "bz": np.zeros(4, np.int8), "ys": np.float32(0.3),
              "yz": np.uint8(0)}
    nodes = [Node("DequantizeLinear", ("aq", "as", "az"), ("a",)),
             Node("DequantizeLinear", ("bq", "bs", "bz"), ("b",), {"axis": 1}),
             Node("MatMul", ("a", "b"), ("p",)), Node("QuantizeLinear", ("p", "ys", "yz"), ("y",))]
    graph = Graph({"aq": TensorType(np.dtype(np.uint8), (2, 3))}, consts, nodes, ["y"])
    assert fired(graph) == {}
    consts["bs"], consts["bz"] = np.float32(0.5), np.int8(0)
    assert fired(Graph(graph.inputs, consts, nodes, ["y"])) == {"qdq-matmul-to-qlinearmatmul": 1}


def relu_case(q_scale):
    consts = {"s": np.float32(0.1), "z": np.uint8(100), "s2": np.float32(q_scale)}
    nodes = [Node("DequantizeLinear", ("q", "s", "z"), ("x",)), Node("Relu", ("x",), ("r",)),
             Node("QuantizeLinear", ("r", "s2" if q_scale else "s", "z"), ("y",))]
    return Graph({"q": TensorType(np.dtype(np.uint8), (3, 4))}, consts, nodes, ["y"])


def test_relu_folds_only_between_the_same_scale_and_zero_point():
    assert fired(relu_case(0)) == {"qdq-relu-to-max": 1}
    assert fired(relu_case(0.2)) == {}  # another scale: relu then requantization, not a max
    assert fired(relu_case(0.1)) == {}  # an equal value under another name: premises see terms only
