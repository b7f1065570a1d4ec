"""The layout family: Transposes sink through element-wise ops toward the outputs, meet their
inverses and cancel (each rule's soundness is checked by test_rules.py)."""

from collections import Counter

import numpy as np
import pytest

from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.registry import OPS
from tensoregg.ir.terms import encode
from tensoregg.optimize import optimize
from tensoregg.rules import RULESETS, Phase, ruleset_of, saturate
from tensoregg.rules.layout import AXIS_OPS, BINARY, UNARY, VARIADIC
from tensoregg.targets import REF

F32 = np.dtype(np.float32)
SHAPE = (2, 3, 4, 5)


def inverse(perm):
    return tuple(int(i) for i in np.argsort(perm))


def transposed_graph(perm, middle, inputs=("x", "z"), consts=None):
    """Inputs of shape SHAPE[:rank], each transposed by ``perm``; ``middle`` nodes read ``t_<input>``
    and write ``s``; then Transpose(s, perm^-1) is the output ``y``."""
    shape = SHAPE[:len(perm)]
    nodes = [Node("Transpose", (n,), (f"t_{n}",), {"perm": perm}) for n in inputs]
    nodes += [*middle, Node("Transpose", ("s",), ("y",), {"perm": inverse(perm)})]
    graph = Graph({n: TensorType(F32, shape) for n in inputs}, consts or {}, nodes, ["y"])
    rng = np.random.default_rng(0)
    return graph, {n: rng.standard_normal(shape).astype(np.float32) for n in inputs}


def relu_add_chain(perm):
    """T(x, p) -> Relu -> Add(., T(z, p)) -> T(., p^-1)."""
    return transposed_graph(perm, [Node("Relu", ("t_x",), ("r",)), Node("Add", ("r", "t_z"), ("s",))])


def optimized_ops(graph, feeds):
    """Optimize with algebra and layout; check the result against the reference interpreter."""
    result, _ = optimize(graph, REF, families=("algebra", "layout"))
    for got, want in zip(run_graph(result, feeds), run_graph(graph, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    return Counter(n.op for n in result.nodes)


def fired(graph):
    """Matches per layout rule after saturating the layout family on ``graph``."""
    (report,) = saturate(encode(graph).egraph, [Phase("layout", RULESETS["layout"].ruleset)])
    assert report.stopped_by == "saturated", str(report)
    return {name: n for name, n in report.fired.items() if n}


@pytest.mark.parametrize("perm", [(1, 0), (1, 2, 0), (0, 2, 3, 1), (3, 1, 0, 2)])
def test_transposes_through_relu_and_add_cancel(perm):
    ops = optimized_ops(*relu_add_chain(perm))
    assert ops == Counter({"Relu": 1, "Add": 1})


def test_algebra_and_layout_saturate_in_a_few_iterations():
    enc = encode(relu_add_chain((1, 2, 0))[0])
    both = ruleset_of(RULESETS["algebra"].rules + RULESETS["layout"].rules, "algebra+layout")
    (report,) = saturate(enc.egraph, [Phase("algebra+layout", both)])
    assert report.stopped_by == "saturated" and report.iterations <= 8, str(report)
    assert report.fired["relu-transpose-sink"] and report.fired["add-transpose-sink"]


def test_a_longer_chain_with_scalars_and_casts_loses_every_transpose():
    """T(x) -> Sigmoid -> Mul(scalar) -> Max(T(z)) -> Softmax(axis 1) -> Cast -> T^-1."""
    middle = [Node("Sigmoid", ("t_x",), ("a",)), Node("Mul", ("half", "a"), ("b",)),
              Node("Max", ("b", "t_z"), ("c",)), Node("Softmax", ("c",), ("d",), {"axis": 1}),
              Node("Cast", ("d",), ("s",), {"to": 11})]  # float64
    graph, feeds = transposed_graph((2, 0, 1), middle, consts={"half": np.array([0.5], np.float32)})
    ops = optimized_ops(graph, feeds)
    assert ops["Transpose"] == 0 and sum(ops.values()) == 5, ops


def test_a_transposed_operand_of_lower_rank_does_not_move():
    """Add(T(x), b) with b of shape (3,): b aligns with T(x)'s last axis, not x's."""
    nodes = [Node("Transpose", ("x",), ("t",), {"perm": (2, 0, 1)}), Node("Add", ("t", "b"), ("y",))]
    graph = Graph({"x": TensorType(F32, (2, 3, 4))}, {"b": np.ones(3, np.float32)}, nodes, ["y"])
    assert not fired(graph)


def test_default_perms_of_different_ranks_do_not_move():
    """Transpose without perm reverses the axes: T(a) and T(b) may differ in rank."""
    nodes = [Node("Transpose", ("a",), ("ta",)), Node("Transpose", ("b",), ("tb",)),
             Node("Add", ("ta", "tb"), ("y",))]
    graph = Graph({"a": TensorType(F32, (3, 2)), "b": TensorType(F32, (3,))}, {}, nodes, ["y"])
    assert not fired(graph)


def test_every_elementwise_op_of_the_registry_has_rules():
    modules = {"tensoregg.ir.ops.elementwise", "tensoregg.ir.ops.activations"}
    elementwise = {d.name for d in OPS.values() if d.reference.__module__ in modules}
    covered = set(UNARY + BINARY + VARIADIC + AXIS_OPS)
    assert elementwise - covered == {"Identity"}  # algebra's identity-elim removes it
