import numpy as np

from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.fold import fold_constants

F32 = np.dtype(np.float32)


def test_nodes_over_constants_and_shapes_fold():
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    s = np.full(2, 2.0, np.float32)
    nodes = [Node("Mul", ("w", "s"), ("ws",)),             # constant x constant: folds
             Node("Transpose", ("ws",), ("w2",)),          # over a folded constant: folds
             Node("Shape", ("x",), ("shape",)),            # depends on x's type only: folds
             Node("Add", ("x", "w2"), ("y",)),             # needs x: stays
             Node("Neg", ("shape",), ("dead",))]           # feeds no output: dropped
    g = Graph({"x": TensorType(F32, (2, 3))}, {"w": w, "s": s}, nodes, ["y"])
    folded = fold_constants(g)
    assert [n.op for n in folded.nodes] == ["Add"]
    assert list(folded.initializers) == ["w2"]
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(run_graph(folded, {"x": x})[0], run_graph(g, {"x": x})[0])


def test_nothing_to_fold_returns_the_same_graph():
    g = Graph({"x": TensorType(F32, (2,))}, {}, [Node("Relu", ("x",), ("y",))], ["y"])
    assert fold_constants(g) is g
