import numpy as np
import pytest

import tensoregg
from tensoregg.errors import InvalidModel
from tensoregg.ir import Graph, Node, TensorType, format_graph, run_graph

F32 = np.dtype(np.float32)


def small_graph(nodes):
    return Graph({"x": TensorType(F32, (2, 3))}, {"w": np.arange(3, dtype=np.float32)}, nodes, ["y"])


def test_nodes_are_put_in_topological_order():
    g = small_graph([Node("Relu", ("t",), ("y",)), Node("Add", ("x", "w"), ("t",))])
    assert [n.op for n in g.nodes] == ["Add", "Relu"]
    assert g.types["t"] == TensorType(F32, (2, 3))


def test_interpreter_runs_graph():
    g = small_graph([Node("Add", ("x", "w"), ("t",)), Node("Relu", ("t",), ("y",))])
    x = np.array([[-5, 0, 1], [1, -1, -3]], np.float32)
    (y,) = run_graph(g, {"x": x})
    np.testing.assert_array_equal(y, np.maximum(x + np.arange(3), 0))


def test_printer_is_readable():
    g = small_graph([Node("Add", ("x", "w"), ("y",))])
    assert format_graph(g) == (
        "graph graph(%x: f32[2,3]) {\n"
        "  %w = const f32[3]\n"
        "  %y = Add(%x, %w) : f32[2,3]\n"
        "  return %y\n"
        "}")


def test_graph_rejects_redefinition():
    with pytest.raises(InvalidModel, match="twice"):
        small_graph([Node("Relu", ("x",), ("w",)), Node("Relu", ("x",), ("y",))])


def test_graph_rejects_cycle():
    with pytest.raises(InvalidModel, match="cycle"):
        small_graph([Node("Relu", ("y",), ("t",)), Node("Relu", ("t",), ("y",))])


def test_compile_accepts_a_graph():
    g = small_graph([Node("Mul", ("x", "w"), ("y",))])
    module = tensoregg.compile(g)
    assert module.input_names == ["x"] and module.output_names == ["y"]
    assert module.output_types == [TensorType(F32, (2, 3))]
    (y,) = module.run(x=np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(y, np.tile(np.arange(3, dtype=np.float32), (2, 1)))


def test_unknown_target_is_a_compile_error():
    with pytest.raises(tensoregg.CompileError, match="cuda9"):
        tensoregg.compile(small_graph([Node("Relu", ("x",), ("y",))]), target="cuda9")
