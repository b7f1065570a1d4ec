"""The interpreter on one-op models of every compute family, and on random graphs, against the
reference interpreter."""

import numpy as np
import pytest
from hypothesis import given, settings

from tensoregg.errors import IndexOutOfRange
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.targets.interp.program import InterpProgram
from tensoregg.testing import NATIVE_SLACK, assert_same, graphs, one_op_cases, single_op_model, tolerance

CASES = one_op_cases()


def check_interp(graph, feeds):
    """The interpreter's outputs equal the reference interpreter's (within the native tolerance)."""
    want = run_graph(graph, dict(feeds))
    got = InterpProgram(graph).run(feeds)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        rtol, atol = tolerance(np.asarray(w).dtype)
        assert_same(g, np.asarray(w), f"interp output {k}", rtol * NATIVE_SLACK, atol * NATIVE_SLACK)


@pytest.mark.parametrize("op, inputs, attrs, constant", CASES, ids=[c[0] for c in CASES])
def test_one_op_models(op, inputs, attrs, constant):
    outputs = {"Split": 2, "TopK": 2}.get(op, 1)
    model = single_op_model(op, inputs, attrs, n_outputs=outputs, constant=constant)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if i not in constant}
    graph = import_onnx(model)
    with np.errstate(all="ignore"):
        check_interp(graph, feeds)


@settings(max_examples=15)
@given(graphs())
def test_random_graphs(case):
    graph, feeds = case
    with np.errstate(all="ignore"):
        check_interp(graph, feeds)


@pytest.mark.parametrize("op,indices,attrs", [("Gather", np.array([5]), {"axis": 0}),
                                              ("GatherElements", np.full((5, 4), -6), {"axis": 0}),
                                              ("GatherND", np.array([[0, 4]]), {})])
def test_out_of_range_index_raises_naming_the_node(op, indices, attrs):
    """As the reference (and onnxruntime): an index outside its axis is an error, not a clamped read."""
    data = np.zeros((5, 4), np.float32)
    model = single_op_model(op, [data, indices.astype(np.int64)], attrs)
    with pytest.raises(IndexOutOfRange, match=f"{op} node 'out0'"):
        InterpProgram(import_onnx(model)).run({"in0": data, "in1": indices.astype(np.int64)})
