"""tensoregg.explain and ``tensoregg explain``: what the optimizer did (text, JSON); user rule families."""

import json
from pathlib import Path

import numpy as np
from egglog import var

import tensoregg
from tensoregg.cli import main
from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.terms import CONSTRUCTORS, Tensor
from tensoregg.rules import Family

EXAMPLE = str(Path(__file__).parents[1] / "examples" / "tinycnn.onnx")
F32 = np.dtype(np.float32)


def relu_chain() -> Graph:
    nodes = [Node("Relu", ("x",), ("a",)), Node("Relu", ("a",), ("b",)), Node("Neg", ("b",), ("y",))]
    return Graph({"x": TensorType(F32, (2, 3))}, {}, nodes, ["y"])


def test_explain_reports_phases_costs_and_the_extracted_graph():
    e = tensoregg.explain(relu_chain())
    text = str(e)
    assert "phase algebra" in text and "stopped by saturated" in text and "limits" in text
    assert "relu-idempotent" in text and "Relu 2->1" in text and "extracted program" in text
    assert e.report.cost_after < e.report.cost_before
    assert e.op_counts() == {"before": {"Relu": 2, "Neg": 1}, "after": {"Relu": 1, "Neg": 1}}


def test_cli_explain_json(capsys):
    assert main(["explain", EXAMPLE, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"phases", "eclasses", "enodes", "cost_before", "cost_after", "ops", "graph"} <= set(data)
    assert data["phases"][0]["stopped_by"] in ("saturated", "iterations", "nodes", "time",
                                               "nodes (projected)", "time (projected)")


def test_cli_explain_names_unknown_families(capsys):
    assert main(["explain", EXAMPLE, "--families", "algebra,nope"]) == 2
    assert "unknown rule families ['nope']" in capsys.readouterr().err


def test_compile_runs_a_users_own_family():
    """A family written outside the package is passed to compile like a built-in one."""
    mine = Family("mine", "neg(neg(x)) written by a user")
    x = var("x", Tensor)
    neg = CONSTRUCTORS["Neg"].fn
    mine.rewrite("user-neg-neg", "-(-x) = x", neg(neg(x)), x)
    nodes = [Node("Neg", ("x",), ("a",)), Node("Neg", ("a",), ("b",)), Node("Relu", ("b",), ("y",))]
    graph = Graph({"x": TensorType(F32, (2, 3))}, {}, nodes, ["y"])
    module = tensoregg.compile(graph, rule_families=[mine])
    assert [n.op for n in module.graph.nodes] == ["Relu"]
    assert module.report is not None and module.report.phases[0].fired["user-neg-neg"] >= 1
    x_val = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(module.run(x=x_val)[0], run_graph(graph, {"x": x_val})[0])
