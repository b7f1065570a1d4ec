"""Extraction: golden choices under hand-set costs, DAG sharing, and the optimize step."""

import numpy as np
import pytest

import tensoregg
from tensoregg.extraction.cost import analytic_cost
from tensoregg.extraction.greedy import dag_cost, extract_greedy, node_costs
from tensoregg.extraction.view import build_view
from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.terms import decode, encode, first_choice, serialize
from tensoregg.optimize import optimize
from tensoregg.rules import RULESETS, Phase, saturate
from tensoregg.targets import REF
from tensoregg.testing import light_model

F32 = np.dtype(np.float32)
X = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)


def graph(nodes, outputs=("y",)):
    return Graph({"x": TensorType(F32, (1, 4))}, {}, nodes, list(outputs))


def saturated(g):
    enc = encode(g)
    saturate(enc.egraph, [Phase("algebra", RULESETS["algebra"].ruleset)])
    js = serialize(enc.egraph)
    return enc, js, build_view(js, enc)


def per_op(view, table):
    """Hand-set costs: table[op] for operators, 0 for leaves."""
    return {n.id: table.get(n.op, 0.0) for nodes in view.classes.values() for n in nodes}


def test_extracts_the_cheaper_equivalent():
    enc, js, view = saturated(graph([Node("Relu", ("x",), ("r",)), Node("Relu", ("r",), ("y",))]))
    costs = per_op(view, {"Relu": 1.0})
    choice = extract_greedy(view, costs)
    assert dag_cost(view, choice, costs) == 1.0
    out = decode(js, choice, enc, view.classes)
    assert [n.op for n in out.nodes] == ["Relu"]


def test_shared_subterm_is_paid_once():
    nodes = [Node("Exp", ("x",), ("t",)), Node("Relu", ("t",), ("y",)), Node("Neg", ("t",), ("z",))]
    _, _, view = saturated(graph(nodes, ("y", "z")))
    costs = per_op(view, {"Exp": 10.0, "Relu": 1.0, "Neg": 1.0})
    choice = extract_greedy(view, costs)
    assert dag_cost(view, choice, costs) == 12.0  # a tree cost would pay Exp twice: 22


def test_costs_are_non_negative_on_a_zoo_model():
    g = tensoregg.compile(light_model("squeezenet"), "ref", optimize=False).graph
    _, js, view = saturated(g)
    costs = node_costs(view, analytic_cost, REF)
    assert all(c >= 0 for c in costs.values())
    assert dag_cost(view, first_choice(js), costs) > 0


def test_optimize_removes_redundant_work_and_reports_it():
    nodes = [Node("Identity", ("x",), ("i",)), Node("Relu", ("i",), ("r",)), Node("Relu", ("r",), ("d",)),
             Node("Dropout", ("d",), ("y",))]
    g = graph(nodes)
    out, report = optimize(g, REF)
    assert [n.op for n in out.nodes] == ["Relu"]
    assert report.cost_after < report.cost_before and not report.kept_original
    assert report.phases[0].stopped_by == "saturated"
    assert "relu-idempotent" in str(report) and "e-classes" in str(report)
    np.testing.assert_array_equal(run_graph(out, {"x": X})[0], np.maximum(X, 0))


def test_optimize_keeps_a_program_it_cannot_improve():
    g = graph([Node("Sigmoid", ("x",), ("y",))])
    out, report = optimize(g, REF)
    assert out is g and report.kept_original


def test_compile_reports_and_can_skip_optimization():
    model = light_model("bvlc_alexnet")
    optimized = tensoregg.compile(model)
    plain = tensoregg.compile(model, optimize=False)
    assert plain.report is None and optimized.report is not None
    assert len(optimized.graph.nodes) < len(plain.graph.nodes)  # the Dropouts are gone
    assert not any(n.op == "Dropout" for n in optimized.graph.nodes)


def test_unknown_rule_family_is_a_compile_error():
    with pytest.raises(tensoregg.CompileError, match="nosuch"):
        tensoregg.compile(graph([Node("Relu", ("x",), ("y",))]), rule_families=("nosuch",))


@pytest.mark.parametrize("equation, shapes, products", [
    ("ij,jk->ik", [(3, 4), (4, 5)], 4),
    ("ij,jk", [(3, 4), (4, 5)], 4),  # implicit output: the labels that occur once
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)], 4),
    ("ekc,ecnyx->eknyx", [(16, 8, 6), (16, 6, 1, 2, 3)], 6),  # Winograd's product: sums over c
    ("ii->i", [(3, 3)], 1),
])
def test_an_einsum_costs_two_flops_per_product(equation, shapes, products):
    """flops counts an Einsum's multiply-adds like a MatMul's: the extraction compares a Winograd
    product with the Conv it replaces by them."""
    from tensoregg.extraction.cost import flops
    from tensoregg.ir.terms import ENode

    out = np.einsum(equation, *[np.zeros(s, np.float32) for s in shapes]).shape
    node = ENode("n", "Einsum", "c", [], {"equation": equation})
    got = flops(node, [TensorType(F32, s) for s in shapes], [TensorType(F32, out)])
    assert got == 2 * np.prod(out) * products
