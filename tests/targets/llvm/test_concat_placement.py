"""Concats whose inputs are written in place (tensoregg.ir.program.place_concats): the copy is gone,
the results are the reference's, at any thread count and in guard mode."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.targets.llvm import NativeModel
from tensoregg.testing import assert_same, check_native

F32 = np.dtype(np.float32)


def dense_block(batch: int, layers: int, growth: int, channels: int = 4, hw: int = 5, axis: int = 1,
                ops: tuple[str, ...] = ("Relu",), seed: int = 0) -> Graph:
    """DenseNet's pattern: each layer reads the concat of all before it (a 1x1 Conv, then ``ops``)
    and its output is concatenated to them, along ``axis`` (along the batch axis 0, the layers keep
    ``channels``, and the batch doubles with each)."""
    rng = np.random.default_rng(seed)
    nodes, weights = [Node("Neg", ("x",), ("c0",))], {}
    c = channels
    for i in range(layers):
        growth = growth if axis % 4 == 1 else channels
        weights[f"w{i}"] = rng.standard_normal((growth, c, 1, 1)).astype(F32)
        nodes.append(Node("Conv", (f"c{i}", f"w{i}"), (f"y{i}",), {}))
        value = f"y{i}"
        for j, op in enumerate(ops):
            nodes.append(Node(op, (value,), (f"y{i}_{j}",)))
            value = f"y{i}_{j}"
        nodes.append(Node("Concat", (f"c{i}", value), (f"c{i + 1}",), {"axis": axis}))
        c += growth if axis % 4 == 1 else 0
    nodes.append(Node("Sigmoid", (f"c{layers}",), ("out",)))
    return Graph({"x": TensorType(F32, (batch, channels, hw, hw))}, weights, nodes, ["out"])


def runs_like_the_reference(graph: Graph, model: NativeModel) -> None:
    x = np.random.default_rng(1).standard_normal(graph.inputs["x"].shape).astype(F32)
    want = run_graph(graph, {"x": x})
    for threads in (1, 2):
        model.num_threads = threads
        for got, w in zip(model.run({"x": x}), want, strict=True):
            assert_same(got, w, f"{threads} threads", 1e-5, 1e-5)
    assert check_native(graph, {"x": x}, require=True)  # guard mode, kernel by kernel


def test_a_dense_block_writes_each_layer_once_into_the_last_concat():
    graph = dense_block(batch=1, layers=3, growth=2)
    model = NativeModel(graph)
    concats = {k for k, n in enumerate(graph.nodes) if n.op == "Concat"}
    assert concats <= model.views  # no Concat kernel runs
    plan = model.plan
    held = ("c0", "y0_0", "c1", "y1_0", "c2", "y2_0")
    assert {v: plan.home(v)[0] for v in plan.inside} == dict.fromkeys(held, "c3")
    layer = 2 * 5 * 5 * 4  # bytes of one layer's output (growth 2, 5x5, float32)
    base = plan.places["c3"].at
    offsets = [plan.places[v].at - base for v in ("c0", "y0_0", "y1_0", "y2_0")]
    assert offsets == [0, 2 * layer, 3 * layer, 4 * layer]
    assert plan.places["c2"].at == base and plan.places["c2"].nbytes == 4 * layer
    runs_like_the_reference(graph, model)


def test_a_concat_that_does_not_qualify_still_copies():
    """Batch 2 along axis 1: each input is two runs of the output's bytes (not placed); along axis 0
    (the outer one) it is one run again (placed)."""
    assert not NativeModel(dense_block(batch=2, layers=2, growth=3)).plan.inside
    graph = Graph({"x": TensorType(F32, (2, 3)), "z": TensorType(F32, (1, 3))}, {},
                  [Node("Relu", ("x",), ("r",)), Node("Concat", ("r", "x"), ("a",), {"axis": 0}),
                   Node("Exp", ("z",), ("e",)), Node("Concat", ("e", "r"), ("b",), {"axis": 0}),
                   Node("Add", ("a", "a"), ("out",))], ["out", "b"])
    model = NativeModel(graph)
    assert model.plan.inside == {}  # a graph input (x), an output (b), r in two concats
    feeds = {"x": np.arange(6, dtype=F32).reshape(2, 3) - 2, "z": np.ones((1, 3), F32)}
    for got, want in zip(model.run(feeds), run_graph(graph, feeds), strict=True):
        assert_same(got, want, "output", 1e-6, 1e-6)


@settings(max_examples=6, deadline=None)
@given(batch=st.sampled_from([1, 2]), layers=st.integers(1, 3), growth=st.integers(1, 5),
       axis=st.sampled_from([0, 1, -3]), hw=st.integers(1, 4),
       ops=st.lists(st.sampled_from(["Relu", "Neg", "Sigmoid", "Abs"]), max_size=2).map(tuple))
def test_placed_concats_compute_what_the_reference_does(batch, layers, growth, axis, hw, ops):
    graph = dense_block(batch, layers, growth, hw=hw, axis=axis, ops=ops)
    model = NativeModel(graph)
    assert bool(model.plan.inside) == (batch == 1 or axis == 0)
    runs_like_the_reference(graph, model)


def test_a_placed_value_shares_its_memory_with_no_other():
    """Neg would write over the Relu it reads (its input dies there), which would put it outside the
    Concat's output: a placed value takes no part in reuse_memory's sharing."""
    nodes = [Node("Relu", ("x",), ("a",)), Node("Neg", ("a",), ("b",)), Node("Exp", ("x",), ("d",)),
             Node("Concat", ("b", "d"), ("c",), {"axis": 0}), Node("Sigmoid", ("c",), ("out",))]
    graph = Graph({"x": TensorType(F32, (3, 4))}, {}, nodes, ["out"])
    model = NativeModel(graph, fuse=False)
    assert model.aliases == {} and model.plan.inside == {"b": ("c", 0), "d": ("c", 48)}
    runs_like_the_reference(graph, model)
