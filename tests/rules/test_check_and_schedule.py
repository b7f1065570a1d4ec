"""check_rule rejects unsound or inert rules; the scheduler stops at its limits."""

import time

import numpy as np
import pytest
from egglog import var

from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.terms import CONSTRUCTORS, Tensor, decode, encode, first_choice, serialize
from tensoregg.rules import Phase, saturate
from tensoregg.rules.registry import Family
from tensoregg.testing import check_rule

F32 = np.dtype(np.float32)
Relu, Neg, Add, Abs = (CONSTRUCTORS[n].fn for n in ("Relu", "Neg", "Add", "Abs"))
a, b, c = var("a", Tensor), var("b", Tensor), var("c", Tensor)


def chain_graph(ops):
    nodes, value = [], "x"
    for k, op in enumerate(ops):
        out = "y" if k == len(ops) - 1 else f"v{k}"
        nodes.append(Node(op, (value,), (out,)))
        value = out
    return Graph({"x": TensorType(F32, (4,))}, {}, nodes, ["y"])


FEEDS = {"x": np.array([-2.0, -0.5, 0.0, 3.0], np.float32)}


def test_unsound_rule_is_caught():
    bad = Family("bad", "").rewrite("relu-drops-neg", "wrong", Relu(Neg(a)), Relu(a))
    with pytest.raises(AssertionError, match="relu-drops-neg"):
        check_rule(bad, chain_graph(["Neg", "Relu"]), FEEDS)


def test_rule_that_does_not_fire_is_caught():
    rule = Family("f", "").rewrite("abs-idem", "abs(abs(x)) = abs(x)", Abs(Abs(a)), Abs(a))
    with pytest.raises(AssertionError, match="did not fire"):
        check_rule(rule, chain_graph(["Relu", "Relu"]), FEEDS)


def test_pathological_add_chain_stops_at_limits_and_stays_correct():
    """200 Adds under commutativity and associativity: the phase stops by a limit, in time."""
    ac = Family("ac", "")
    ac.rewrite("add-comm", "a+b = b+a", Add(a, b), Add(b, a))
    ac.rewrite("add-assoc", "(a+b)+c = a+(b+c)", Add(Add(a, b), c), Add(a, Add(b, c)))
    nodes, value = [], "x"
    for k in range(200):
        out = "y" if k == 199 else f"v{k}"
        nodes.append(Node("Add", (value, "w"), (out,)))
        value = out
    w = np.full(4, 0.25, np.float32)
    graph = Graph({"x": TensorType(F32, (4,))}, {"w": w}, nodes, ["y"])
    enc = encode(graph)
    start = time.perf_counter()
    (report,) = saturate(enc.egraph, [Phase("ac", ac.ruleset, max_iterations=50, max_nodes=20_000,
                                            max_seconds=3.0)])
    elapsed = time.perf_counter() - start
    assert report.stopped_by != "saturated" and elapsed < 10.0, str(report)
    assert report.fired["add-comm"] > 0 and report.nodes_after > report.nodes_before
    js = serialize(enc.egraph)
    back = decode(js, first_choice(js), enc)
    np.testing.assert_allclose(run_graph(back, FEEDS)[0], run_graph(graph, FEEDS)[0], rtol=1e-5)


def test_simplification_phase_saturates():
    from tensoregg.rules import RULESETS

    enc = encode(chain_graph(["Relu", "Relu", "Relu", "Neg", "Neg", "Identity"]))
    (report,) = saturate(enc.egraph, [Phase("simplify", RULESETS["algebra"].ruleset)])
    assert report.stopped_by == "saturated"
    assert report.fired["relu-idempotent"] >= 1 and report.fired["neg-involution"] >= 1
    assert "saturated" in str(report)
