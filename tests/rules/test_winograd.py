"""Winograd F(2x2, 3x3): the three ops' references against Conv, their compute definitions on the llvm
target, the conv-winograd rule (sound, and silent where it must not fire) and its place in the
targets' rule families and in extraction."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensoregg.errors import ShapeError, UnsupportedOperator
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.ops.winograd import DOMAIN
from tensoregg.ir.registry import get_op
from tensoregg.ir.terms import CONSTRUCTORS, encode
from tensoregg.optimize import optimize
from tensoregg.rules import RULESETS, Phase, saturate
from tensoregg.rules.winograd import PRODUCT
from tensoregg.targets import REF
from tensoregg.testing import check_native, check_rule, single_op_model

F32 = np.float32
RNG = np.random.default_rng(0)
RULE = RULESETS["winograd"].rules[0]
TOLERANCE = 1e-5
"""Winograd against Conv (both float32): |difference| <= TOLERANCE * max |Conv|. Measured: 5e-7 of the
largest output for C = K = 256 (4.3e-6 absolute, outputs up to 8.2, normal data with He-scaled
weights), 1.1e-6 for C = 256 with positive data (6.7e-4 absolute, outputs up to 624)."""


def rand(*shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, shape).astype(F32)


def reference(op, attrs, *inputs):
    return get_op(op, DOMAIN if op.startswith("Winograd") else "").reference(attrs, *inputs)


def winograd(x, w, b, pads):
    """Conv(x, w, b; pads) by the three ops' references and their product."""
    n, _, h, wd = x.shape
    shape = (n, w.shape[0], h + pads[0] + pads[2] - 2, wd + pads[1] + pads[3] - 2)
    m = np.einsum(PRODUCT, reference("WinogradWeights", {}, w), reference("WinogradInput", {"pads": pads}, x))
    return reference("WinogradOutput", {"output_shape": shape}, m, b)


def assert_close_to_conv(x, w, b, pads):
    want = reference("Conv", {"pads": pads, "group": 1}, x, w, b)
    got = winograd(x, w, b, pads)
    assert got.dtype == F32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE * np.abs(want).max())


# ---- the ops' references ------------------------------------------------------------------------------

@settings(max_examples=15)
@given(st.integers(1, 2), st.integers(1, 6), st.integers(1, 6), st.integers(3, 9), st.integers(3, 9),
       st.lists(st.integers(0, 2), min_size=4, max_size=4), st.booleans())
def test_references_compute_conv(n, c, k, h, w, pads, bias):
    assert_close_to_conv(rand(n, c, h, w), rand(k, c, 3, 3), rand(k) if bias else None, tuple(pads))


def test_references_compute_conv_with_256_channels():
    x = RNG.standard_normal((1, 256, 14, 14)).astype(F32)
    w = (RNG.standard_normal((256, 256, 3, 3)) * np.sqrt(2 / (9 * 256))).astype(F32)
    assert_close_to_conv(x, w, rand(256), (1, 1, 1, 1))
    assert_close_to_conv(rand(2, 256, 9, 9, low=0.0), rand(64, 256, 3, 3, low=0.0), None, (1, 0, 0, 1))


def test_op_layouts_by_hand():
    x = np.arange(16, dtype=F32).reshape(1, 1, 4, 4)  # one tile, no padding: d = x
    v = reference("WinogradInput", {}, x)
    bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], F32)
    np.testing.assert_array_equal(v[:, 0, 0, 0, 0], (bt @ x[0, 0] @ bt.T).reshape(16))
    m = np.zeros((16, 1, 1, 1, 1), F32)
    m[5] = 1  # xi = nu = 1: AT's column 1 is (1, 1)
    np.testing.assert_array_equal(reference("WinogradOutput", {"output_shape": (1, 1, 2, 2)}, m)[0, 0],
                                  np.ones((2, 2), F32))


@pytest.mark.parametrize("op, inputs, attrs, message", [
    ("WinogradWeights", [np.zeros((4, 2, 5, 5), F32)], {}, "3x3 filter"),
    ("WinogradWeights", [np.zeros((4, 2, 3, 3), np.float64)], {}, "must be float32"),
    ("WinogradInput", [np.zeros((1, 2, 2, 2), F32)], {}, "does not fit"),
    ("WinogradInput", [np.zeros((1, 2, 5, 5), F32)], {"pads": (1, 1)}, "4 values >= 0"),
    ("WinogradOutput", [np.zeros((16, 4, 1, 2, 3), F32)], {"output_shape": (1, 4, 4, 4)},
     "must be [16, 4, 1, 2, 2]"),
    ("WinogradOutput", [np.zeros((16, 4, 4), F32)], {"output_shape": (1, 4, 4, 4)}, "rank 5"),
    ("WinogradOutput", [np.zeros((16, 4, 1, 2, 2), F32), np.zeros(3, F32)], {"output_shape": (1, 4, 4, 4)},
     "B of shape [3]"),
])
def test_shape_rules_name_the_problem(op, inputs, attrs, message):
    feeds = {f"in{i}": a for i, a in enumerate(inputs)}
    with pytest.raises(ShapeError, match=message.replace("[", r"\[")):
        Graph({k: TensorType.of(a) for k, a in feeds.items()}, {},
              [Node(op, tuple(feeds), ("y",), attrs, domain=DOMAIN)], ["y"])


def test_onnx_models_cannot_name_the_ops():
    model = single_op_model("WinogradWeights", [np.zeros((4, 2, 3, 3), F32)], domain=DOMAIN)
    with pytest.raises(UnsupportedOperator, match="internal to tensoregg"):
        import_onnx(model)
    assert {"WinogradWeights", "WinogradInput", "WinogradOutput"} <= set(CONSTRUCTORS)


# ---- compute definitions (llvm) -------------------------------------------------------------------------

def one_op(op, inputs, attrs=None, then=None):
    """A graph of ``op`` (inputs fed) and optionally an element-wise ``then`` op after it."""
    feeds = {f"in{i}": a for i, a in enumerate(inputs) if a is not None}
    names = tuple(f"in{i}" if a is not None else "" for i, a in enumerate(inputs))
    nodes = [Node(op, names, ("t" if then else "y",), attrs or {}, domain=DOMAIN)]
    if then:
        nodes.append(Node(then, ("t",), ("y",)))
    return Graph({k: TensorType.of(a) for k, a in feeds.items()}, {}, nodes, ["y"]), feeds


@pytest.mark.parametrize("shape, pads", [((2, 3, 7, 9), (1, 1, 1, 1)), ((1, 3, 10, 8), None),
                                         ((1, 2, 9, 6), (0, 2, 1, 0)), ((2, 2, 5, 5), (0, 0, 0, 0))])
def test_input_compute(shape, pads):
    x = rand(*shape, low=-1, high=3)
    assert check_native(*one_op("WinogradInput", [x], {"pads": pads}), require=True)


def test_weights_compute():
    assert check_native(*one_op("WinogradWeights", [rand(5, 4, 3, 3, low=-1, high=3)]), require=True)


@pytest.mark.parametrize("output_shape", [(2, 4, 7, 10), (2, 4, 8, 9)])
@pytest.mark.parametrize("bias", [True, False])
def test_output_compute(output_shape, bias):
    n, k, ho, wo = output_shape
    m = rand(16, k, n, -(-ho // 2), -(-wo // 2), low=-1, high=3)
    inputs = [m, rand(k, low=-1, high=3) if bias else None]
    assert check_native(*one_op("WinogradOutput", inputs, {"output_shape": output_shape}), require=True)
    assert check_native(*one_op("WinogradOutput", inputs, {"output_shape": output_shape}, then="Relu"),
                        require=True)


def test_output_is_inlined_into_its_consumer():
    from tensoregg.targets.llvm import NativeModel

    graph, _ = one_op("WinogradOutput", [rand(16, 4, 1, 4, 5), rand(4)], {"output_shape": (1, 4, 8, 9)},
                      then="Relu")
    native = NativeModel(graph)
    assert [low.fused for low in native.lowered] == [[], ["t"]]


# ---- the rule -------------------------------------------------------------------------------------------

@settings(max_examples=8)
@given(st.data())
def test_rule_is_sound(data):
    check_rule(RULE, *data.draw(RULE.example()))


def conv_graph(x_shape=(1, 16, 10, 10), w_shape=(16, 16, 3, 3), bias=True, dtype=F32, then=(), consts=None,
               **attrs):
    """x -> Conv(w, b?) -> ``then`` nodes (their constants in ``consts``) -> y."""
    consts = {**(consts or {}), "w": rand(*w_shape).astype(dtype)}
    if bias:
        consts["b"] = rand(w_shape[0]).astype(dtype)
    nodes = [Node("Conv", ("x", "w", "b" if bias else ""), ("t" if then else "y",), attrs), *then]
    return Graph({"x": TensorType(dtype, x_shape)}, consts, nodes, ["y"])


def fired(graph, families=("winograd",)):
    """conv-winograd's matches when ``families`` are saturated in order over ``graph``."""
    reports = saturate(encode(graph).egraph, [Phase(f, RULESETS[f].ruleset) for f in families])
    return sum(r.fired.get(RULE.name, 0) for r in reports)


@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 1, 1, 1], "strides": [1, 1], "dilations": [1, 1]},
                                   {"kernel_shape": [3, 3], "pads": [0, 1, 2, 1]}])
def test_rule_fires(attrs):
    assert fired(conv_graph(**attrs)) == 1
    assert fired(conv_graph(bias=False, **attrs)) == 1


@pytest.mark.parametrize("graph", [
    conv_graph(strides=[2, 2], x_shape=(1, 16, 18, 18)),
    conv_graph(dilations=[2, 2], x_shape=(1, 16, 12, 12)),
    conv_graph(w_shape=(16, 16, 5, 5), x_shape=(1, 16, 12, 12)),
    conv_graph(w_shape=(16, 16, 3, 1), x_shape=(1, 16, 10, 8)),
    conv_graph(w_shape=(16, 8, 3, 3), group=2, x_shape=(1, 16, 10, 10)),
    conv_graph(pads=[1, 1, 1, 1], x_shape=(1, 16, 7, 9)),  # 7 x 9 = 63 outputs
    conv_graph(w_shape=(16, 15, 3, 3), x_shape=(1, 15, 10, 10)),
    conv_graph(w_shape=(15, 16, 3, 3)),
    conv_graph(auto_pad="SAME_UPPER"),
    conv_graph(dtype=np.float16),
], ids=["stride-2", "dilation-2", "5x5", "3x1", "group-2", "small-map", "15-in", "15-out", "auto-pad",
        "float16"])
def test_rule_does_not_fire(graph):
    assert fired(graph) == 0


def bn_relu(channels):
    """keyword arguments of ``conv_graph``: BatchNormalization and Relu after the Conv."""
    params = {"scale": rand(channels, low=0.5, high=2.0), "shift": rand(channels), "mean": rand(channels),
              "var": rand(channels, low=0.5, high=2.0)}
    nodes = [Node("BatchNormalization", ("t", "scale", "shift", "mean", "var"), ("u",)),
             Node("Relu", ("u",), ("y",))]
    return {"then": nodes, "consts": params}


def test_rule_fires_on_folded_and_non_constant_weights():
    graph = conv_graph(**bn_relu(16), pads=[1, 1, 1, 1])
    assert fired(graph, ("linalg", "winograd")) == 2  # the Conv as given and with BN folded into W, B
    as_input = Graph({**graph.inputs, "w": graph.types["w"]},
                     {k: v for k, v in graph.initializers.items() if k != "w"}, graph.nodes, ["y"])
    assert fired(as_input) == 1


def test_extraction_picks_winograd_where_the_target_says_it_pays():
    graph = conv_graph((1, 32, 28, 28), (32, 32, 3, 3), **bn_relu(32), pads=[1, 1, 1, 1])
    result, _ = optimize(graph, REF, families=("linalg", "winograd"))
    # REF's roofline: the direct Conv is compute-bound; the product does 4/9 of its multiplies
    assert [n.op for n in result.nodes] == ["WinogradInput", "Einsum", "WinogradOutput", "Relu"]
    assert not any(n in result.initializers for n in ("scale", "w"))  # W folded into U
    x = {"x": rand(1, 32, 28, 28)}
    want = run_graph(graph, x)[0]
    np.testing.assert_allclose(run_graph(result, x)[0], want, rtol=0, atol=TOLERANCE * np.abs(want).max())


def test_the_llvm_target_saturates_the_family_after_linalg_and_parallel():
    from tensoregg.targets.llvm.host import RULE_FAMILIES
    from tensoregg.targets.llvm.machines import MACHINES

    assert "winograd" not in REF.rule_families
    assert all(m.rule_families == RULE_FAMILIES for m in MACHINES.values())
    assert RULE_FAMILIES.index("parallel") < RULE_FAMILIES.index("winograd") < RULE_FAMILIES.index("fusion")


@pytest.mark.parametrize("cpu,channels,size,picked", [
    *((cpu, 256, 14, True) for cpu in ("znver3", "rocketlake", "znver4")),
    *((cpu, 64, 28, True) for cpu in ("znver3", "rocketlake", "znver4")),
    *((cpu, 8, 28, False) for cpu in ("znver3", "rocketlake", "znver4")),
    *((cpu, 256, 7, False) for cpu in ("znver3", "rocketlake", "znver4")),
])
def test_extraction_picks_winograd_where_the_machine_makes_it_pay(cpu, channels, size, picked):
    """On fixed machine descriptions (not the host's measurement), with the llvm target's schedules
    priced in the e-graph as ``compile`` does: 256 channels at 14x14 (measured 0.65 of the direct
    time) and 64 at 28x28 take the Winograd form, 8 channels and 7x7 maps stay direct. (The roofline
    alone, without schedule costs, kept 64 channels direct on the Intel kind.)"""
    from tensoregg.optimize import optimize
    from tensoregg.targets import registration
    from tensoregg.targets.llvm.machines import MACHINES

    graph = conv_graph((1, channels, size, size), (channels, channels, 3, 3), **bn_relu(channels),
                       pads=[1, 1, 1, 1])
    optimized, _ = optimize(graph, MACHINES[cpu], schedules=registration("llvm").schedules)
    assert ("WinogradInput" in [n.op for n in optimized.nodes]) == picked
    if picked:  # the form extracted computes the Conv, natively too
        import tensoregg

        x = rand(1, channels, size, size)
        want = run_graph(graph, {"x": x})[0]
        unscheduled = [dataclasses.replace(n, schedule=None) for n in optimized.nodes]  # MACHINES[cpu]'s
        native = Graph(optimized.inputs, optimized.initializers, unscheduled, optimized.outputs)  # kernels
        module = tensoregg.compile(native, "llvm", optimize=False)
        np.testing.assert_allclose(module.run(x)[0], want, rtol=0, atol=TOLERANCE * np.abs(want).max())
