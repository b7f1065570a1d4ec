"""The parallel family on a transformer encoder layer: Q, K and V merge into one MatMul (and one
bias Add), saturation stays small, and the merged program is correct and cheaper under the
analytic cost; plus inputs the rules must leave alone."""

import numpy as np
import pytest

import tensoregg
from tensoregg.extraction.cost import analytic_cost
from tensoregg.extraction.greedy import dag_cost, extract_greedy, node_costs
from tensoregg.extraction.view import build_view
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.terms import GET, decode, encode, first_choice, serialize
from tensoregg.rules import Phase, saturate
from tensoregg.rules.parallel import parallel
from tensoregg.targets import REF
from tensoregg.testing_models import encoder_layer

X = np.random.default_rng(1).standard_normal((1, 16, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def saturated():
    graph = import_onnx(encoder_layer())
    enc = encode(graph)
    (report,) = saturate(enc.egraph, [Phase("parallel", parallel.ruleset, max_iterations=10)])
    js = serialize(enc.egraph)
    return graph, enc, report, js, build_view(js, enc)


def merged_choice(js, view, ways=3):
    """The program whose parallel ops all come from one ``ways``-way Split of a merged op with
    merged biases (an Add before the Split): the original choice elsewhere."""
    classes = view.classes
    split = next(n for nodes in classes.values() for n in nodes
                 if n.op == "Split" and n.attrs["num_outputs"] == ways
                 and any(a.op == "Add" for a in classes[n.inputs[0]]))
    choice = first_choice(js)
    for cid, nodes in classes.items():
        for n in nodes:
            if n.op == GET and n.inputs[0] == split.eclass:
                choice[cid] = n.id
    return choice


def test_encoder_layer_matches_onnxruntime():
    import onnxruntime as ort

    model = encoder_layer()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": X})
    got = tensoregg.compile(model, optimize=False).run(X)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)


def test_saturation_terminates_small(saturated):
    _, _, report, _, _ = saturated
    assert report.stopped_by == "saturated" and report.iterations <= 3, str(report)
    assert report.fired["matmul-merge-parallel-3"] == 6  # the 3! orders of Q, K, V
    assert report.fired["add-merge-split-3-bias-first"] == 6
    assert report.nodes_after < 3 * report.nodes_before, str(report)


def test_qkv_come_from_one_matmul(saturated):
    graph, enc, _, js, view = saturated
    merged = decode(js, merged_choice(js, view), enc, view.classes)
    readers = [n for n in merged.nodes if n.op == "MatMul" and "x" in n.inputs]
    assert len(readers) == 1 and merged.types[readers[0].outputs[0]].shape == (1, 16, 192)
    assert sum(n.op == "MatMul" for n in merged.nodes) == sum(n.op == "MatMul" for n in graph.nodes) - 2
    assert sum(n.op == "Split" for n in merged.nodes) == 1
    np.testing.assert_allclose(run_graph(merged, {"x": X})[0], run_graph(graph, {"x": X})[0], rtol=1e-5,
                               atol=1e-6)


def test_merged_program_is_cheaper_under_the_analytic_cost(saturated):
    """Per e-class one small MatMul looks cheaper, so greedy extraction keeps the three; the merged
    program, paid once, is cheaper: an extractor that pays shared nodes once (ILP) picks it."""
    _, _, _, js, view = saturated
    costs = node_costs(view, analytic_cost, REF)
    original = dag_cost(view, first_choice(js), costs)
    merged = dag_cost(view, merged_choice(js, view), costs)
    greedy = dag_cost(view, extract_greedy(view, costs), costs)
    assert merged < original - 4e-6  # 3 MatMul + 3 Add kernels -> 1 MatMul + 1 Add + 1 Split
    assert greedy >= merged


def test_compile_with_the_family_stays_correct():
    module = tensoregg.compile(encoder_layer(), rule_families=("parallel",))
    want = tensoregg.compile(encoder_layer(), optimize=False).run(X)
    np.testing.assert_allclose(module.run(X)[0], want[0], rtol=1e-5, atol=1e-6)


F32 = np.dtype(np.float32)


def _graph(x_shape, op, weight_shapes, attrs=({}, {})):
    """``op(x, w_k)`` for two all-ones weights of ``weight_shapes``, node k with ``attrs[k]``."""
    inits = {f"w{k}": np.ones(s, np.float32) for k, s in enumerate(weight_shapes)}
    nodes = [Node(op, ("x", f"w{k}"), (f"y{k}",), attrs[k]) for k in range(2)]
    return Graph({"x": TensorType(F32, x_shape)}, inits, nodes, ["y0", "y1"])


@pytest.mark.parametrize("graph", [
    _graph((2, 3), "MatMul", [(3, 4), (3, 5)]),  # unequal widths: no constant split sizes to use
    _graph((3,), "MatMul", [(3,), (3,)]),  # 1-D weights: no output axis to split
    _graph((1, 4, 5, 5), "Conv", [(4, 2, 3, 3)] * 2, ({"group": 2}, {"group": 2})),  # groups would mix
    _graph((1, 2, 5, 5), "Conv", [(4, 2, 3, 3)] * 2, ({"strides": (2, 2)}, {})),
], ids=["unequal-widths", "vector-weights", "grouped-conv", "different-strides"])
def test_rules_leave_unmergeable_ops_alone(graph):
    enc = encode(graph)
    report = enc.egraph.run(parallel.ruleset)
    assert not any(report.num_matches_per_rule.values())
