"""The linalg family end to end: BatchNormalization folded away by optimize, MatMul+Add extracted as
Gemm, and the premises that keep the rules from firing where they would be wrong."""

import numpy as np
import pytest

from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.terms import encode
from tensoregg.optimize import optimize
from tensoregg.rules import RULESETS, Phase, saturate
from tensoregg.targets import REF

RNG = np.random.default_rng(0)


def rand(*shape, low=-1.0, high=1.0):
    return np.asarray(RNG.uniform(low, high, shape), np.float32)


def bn_params(channels, prefix=""):
    return {f"{prefix}scale": rand(channels, low=0.5, high=2.0), f"{prefix}shift": rand(channels),
            f"{prefix}mean": rand(channels), f"{prefix}var": rand(channels, low=0.5, high=2.0)}


def bn(x, out, prefix="", **attrs):
    names = tuple(f"{prefix}{p}" for p in ("scale", "shift", "mean", "var"))
    return Node("BatchNormalization", (x, *names), (out,), attrs)


def fired(graph):
    """Matches per linalg rule when the family is saturated over ``graph``."""
    (report,) = saturate(encode(graph).egraph, [Phase("linalg", RULESETS["linalg"].ruleset)])
    return {name: n for name, n in report.fired.items() if n}


def optimized(graph, feeds):
    """``graph`` optimized with linalg alone, checked against the reference interpreter."""
    result, _ = optimize(graph, REF, families=("linalg",))
    for got, want in zip(run_graph(result, feeds), run_graph(graph, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return result


def ops(graph):
    return [n.op for n in graph.nodes]


def conv_bn_relu(spatial, with_bias, channels=4):
    consts = {"w": rand(channels, 3, *(3,) * spatial), **bn_params(channels)}
    if with_bias:
        consts["b"] = rand(channels)
    nodes = [Node("Conv", ("x", "w", "b" if with_bias else ""), ("t",), {"pads": [1] * 2 * spatial}),
             bn("t", "u", epsilon=1e-3), Node("Relu", ("u",), ("y",))]
    x = rand(2, 3, *(5,) * spatial)
    return Graph({"x": TensorType.of(x)}, consts, nodes, ["y"]), {"x": x}


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_bn_relu_folds_to_conv_relu(spatial, with_bias):
    graph, feeds = conv_bn_relu(spatial, with_bias)
    result = optimized(graph, feeds)
    assert ops(result) == ["Conv", "Relu"]
    conv = result.nodes[0]
    assert conv.inputs[1] in result.initializers and conv.inputs[2] in result.initializers


def test_gemm_bn_folds_to_gemm():
    consts = {"w": rand(6, 5), "c": rand(5), **bn_params(5)}
    nodes = [Node("Gemm", ("a", "w", "c"), ("t",), {"transB": 0, "alpha": 0.5}), bn("t", "y")]
    a = rand(3, 6)
    result = optimized(Graph({"a": TensorType.of(a)}, consts, nodes, ["y"]), {"a": a})
    assert ops(result) == ["Gemm"]


def test_matmul_add_becomes_gemm():
    a, b, c = rand(3, 4), rand(4, 5), rand(5)
    graph = Graph({"a": TensorType.of(a), "b": TensorType.of(b), "c": TensorType.of(c)}, {},
                  [Node("MatMul", ("a", "b"), ("t",)), Node("Add", ("c", "t"), ("y",))], ["y"])
    assert ops(optimized(graph, {"a": a, "b": b, "c": c})) == ["Gemm"]


def test_scalar_moves_onto_the_weight():
    a = rand(2, 3, 4)
    graph = Graph({"a": TensorType.of(a)}, {"b": rand(4, 5), "s": np.full((1,), 0.5, np.float32)},
                  [Node("MatMul", ("a", "b"), ("t",)), Node("Div", ("t", "s"), ("y",))], ["y"])
    assert ops(optimized(graph, {"a": a})) == ["MatMul"]


def test_bn_fold_needs_constant_weights_and_inference_mode():
    graph, _ = conv_bn_relu(2, True)
    as_input = Graph({**graph.inputs, "w": graph.types["w"]},
                     {k: v for k, v in graph.initializers.items() if k != "w"}, graph.nodes, ["y"])
    assert not fired(as_input)
    training = [bn("t", "u", training_mode=1) if n.op == "BatchNormalization" else n for n in graph.nodes]
    assert not fired(Graph(graph.inputs, graph.initializers, training, ["y"]))


def test_gemm_bn_fold_needs_beta_one():
    consts = {"w": rand(6, 5), "c": rand(5), **bn_params(5)}
    a = rand(3, 6)
    nodes = [Node("Gemm", ("a", "w", "c"), ("t",), {"beta": 2.0}), bn("t", "y")]
    assert not fired(Graph({"a": TensorType.of(a)}, consts, nodes, ["y"]))


def test_no_gemm_for_batched_matmul_or_growing_add():
    def matmul_add(a_shape, c_shape):
        types = {"a": TensorType(np.float32, a_shape), "b": TensorType(np.float32, (4, 5)),
                 "c": TensorType(np.float32, c_shape)}
        return Graph(types, {}, [Node("MatMul", ("a", "b"), ("t",)), Node("Add", ("t", "c"), ("y",))], ["y"])

    assert "matmul-add-to-gemm" in fired(matmul_add((3, 4), (3, 1)))
    assert not fired(matmul_add((2, 3, 4), (5,)))  # Gemm is 2-D only
    assert not fired(matmul_add((3, 4), (2, 3, 5)))  # the Add broadcasts the product up


def test_scalar_reassoc_needs_a_one_element_constant():
    def scaled(s):
        types = {"a": TensorType(np.float32, (3, 4))}
        return Graph(types, {"b": rand(4, 5), "s": s},
                     [Node("MatMul", ("a", "b"), ("t",)), Node("Mul", ("t", "s"), ("y",))], ["y"])

    assert "matmul-scalar-reassoc" in fired(scaled(rand()))
    assert not fired(scaled(rand(5)))  # a per-column scale: sound, but not this rule's premise
    assert not fired(scaled(rand(3, 1)))  # a per-row scale cannot move onto b


def conv_affine(s_shape, op="Mul", with_bias=False, dtype=np.float32, s_input=False):
    """x (1, 3, 6, 6) -> Conv(W (4, 3, 3, 3), B?) -> (1, 4, 4, 4) -> ``op`` with s of ``s_shape``
    (a constant or an input): 4 channels, and 4 along each spatial axis too."""
    x, s = rand(1, 3, 6, 6).astype(dtype), rand(*s_shape, low=0.5, high=2.0).astype(dtype)
    consts = {"w": rand(4, 3, 3, 3).astype(dtype), "b": rand(4).astype(dtype)}
    types = {"x": TensorType.of(x), **({"s": TensorType.of(s)} if s_input else {})}
    nodes = [Node("Conv", ("x", "w", "b" if with_bias else ""), ("t",)), Node(op, ("t", "s"), ("y",))]
    return Graph(types, {**consts, **({} if s_input else {"s": s})}, nodes, ["y"])


@pytest.mark.parametrize("s_shape", [(1, 4, 1, 1), (4, 1, 1), (), (1,)])
def test_per_channel_mul_folds_for_channel_and_one_element_constants(s_shape):
    assert set(fired(conv_affine(s_shape))) == {"conv-mul-fold-no-bias"}


@pytest.mark.parametrize("s_shape", [(4,), (1, 1, 1, 4), (4, 1), (1, 4, 4, 1), (2, 1, 4, 1, 1)])
def test_per_channel_folds_need_a_constant_varying_only_along_channels(s_shape):
    # (4,) and (1, 1, 1, 4) run along the width axis, (4, 1) along the height axis, (1, 4, 4, 1)
    # along channels and height, (2, 1, 4, 1, 1) broadcasts the output up to rank 5
    for op in ("Mul", "Add"):
        for with_bias in (True, False):
            assert not fired(conv_affine(s_shape, op, with_bias)), (s_shape, op, with_bias)


def test_per_channel_folds_need_a_float32_or_float16_constant():
    assert not fired(conv_affine((4, 1, 1), s_input=True))
    assert not fired(conv_affine((4, 1, 1), dtype=np.float64))
    assert fired(conv_affine((4, 1, 1), dtype=np.float16)) == {"conv-mul-fold-no-bias": 1}


def test_biasless_add_fold_needs_a_full_channel_vector():
    assert fired(conv_affine((4, 1, 1), "Add")) == {"conv-add-fold-no-bias": 1}
    assert not fired(conv_affine((1,), "Add"))  # no C-long bias to add a scalar to
    assert fired(conv_affine((1,), "Add", with_bias=True)) == {"conv-add-fold": 1}


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("with_bn", [True, False])
def test_conv_mul_add_relu_folds_to_one_fused_conv(spatial, with_bn):
    """inception_v2's Conv -> BatchNormalization -> Mul -> Add -> Relu (scale and shift of shapes
    (C, 1, ...) and (1, C, 1, ...), the Mul commuted) ends as one FusedConv over constants."""
    x = rand(2, 3, *(5,) * spatial)
    consts = {"w": rand(4, 3, *(3,) * spatial), "s": rand(4, *(1,) * spatial),
              "t": rand(1, 4, *(1,) * spatial), **bn_params(4)}
    nodes = [Node("Conv", ("x", "w"), ("c",)), bn("c", "u"), Node("Mul", ("s", "u"), ("v",)),
             Node("Add", ("v", "t"), ("z",)), Node("Relu", ("z",), ("y",))]
    if not with_bn:
        nodes = [Node("Conv", ("x", "w"), ("u",)), *nodes[2:]]
    graph, feeds = Graph({"x": TensorType.of(x)}, consts, nodes, ["y"]), {"x": x}
    result, _ = optimize(graph, REF, families=("linalg", "fusion"))
    for got, want in zip(run_graph(result, feeds), run_graph(graph, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    (fused,) = result.nodes
    assert fused.op == "FusedConv" and fused.attrs["activation"] == "Relu"
    assert all(name in result.initializers for name in fused.inputs[1:3])


CONV_AFFINE = [r for r in RULESETS["linalg"].rules if r.name.startswith(("conv-mul-fold", "conv-add-fold"))]


@pytest.mark.slow
@pytest.mark.parametrize("rule", CONV_AFFINE, ids=lambda r: r.name)
def test_mutation_tool_examples_reach_every_offset_and_rank(rule, monkeypatch):
    """The per-channel premises read a padding one of s's shape at each offset of s's axes to the
    output's (0 to 4) and output rank (3 to 5): the examples the mutation tool draws (derandomized, 6
    and then 30 for a survivor) must reach each, or a mutant that refuses such a valid case survives."""
    import tensoregg.testing.rulecheck as rulecheck

    seen = set()

    def record(rule, graph, feeds, must_fire=True):
        conv = next(n for n in graph.nodes if n.op == "Conv")
        rank = len(graph.types[conv.outputs[0]].shape)
        seen.add((rank, len(graph.initializers["s"].shape) + 5 - rank))
        return 0

    monkeypatch.setattr(rulecheck, "check_rule", record)
    for examples in (6, 30):
        rulecheck.check_rule_cases(rule, examples, 0, quick=True)
    assert {o for _, o in seen} == set(range(6)) and {r for r, _ in seen} == {3, 4, 5}, sorted(seen)
