"""Memory limits: folding, memory plans and the reference interpreter refuse what is too large with a
ResourceError naming the node, op and shape, before allocating it."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensoregg
import tensoregg.ir.fold
from tensoregg.errors import ParameterError, ResourceError
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.limits import LIMIT_ENV, memory_limit

F = TensorProto.FLOAT
F32 = np.dtype(np.float32)


def onnx_model(nodes, inputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", F, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_folding_does_not_materialize_a_large_constant(monkeypatch):
    """ConstantOfShape of a constant shape made a 100-byte model into a 1 GiB weight: past the fold
    limit (and its inputs' size) the node stays, computed at run time."""
    monkeypatch.setattr(tensoregg.ir.fold, "FOLD_BYTES", 1 << 10)
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])]
    x = helper.make_tensor_value_info("x", F, [1])
    model = onnx_model(nodes, [x], [("s", np.array([1 << 12], np.int64))])
    graph = import_onnx(model)
    assert [n.op for n in graph.nodes] == ["ConstantOfShape", "Add"]
    assert sum(v.nbytes for v in graph.initializers.values()) < 1 << 10
    np.testing.assert_array_equal(tensoregg.compile(model).run(np.ones(1, F32))[0], np.ones(1 << 12))


def expand_model(n):
    """x expanded to (n, n) and summed: an n * n intermediate."""
    return onnx_model([helper.make_node("Expand", ["x", "s"], ["e"]),
                       helper.make_node("ReduceSum", ["e"], ["y"], keepdims=0)],
                      [helper.make_tensor_value_info("x", F, [1])], [("s", np.array([n, n], np.int64))])


@pytest.mark.parametrize("target", ["llvm", "interp"])
def test_memory_plan_over_the_limit_is_refused_at_compile(target):
    """A 4 TiB intermediate died in a raw OSError from the workspace mapping."""
    with pytest.raises(ResourceError, match=r"Expand node 'e'.*f32\[1048576,1048576\]"):
        tensoregg.compile(expand_model(1 << 20), target)


def test_limit_from_the_environment(monkeypatch):
    """TENSOREGG_MEMORY_LIMIT sets the limit (with a unit suffix); a malformed one is a ParameterError."""
    model = expand_model(1 << 10)  # a 4 MiB intermediate
    assert tensoregg.compile(model, optimize=False).run(np.ones(1, F32))[0] == 1 << 20
    monkeypatch.setenv(LIMIT_ENV, "1M")
    assert memory_limit() == 1 << 20
    with pytest.raises(ResourceError, match=f"Expand node 'e'.*{LIMIT_ENV}"):
        tensoregg.compile(model, optimize=False)
    monkeypatch.setenv(LIMIT_ENV, "lots")
    with pytest.raises(ParameterError, match=LIMIT_ENV):
        memory_limit()


def test_reference_interpreter_checks_before_allocating(monkeypatch):
    """An output over the limit is refused before the node runs; so is the window table (im2col) of
    a Conv whose output fits (numpy died allocating a 74 GiB table)."""
    monkeypatch.setenv(LIMIT_ENV, "1M")
    big = Graph({"x": TensorType(F32, (1 << 19,))}, {}, [Node("Relu", ("x",), ("y",), name="act")], ["y"])
    with pytest.raises(ResourceError, match=r"Relu node 'act' \(outputs f32\[524288\]\)"):
        run_graph(big, {"x": np.zeros(1 << 19, F32)})
    w = np.ones((1, 1, 16, 16), F32)
    node = Node("Conv", ("x", "w"), ("y",), name="c")
    conv = Graph({"x": TensorType(F32, (1, 1, 64, 64))}, {"w": w}, [node], ["y"])
    with pytest.raises(ResourceError, match=r"Conv node 'c'.*im2col: 2401 x 256 float32"):
        run_graph(conv, {"x": np.zeros((1, 1, 64, 64), F32)})
