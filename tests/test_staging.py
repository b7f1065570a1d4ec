"""Staged execution (tensoregg.staging): a data-dependent op over run-time values runs on the host
between compiled stages; what follows it is compiled per actual shape."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper

import tensoregg
from tensoregg.errors import ArtifactError, CompileError, ResourceError
from tensoregg.ir import Graph, Node, TensorType
from tensoregg.ir.bounds import check_within
from tensoregg.ir.interpreter import run_graph
from tensoregg.staging import StagedProgram
from tensoregg.testing import single_op_model

F32 = np.float32


def nonzero_then_more() -> Graph:
    """Relu -> NonZero -> Transpose -> Cast -> ReduceSum, and a branch that reads no bound."""
    return Graph({"x": TensorType(F32, (2, 3))}, {"w": np.full((2, 3), 2, F32)},
                 [Node("Relu", ("x",), ("r",)), Node("NonZero", ("r",), ("nz",)),
                  Node("Transpose", ("nz",), ("t",), {"perm": (1, 0)}),
                  Node("Cast", ("t",), ("c",), {"to": 1}),
                  Node("ReduceSum", ("c",), ("s",), {"keepdims": 1}), Node("Mul", ("r", "w"), ("m",))],
                 ["nz", "s", "c", "m"])


def test_ops_after_nonzero_compile_per_count(caplog):
    graph = nonzero_then_more()
    module = tensoregg.compile(graph, "llvm", optimize=False)
    program = module.program
    assert isinstance(program, StagedProgram) and module.outputs[0].shape == (2, 6)  # the upper bound
    assert [s.host for s in program.stages] == [False, True, False]
    assert [n.op for n in program.stages[0].nodes] == ["Relu", "Mul"]  # everything reading no bound
    xs = [np.array([[1, 0, 2], [0, 0, 3]], F32), np.array([[1, -1, 2], [0, 5, 3]], F32),
          np.array([[0, 4, 2], [0, 0, 3]], F32), -np.ones((2, 3), F32)]
    with caplog.at_level("INFO", logger="tensoregg.staging"):
        for x in xs:
            got, want = module.run(x), run_graph(graph, {"x": x})
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape
                np.testing.assert_array_equal(g, w)
    assert program.compiles == 3  # counts 3, 4, 3 again (cached), 0
    assert sum("staging: compiling" in r.message for r in caplog.records) == 3


def test_the_cache_drops_the_least_recently_used_shape():
    program = tensoregg.compile(nonzero_then_more(), "ref", optimize=False).program
    program.cache_size = 1
    for x in ([1, 0, 0], [1, 1, 0], [1, 0, 0]):
        program.run({"x": np.array([x, x], F32)})
    assert program.compiles == 3 and len(program.stages[2].compiled) == 1


def test_bounded_graph_outputs_need_no_compile_at_run_time():
    graph = Graph({"x": TensorType(np.int64, (5,))}, {},
                  [Node("Unique", ("x",), ("y", "i", "inv", "n"), {"sorted": 0})], ["y", "i", "inv", "n"])
    module = tensoregg.compile(graph, "llvm")
    x = np.array([3, 1, 3, 0, 1], np.int64)
    for g, w in zip(module.run(x), run_graph(graph, {"x": x})):
        np.testing.assert_array_equal(g, w)
    assert module.program.compiles == 0


def test_a_bound_over_the_memory_limit_is_refused_naming_the_node(monkeypatch):
    monkeypatch.setenv("TENSOREGG_MEMORY_LIMIT", "1M")
    graph = Graph({"x": TensorType(F32, (64, 64, 64))}, {}, [Node("NonZero", ("x",), ("big",))], ["big"])
    with pytest.raises(ResourceError, match=r"NonZero node 'big' .*upper bound.*i64\[3,262144\]"):
        tensoregg.compile(graph, "llvm")


def test_saving_a_staged_module_is_refused(tmp_path):
    module = tensoregg.compile(nonzero_then_more(), "ref", optimize=False)
    with pytest.raises(ArtifactError, match=r"NonZero node 'nz'.*cannot be saved"):
        module.save(tmp_path / "m.tegg")


def test_shape_of_a_bounded_value_is_computed_not_folded():
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Shape", ["nz"], ["shape"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("shape", onnx.TensorProto.INT64, [2])])
    module = tensoregg.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "llvm")
    np.testing.assert_array_equal(module.run(np.array([1, 0, 2, 0], F32))[0], [1, 2])


def test_a_result_beyond_its_bound_is_refused():
    node = Node("NonZero", ("x",), ("nz",))
    check_within(node, [np.zeros((2, 6), np.int64)], [TensorType(np.int64, (2, 6))])
    with pytest.raises(CompileError, match=r"NonZero node 'nz' output 0: gave i64\[2,7\], beyond"):
        check_within(node, [np.zeros((2, 7), np.int64)], [TensorType(np.int64, (2, 6))])


@st.composite
def data_dependent_cases(draw):
    """A NonZero, Unique or Compress node over inputs given at run time (small ints: ties, zeros)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    x = draw(hnp.arrays(np.int64, shape, elements=st.integers(-1, 1)))
    op = draw(st.sampled_from(["NonZero", "Unique", "Compress"]))
    if op == "NonZero":
        return op, [x.astype(F32)], {}, 1
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    along = {} if axis is None else {"axis": axis}
    if op == "Unique":
        return op, [x], {"sorted": draw(st.sampled_from([0, 1])), **along}, 4
    n = x.size if axis is None else shape[axis]
    condition = draw(hnp.arrays(np.bool_, draw(st.integers(0, n))))
    return op, [x.astype(F32), condition], along, 1


@settings(max_examples=40, deadline=None)
@given(data_dependent_cases())
def test_data_dependent_ops_match_onnxruntime(case):
    op, inputs, attrs, n_outputs = case
    model = single_op_model(op, inputs, attrs, n_outputs=n_outputs)
    dtypes = [np.int64 if op == "NonZero" else inputs[0].dtype] + [np.int64] * 3
    for out, dtype in zip(model.graph.output, dtypes):  # onnxruntime needs them
        out.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    feeds = {f"in{i}": a for i, a in enumerate(inputs)}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)
    module = tensoregg.compile(model, "llvm")
    for got, expected in zip(module.run(**feeds), want):
        assert got.dtype == expected.dtype and got.shape == expected.shape, (got, expected)
        np.testing.assert_array_equal(got, expected)
    assert module.program.compiles == 0  # the graph's outputs are the data-dependent ones


def test_empty_values_the_target_declines_run_in_the_reference_interpreter(caplog):
    """Nothing selected: llvm declines a Gather from an empty axis; that stage runs in ``ref``."""
    graph = Graph({"x": TensorType(F32, (4,))}, {"zero": np.zeros((), F32), "axes": np.array([0], np.int64)},
                  [Node("Greater", ("x", "zero"), ("c",)), Node("Compress", ("x", "c"), ("y",), {"axis": 0}),
                   Node("NonZero", ("c",), ("nz",)), Node("Squeeze", ("nz", "axes"), ("i",)),
                   Node("Sub", ("i", "i"), ("first",)),
                   Node("Gather", ("y", "first"), ("out",), {"axis": 0})],
                  ["out"])
    module = tensoregg.compile(graph, "llvm", optimize=False)
    with caplog.at_level("INFO", logger="tensoregg.staging"):
        for x in ([-1, 3, 0, 2], [-1, -3, 0, -2]):
            x = np.array(x, F32)
            np.testing.assert_array_equal(module.run(x)[0], run_graph(graph, {"x": x})[0])
    assert any("reference interpreter" in r.message for r in caplog.records)


def test_independent_data_dependent_ops_share_the_stage_after_them():
    graph = Graph({"x": TensorType(np.int64, (6,))}, {},
                  [Node("NonZero", ("x",), ("nz",)), Node("Transpose", ("nz",), ("t",), {"perm": (1, 0)}),
                   Node("Unique", ("x",), ("u",)), Node("Neg", ("u",), ("n",))], ["t", "n"])
    module = tensoregg.compile(graph, "ref", optimize=False)
    assert [(s.host, [n.op for n in s.nodes]) for s in module.program.stages] == [
        (True, ["NonZero"]), (True, ["Unique"]), (False, ["Transpose", "Neg"])]
    x = np.array([0, 3, 3, -1, 0, 2], np.int64)
    for got, want in zip(module.run(x), run_graph(graph, {"x": x})):
        np.testing.assert_array_equal(got, want)
    assert module.program.compiles == 1
