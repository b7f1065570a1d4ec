"""The interpreter on whole loop programs: the memory plan (views, in-place writes, shared workspace
bytes) is what it runs on, and outputs come back in the graph's order."""

import numpy as np

from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.memory_plan import Place
from tensoregg.targets.interp.program import InterpProgram

F32 = np.dtype(np.float32)
RNG = np.random.default_rng(0)


def test_views_in_place_writes_and_passed_through_outputs():
    """Relu written over its dead input, a Reshape (a view: no kernel), and outputs that are an
    input, a constant and one value twice."""
    c = RNG.standard_normal((2, 6)).astype(F32)
    nodes = [Node("Mul", ("x", "c"), ("m",)), Node("Softmax", ("m",), ("s",)), Node("Relu", ("s",), ("t",)),
             Node("Softmax", ("t",), ("u",)), Node("Reshape", ("u", "shape"), ("r",)),
             Node("Softmax", ("r",), ("y",))]
    graph = Graph({"x": TensorType(F32, (2, 6))}, {"c": c, "shape": np.array([3, 4])}, nodes,
                  ["y", "x", "c", "y"])
    program = InterpProgram(graph)
    assert program.program.skipped == {4} and program.program.aliases == {"t": "s", "r": "u"}
    x = RNG.standard_normal((2, 6)).astype(F32)
    got = program.run({"x": x})
    for g, w in zip(got, run_graph(graph, {"x": x}), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)
    assert got[0] is not got[3] and got[1] is not x


def test_a_wrong_memory_plan_gives_wrong_values():
    """Two values live at once given the same workspace bytes: the second MatMul overwrites the
    first's result that it reads, and the Add sees the damage."""
    w1, w2 = RNG.standard_normal((8, 8)).astype(F32), RNG.standard_normal((8, 8)).astype(F32)
    nodes = [Node("MatMul", ("x", "w1"), ("a",)), Node("MatMul", ("a", "w2"), ("b",)),
             Node("Add", ("a", "b"), ("y",))]
    graph = Graph({"x": TensorType(F32, (8, 8))}, {"w1": w1, "w2": w2}, nodes, ["y"])
    x = RNG.standard_normal((8, 8)).astype(F32)
    want = run_graph(graph, {"x": x})[0]
    program = InterpProgram(graph)
    places = program.program.plan.places
    assert places["a"].kind == places["b"].kind == "work" and places["a"].at != places["b"].at
    np.testing.assert_allclose(program.run({"x": x})[0], want, rtol=1e-5)
    places["b"] = Place("work", places["a"].at, places["b"].nbytes)
    assert not np.allclose(program.run({"x": x})[0], want, rtol=1e-3)
