"""Fused-kernel ops (domain ``tensoregg``): not importable from ONNX, so checked through run_graph
against hand-computed values and against their unfused ONNX composition."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensoregg.errors import ShapeError
from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.ops.fused import DOMAIN
from tensoregg.testing import arrays, assert_same

F32 = np.float32


def run_fused(op, inputs, attrs=None, *, expected):
    """Run one fused ``op`` node (inputs ``None`` for an omitted one) and compare with ``expected``."""
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)]
    feeds = {n: a for n, a in zip(names, inputs) if n}
    graph = Graph({n: TensorType.of(a) for n, a in feeds.items()}, {},
                  [Node(op, tuple(names), ("y",), attrs or {}, domain=DOMAIN)], ["y"])
    assert_same(run_graph(graph, feeds)[0], np.asarray(expected, F32), op)


X = np.arange(-4, 5, dtype=F32).reshape(1, 1, 3, 3)
W = np.ones((1, 1, 2, 2), F32)


def test_fused_conv_by_hand():
    conv = np.array([[[[-8, -4], [4, 8]]]], F32)  # 2x2 window sums of -4..4
    run_fused("FusedConv", [X, W], expected=conv)
    run_fused("FusedConv", [X, W, np.array([1], F32)], {"activation": "Relu"},
              expected=[[[[0, 0], [5, 9]]]])
    run_fused("FusedConv", [X, W, None, np.full_like(conv, 3)],
              {"activation": "Clip", "activation_params": (0, 6)}, expected=[[[[0, 0], [6, 6]]]])
    run_fused("FusedConv", [X, W], {"activation": "LeakyRelu", "activation_params": (0.5,)},
              expected=np.where(conv > 0, conv, 0.5 * conv))


def test_fused_gemm_and_matmul_by_hand():
    a, b = np.array([[1, -2]], F32), np.array([[1, 0], [0, 1]], F32)
    run_fused("FusedGemm", [a, b, np.array([1, 1], F32)], {"alpha": 2.0, "activation": "Relu"},
              expected=[[3, 0]])
    run_fused("FusedMatMul", [a, b, np.array([5], F32)], {"activation": "Relu"}, expected=[[6, 3]])


ACTS = st.sampled_from([("", ()), ("Relu", ()), ("Tanh", ()), ("Sigmoid", ()), ("LeakyRelu", (0.1,)),
                        ("HardSigmoid", (0.2, 0.5)), ("Clip", (-1.0, 1.0))])


def unfused(graph_inputs, inits, base, act, params):
    """``base`` (a Node producing ``b0``) then Add(b0, z) if z is fed, then the activation."""
    nodes, value = [base], "b0"
    if "z" in graph_inputs:
        nodes.append(Node("Add", (value, "z"), ("s",)))
        value = "s"
    if act == "Clip":
        inits = {**inits, "lo": np.array(params[0], F32), "hi": np.array(params[1], F32)}
        nodes.append(Node("Clip", (value, "lo", "hi"), ("y",)))
    elif act:
        names = {"LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta")}.get(act, ())
        nodes.append(Node(act, (value,), ("y",), dict(zip(names, params))))
    else:
        nodes.append(Node("Identity", (value,), ("y",)))
    return Graph(graph_inputs, inits, nodes, ["y"])


@given(st.integers(1, 3), st.integers(1, 3), st.integers(3, 6), st.booleans(), ACTS, st.data())
def test_fused_conv_matches_conv_add_activation(cin, m, size, residual, act, data):
    x = data.draw(arrays(F32, (1, cin, size, size)))
    w, b = data.draw(arrays(F32, (m, cin, 3, 3))), data.draw(arrays(F32, (m,)))
    types = {"x": TensorType.of(x)}
    feeds = {"x": x}
    if residual:
        feeds["z"] = data.draw(arrays(F32, (1, m, size, size)))
        types["z"] = TensorType.of(feeds["z"])
    attrs = {"pads": (1, 1, 1, 1)}
    node = Node("FusedConv", ("x", "w", "b", "z" if residual else ""), ("y",),
                {**attrs, "activation": act[0], "activation_params": act[1]}, domain=DOMAIN)
    fused = Graph(types, {"w": w, "b": b}, [node], ["y"])
    want = unfused(types, {"w": w, "b": b}, Node("Conv", ("x", "w", "b"), ("b0",), attrs), *act)
    assert_same(run_graph(fused, feeds)[0], run_graph(want, feeds)[0], "FusedConv", rtol=0, atol=0)


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.booleans(), ACTS, st.data())
def test_fused_matmul_and_gemm_match_their_compositions(m, k, n, residual, act, data):
    a, b, z = data.draw(arrays(F32, (m, k))), data.draw(arrays(F32, (k, n))), data.draw(arrays(F32, (n,)))
    types, feeds = {"a": TensorType.of(a)}, {"a": a}
    epilogue = {"activation": act[0], "activation_params": act[1]}
    if residual:
        types["z"], feeds["z"] = TensorType.of(z), z
    for op, base in (("FusedMatMul", Node("MatMul", ("a", "b"), ("b0",))),
                     ("FusedGemm", Node("Gemm", ("a", "b"), ("b0",)))):
        if op == "FusedGemm" and residual:
            continue  # Gemm's C is its residual, covered by the hand check
        inputs = ("a", "b", "z") if residual else ("a", "b")
        fused = Graph(types, {"b": b}, [Node(op, inputs, ("y",), epilogue, domain=DOMAIN)], ["y"])
        want = unfused(types, {"b": b}, base, *act)
        assert_same(run_graph(fused, feeds)[0], run_graph(want, feeds)[0], op, rtol=0, atol=0)


def test_fused_ops_check_their_epilogue():
    with pytest.raises(ShapeError, match=r"FusedMatMul.*takes 2 activation_params"):
        run_fused("FusedMatMul", [np.ones((2, 2), F32)] * 2, {"activation": "Clip"}, expected=np.zeros(1))
