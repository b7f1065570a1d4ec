"""Fused-kernel ops (domain ``tensoregg``) and the fusion rules, end to end through optimize()."""

import numpy as np
import pytest

from tensoregg.errors import ShapeError, UnsupportedOperator
from tensoregg.extraction.cost import analytic_cost, flops
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.ops.fused import ACTIVATIONS, DOMAIN
from tensoregg.ir.terms import ENode, decode, encode, first_choice, serialize
from tensoregg.optimize import optimize
from tensoregg.targets import REF
from tensoregg.testing import assert_same, single_op_model

F32 = np.dtype(np.float32)
RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)
W = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)
PADS = {"pads": (1, 1, 1, 1)}
PARAMS = {"LeakyRelu": (0.2,), "HardSigmoid": (0.25, 0.4), "Clip": (-0.5, 1.5)}


def conv_graph(*epilogue: Node, fused: Node | None = None) -> Graph:
    """x -> Conv(w, b, pads 1) as ``c`` (or the ``fused`` node) -> ``epilogue`` nodes; the last gives y.
    Clip's bounds are the constants ``lo`` and ``hi``."""
    inits = {"w": W, "b": B, "lo": np.array(PARAMS["Clip"][0], F32), "hi": np.array(PARAMS["Clip"][1], F32)}
    first = fused or Node("Conv", ("x", "w", "b"), ("c",), PADS)
    return Graph({"x": TensorType(F32, X.shape)}, inits, [first, *epilogue], ["y"])


def activation(name: str, x: str, y: str) -> Node:
    if name == "Clip":
        return Node("Clip", (x, "lo", "hi"), (y,))
    return Node(name, (x,), (y,), dict(zip(ACTIVATIONS[name], PARAMS.get(name, ()))))


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a])
def test_fused_conv_is_conv_add_activation(act):
    unfused = conv_graph(Node("Add", ("c", "x"), ("a",)), activation(act, "a", "y"))
    fused = conv_graph(fused=Node("FusedConv", ("x", "w", "b", "x"), ("y",),
                                  {**PADS, "activation": act, "activation_params": PARAMS.get(act, ())},
                                  domain=DOMAIN))
    assert_same(run_graph(fused, {"x": X})[0], run_graph(unfused, {"x": X})[0], act, rtol=0, atol=0)


def test_fused_matmul_and_gemm_match_their_unfused_forms():
    a, b, z = RNG.standard_normal((3, 5)), RNG.standard_normal((5, 4)), RNG.standard_normal(4)
    a, b, z = a.astype(np.float32), b.astype(np.float32), z.astype(np.float32)
    inputs = {"a": TensorType.of(a)}
    feeds = {"a": a}
    mm = Graph(inputs, {"b": b, "z": z}, [Node("FusedMatMul", ("a", "b", "z"), ("y",),
                                               {"activation": "Tanh"}, domain=DOMAIN)], ["y"])
    np.testing.assert_array_equal(run_graph(mm, feeds)[0], np.tanh(a @ b + z))
    gemm = Graph(inputs, {"b": b, "z": z}, [Node("FusedGemm", ("a", "b", "z"), ("y",),
                                                 {"alpha": 0.5, "activation": "Relu"}, domain=DOMAIN)], ["y"])
    np.testing.assert_allclose(run_graph(gemm, feeds)[0], np.maximum(0.5 * (a @ b) + z, 0), rtol=1e-6)


@pytest.mark.parametrize("attrs, z_shape, message", [
    ({"activation": "Gelu"}, None, "activation 'Gelu' is not one of"),
    ({"activation": "LeakyRelu"}, None, "takes 1 activation_params"),
    ({}, (2, 4, 1, 1), r"Z of shape \[2, 4, 1, 1\] must be the Conv output's shape \[2, 4, 6, 6\]"),
])
def test_fused_conv_shape_errors_name_the_op(attrs, z_shape, message):
    inputs = {"x": TensorType(F32, X.shape)}
    if z_shape:
        inputs["z"] = TensorType(F32, z_shape)
    node = Node("FusedConv", ("x", "w", "b", "z" if z_shape else ""), ("y",), {**PADS, **attrs},
                domain=DOMAIN)
    with pytest.raises(ShapeError, match=f"FusedConv.*{message}"):
        Graph(inputs, {"w": W, "b": B}, [node], ["y"])


@pytest.mark.parametrize("domain", [DOMAIN, ""])
def test_fused_ops_cannot_come_from_an_onnx_model(domain):
    model = single_op_model("FusedConv", [X, W], {"activation": "Relu"}, domain=domain)
    with pytest.raises(UnsupportedOperator, match="FusedConv"):
        import_onnx(model)


def test_fused_op_round_trips_through_the_egraph_with_its_domain():
    attrs = {**PADS, "activation": "LeakyRelu", "activation_params": (0.2,)}
    g = conv_graph(fused=Node("FusedConv", ("x", "w", "b", "x"), ("y",), attrs, domain=DOMAIN))
    enc = encode(g)
    js = serialize(enc.egraph)
    back = decode(js, first_choice(js), enc)
    (node,) = back.nodes
    assert (node.op, node.domain, node.attrs["activation_params"]) == ("FusedConv", DOMAIN, (0.2,))
    np.testing.assert_array_equal(run_graph(back, {"x": X})[0], run_graph(g, {"x": X})[0])


@pytest.mark.parametrize("add", ["Add", "Sum"])
@pytest.mark.parametrize("conv_first", [True, False])
def test_conv_residual_relu_becomes_one_fused_conv(add, conv_first):
    args = ("c", "x") if conv_first else ("x", "c")
    g = conv_graph(Node(add, args, ("a",)), Node("Relu", ("a",), ("y",)))
    out, report = optimize(g, REF, families=("algebra", "fusion"))
    (node,) = out.nodes
    assert (node.op, node.domain, node.attrs["activation"], node.inputs) == ("FusedConv", DOMAIN, "Relu",
                                                                             ("x", "w", "b", "x"))
    assert report.cost_after < report.cost_before
    assert_same(run_graph(out, {"x": X})[0], run_graph(g, {"x": X})[0], "fused", rtol=0, atol=0)


def test_matmul_bias_relu_and_gemm_relu_fuse():
    a = RNG.standard_normal((8, 16)).astype(np.float32)
    inits = {"w": RNG.standard_normal((16, 16)).astype(np.float32),
             "bias": RNG.standard_normal(16).astype(np.float32)}
    nodes = [Node("MatMul", ("a", "w"), ("m",)), Node("Add", ("bias", "m"), ("s",)),
             Node("Relu", ("s",), ("r",)), Node("Gemm", ("r", "w", "bias"), ("g",), {"transB": 1}),
             Node("Sigmoid", ("g",), ("y",))]
    g = Graph({"a": TensorType.of(a)}, inits, nodes, ["y"])
    out, _ = optimize(g, REF, families=("fusion",))
    fused = [(n.op, n.attrs["activation"]) for n in out.nodes]
    assert fused == [("FusedMatMul", "Relu"), ("FusedGemm", "Sigmoid")]
    np.testing.assert_array_equal(run_graph(out, {"a": a})[0], run_graph(g, {"a": a})[0])


def enode(op, attrs, inputs):
    return ENode("n", op, "c", [f"c{i}" if t else "" for i, t in enumerate(inputs)], attrs)


def test_fused_conv_counts_conv_flops_plus_epilogue_and_costs_less_than_three_kernels():
    x, w, b = TensorType(F32, (1, 64, 56, 56)), TensorType(F32, (64, 64, 3, 3)), TensorType(F32, (64,))
    y = TensorType(F32, (1, 64, 56, 56))
    attrs = {**PADS, "group": 1}
    conv = (enode("Conv", attrs, [x, w, b]), [x, w, b])
    add = (enode("Add", {}, [y, x]), [y, x])
    relu = (enode("Relu", {}, [y]), [y])
    fused = (enode("FusedConv", {**attrs, "activation": "Relu"}, [x, w, b, x]), [x, w, b, x])
    assert flops(fused[0], fused[1], [y]) == flops(conv[0], conv[1], [y]) + 2 * y.size
    separate = sum(analytic_cost(n, ins, [y], REF) for n, ins in (conv, add, relu))
    together = analytic_cost(fused[0], fused[1], [y], REF)
    assert together < separate - 2 * REF.kernel_overhead_s
