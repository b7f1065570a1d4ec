"""``ir.batching``: a graph it accepts computes each batch row apart (checked against the reference
interpreter on random graphs); graphs that mix rows are refused, naming the node."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tensoregg.errors import ShapeError
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir.batching import batch_axes, same_rows
from tensoregg.ir.interpreter import run_graph

F = TensorProto.FLOAT


def model(nodes, inits=(), feature=(4, 6)):
    """x [N, *feature] -> y, with ``nodes`` in between (the last writes y)."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, ["N", *feature])],
                              [helper.make_tensor_value_info("y", F, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def graph_at(m, n, feature=(4, 6)):
    return import_onnx(m, input_shapes={"x": [n, *feature]})


def accepts(m, feature=(4, 6)):
    g = graph_at(m, 2, feature)
    return g, batch_axes(g, {"x": 0})


# Steps that keep rows apart (each maps [N, 4, 6] to [N, 4, 6]) and steps that mix them; the
# random graphs below chain both kinds.
KEEP = [
    lambda k: ([helper.make_node("Relu", ["a"], [k])], []),
    lambda k: ([helper.make_node("Add", ["a", f"{k}c"], [k])],
               [(f"{k}c", np.full((1, 4, 6), 0.5, np.float32))]),
    lambda k: ([helper.make_node("Softmax", ["a"], [k], axis=-1)], []),
    lambda k: ([helper.make_node("ReduceSum", ["a", f"{k}ax"], [f"{k}r"], keepdims=1),
                helper.make_node("Add", ["a", f"{k}r"], [k])], [(f"{k}ax", np.array([2]))]),
    lambda k: ([helper.make_node("Transpose", ["a"], [f"{k}t"], perm=[0, 2, 1]),
                helper.make_node("Transpose", [f"{k}t"], [k], perm=[0, 2, 1])], []),
    lambda k: ([helper.make_node("Reshape", ["a", f"{k}s"], [f"{k}r"]),
                helper.make_node("Reshape", [f"{k}r", f"{k}s2"], [k])],
               [(f"{k}s", np.array([0, 24])), (f"{k}s2", np.array([-1, 4, 6]))]),
    lambda k: ([helper.make_node("Transpose", ["a"], [f"{k}t"], perm=[1, 0, 2]),
                helper.make_node("Relu", [f"{k}t"], [f"{k}r"]),
                helper.make_node("Transpose", [f"{k}r"], [k], perm=[1, 0, 2])], []),
    lambda k: ([helper.make_node("MatMul", ["a", f"{k}w"], [k])],
               [(f"{k}w", np.eye(6, dtype=np.float32) * 0.5)]),
    lambda k: ([helper.make_node("Slice", ["a", f"{k}b", f"{k}e", f"{k}x"], [f"{k}s"]),
                helper.make_node("Concat", [f"{k}s", f"{k}s"], [k], axis=2)],
               [(f"{k}b", np.array([0])), (f"{k}e", np.array([3])), (f"{k}x", np.array([2]))]),
]
MIX = [
    lambda k: ([helper.make_node("ReduceSum", ["a", f"{k}ax"], [f"{k}r"], keepdims=1),
                helper.make_node("Add", ["a", f"{k}r"], [k])], [(f"{k}ax", np.array([0]))]),
    lambda k: ([helper.make_node("Softmax", ["a"], [k], axis=0)], []),
    lambda k: ([helper.make_node("Reshape", ["a", f"{k}s"], [f"{k}r"]),
                helper.make_node("Reshape", [f"{k}r", f"{k}s2"], [k])],
               [(f"{k}s", np.array([-1])), (f"{k}s2", np.array([-1, 6, 4]))]),  # rows' elements interleave
    lambda k: ([helper.make_node("CumSum", ["a", f"{k}ax"], [k])], [(f"{k}ax", np.array(0))]),
    lambda k: ([helper.make_node("Slice", ["a", f"{k}b", f"{k}e", f"{k}x", f"{k}st"], [k])],
               [(f"{k}b", np.array([-1])), (f"{k}e", np.array([-100])), (f"{k}x", np.array([0])),
                (f"{k}st", np.array([-1]))]),  # the rows reversed
    lambda k: ([helper.make_node("Slice", ["a", f"{k}b", f"{k}e", f"{k}x"], [f"{k}s"]),  # row 1 twice
                helper.make_node("Concat", [f"{k}s", f"{k}s"], [k], axis=0)],
               [(f"{k}b", np.array([1])), (f"{k}e", np.array([2])), (f"{k}x", np.array([0]))]),
    lambda k: ([helper.make_node("Reshape", ["a", f"{k}s"], [f"{k}r"]),  # rows 0 and 1 halved and mixed
                helper.make_node("Transpose", [f"{k}r"], [k], perm=[1, 0, 2])],
               [(f"{k}s", np.array([4, 2, 6]))]),
    lambda k: ([helper.make_node("Transpose", ["a"], [f"{k}t"], perm=[1, 0, 2]),  # a sum over the rows
                helper.make_node("ReduceSum", [f"{k}t", f"{k}ax"], [f"{k}r"], keepdims=1),
                helper.make_node("Add", [f"{k}t", f"{k}r"], [f"{k}s"]),
                helper.make_node("Transpose", [f"{k}s"], [k], perm=[1, 0, 2])], [(f"{k}ax", np.array([1]))]),
]


def chain(steps):
    nodes, inits = [], []
    for i, (make, _) in enumerate(steps):
        more, consts = make(f"v{i}")
        source = "x" if i == 0 else f"v{i - 1}"
        nodes += [helper.make_node(n.op_type, [source if a == "a" else a for a in n.input], n.output,
                                   **{at.name: helper.get_attribute_value(at) for at in n.attribute})
                  for n in more]
        inits += consts
    nodes.append(helper.make_node("Identity", [f"v{len(steps) - 1}"], ["y"]))
    return model(nodes, inits)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(KEEP).map(lambda f: (f, True)),
                          st.sampled_from(MIX).map(lambda f: (f, False))), min_size=1, max_size=4),
       st.integers(0, 2**32 - 1))
def test_accepted_graphs_compute_rows_apart(steps, seed):
    m = chain(steps)
    keeps = all(k for _, k in steps)
    try:
        g2, axes = accepts(m)
    except ShapeError as e:
        assert not keeps, f"refused a graph that keeps rows apart: {e}"
        return
    assert keeps, "accepted a graph that mixes rows"
    x = np.random.default_rng(seed).standard_normal((2, 4, 6)).astype(np.float32)
    whole = run_graph(g2, {"x": x})[0]
    g1 = graph_at(m, 1)
    same_rows(g2, 2, g1, 1, axes)
    rows = np.concatenate([run_graph(g1, {"x": x[i:i + 1]})[0] for i in range(2)])
    np.testing.assert_array_equal(whole, rows)


@pytest.mark.parametrize(("nodes", "inits", "words"), [
    ([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1)],
     [("s", np.ones(4, np.float32)), ("b", np.zeros(4, np.float32)), ("m", np.zeros(4, np.float32)),
      ("v", np.ones(4, np.float32))], "training mode"),
    ([helper.make_node("Gemm", ["x2", "w"], ["y"], transA=1)], [("w", np.ones((2, 3), np.float32))],
     "contracts"),
    ([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)], [("i", np.array([0]))], "gathers along"),
    ([helper.make_node("Einsum", ["x"], ["y"], equation="nij->ij")], [], "does not know"),
    ([helper.make_node("Add", ["x", "c"], ["y"])], [("c", np.ones((2, 4, 6), np.float32))], "varies along"),
])
def test_rows_mixed_are_refused_naming_the_node(nodes, inits, words):
    if nodes[0].op_type == "Gemm":
        nodes = [helper.make_node("Flatten", ["x"], ["x2"], axis=1), *nodes]
    with pytest.raises(ShapeError, match=words) as info:
        accepts(model(nodes, inits))
    assert nodes[-1].op_type in str(info.value)


def test_a_constant_that_depends_on_the_batch_size_is_refused():
    """x / N (the batch size read with Shape): each bucket's graph divides by another constant."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Cast", ["n"], ["nf"], to=F),
             helper.make_node("Div", ["x", "nf"], ["y"])]
    m = model(nodes, [("zero", np.array(0))])
    g2, axes = accepts(m)
    with pytest.raises(ShapeError, match="depends on the batch size"):
        same_rows(g2, 2, graph_at(m, 4), 4, axes)


def test_the_batch_size_in_a_reshape_target_is_allowed():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
             helper.make_node("Concat", ["n1", "rest"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    m = model(nodes, [("zero", np.array(0)), ("zero1", np.array([0])), ("rest", np.array([24]))])
    g2, axes = accepts(m)
    same_rows(g2, 2, graph_at(m, 3), 3, axes)
    assert axes["y"] == 0


@pytest.mark.parametrize(("scale", "axis", "keeps"), [
    (np.float32(0.5), 1, True), (np.full(4, 0.5, np.float32), 1, True),
    (np.full(2, 0.5, np.float32), 0, False), (np.full((2, 4, 3), 0.5, np.float32), 2, False)])
def test_quantize_scales_along_the_batch_are_refused(scale, axis, keeps):
    """Per tensor and per axis off the batch keep rows apart; per axis along it, or per block (whose
    scale has the batch's size), do not."""
    block = {"block_size": 2} if scale.ndim > 1 else {}
    m = model([helper.make_node("QuantizeLinear", ["x", "s"], ["q"], axis=axis, **block),
               helper.make_node("DequantizeLinear", ["q", "s"], ["y"], axis=axis, **block)], [("s", scale)])
    if keeps:
        assert accepts(m)[1]["y"] == 0
    else:
        with pytest.raises(ShapeError, match="scale varies along the batch"):
            accepts(m)
