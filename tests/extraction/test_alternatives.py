"""Schedules chosen by the model's extraction (tensoregg.extraction.alternatives): every contraction's
schedules are alternatives in its e-class, priced by the target's cost model; the extracted program's
contraction nodes carry the chosen one, and the lowering tiles them as it says."""

import re

import numpy as np
import pytest

import tensoregg
from tensoregg.ir import Graph, Node, TensorType, get_op, run_graph
from tensoregg.ir.intrinsics import MicroKernel
from tensoregg.ir.loops import Invoke, statements
from tensoregg.ir.lower import contraction_problem
from tensoregg.ir.schedules import GemmSchedule, Untiled
from tensoregg.optimize import optimize
from tensoregg.targets import registration
from tensoregg.targets.llvm.gemm_schedules import priced_schedules
from tensoregg.targets.llvm.machines import MACHINES
from tensoregg.testing import light_model

F32 = np.dtype(np.float32)
RNG = np.random.default_rng(0)
PRICER = registration("llvm").schedules


def matmul_graph(m=192, k=256, n=320, then_relu=True):
    """x[m, k] @ w[k, n] (w constant), then Relu."""
    nodes = [Node("MatMul", ("x", "w"), ("t" if then_relu else "y",))]
    if then_relu:
        nodes.append(Node("Relu", ("t",), ("y",)))
    return Graph({"x": TensorType(F32, (m, k))}, {"w": RNG.standard_normal((k, n)).astype(F32)}, nodes, ["y"])


def contractions(graph):
    return [n for n in graph.nodes if contraction_problem(get_op(n.op, n.domain), n, graph.types,
                                                          set(graph.initializers)) is not None]


@pytest.mark.parametrize("cpu", sorted(MACHINES))
def test_extraction_takes_the_cheapest_schedule(cpu):
    graph = matmul_graph()
    optimized, report = optimize(graph, MACHINES[cpu], schedules=PRICER)
    (node,) = contractions(optimized)
    problem = contraction_problem(get_op(node.op, node.domain), node, optimized.types,
                                  set(optimized.initializers))
    (priced,) = priced_schedules([problem], MACHINES[cpu])
    assert isinstance(node.schedule, GemmSchedule)
    assert node.schedule == priced[0][0]  # the cheapest the cost model predicts, not just any tiled one
    assert problem.pack_b is False and problem.pack_a is True  # w is constant, x is not
    chosen = [line for line in report.kernels if line.lstrip().startswith("*")]
    assert len(chosen) == 1 and str(node.schedule) in chosen[0]


def test_without_a_pricer_nothing_is_scheduled():
    optimized, report = optimize(matmul_graph(), MACHINES["znver4"])
    assert all(n.schedule is None for n in optimized.nodes) and report.kernels == []


def test_a_tiny_contraction_stays_untiled():
    optimized, _ = optimize(matmul_graph(4, 8, 4), MACHINES["znver4"], schedules=PRICER)
    (node,) = contractions(optimized)
    assert node.schedule == Untiled()


def test_the_lowering_tiles_as_the_node_says():
    """A schedule put on a node by hand (not the cheapest) is what the native code runs: the lowering
    takes the node's schedule, it does not choose again."""
    host = registration("llvm").describe()
    graph = matmul_graph(then_relu=False)
    node = graph.nodes[0]
    problem = contraction_problem(get_op("MatMul"), node, graph.types, set(graph.initializers))
    tiled = [s for s, _ in PRICER([problem], host)[0] if isinstance(s, GemmSchedule)]
    if not tiled:
        pytest.skip("this host's description offers no micro-kernel")
    forced = tiled[-1]  # the costliest tiled one
    pinned = Graph(graph.inputs, graph.initializers, [Node(node.op, node.inputs, node.outputs, node.attrs,
                                                           schedule=forced)], graph.outputs)
    module = tensoregg.compile(pinned, "llvm", optimize=False)
    invoked = {s.intrinsic for low in module.program.lowered for s in statements(low.kernel.body)
               if isinstance(s, Invoke) and isinstance(s.intrinsic, MicroKernel)}
    assert invoked == {forced.ukernel}
    x = RNG.standard_normal(graph.inputs["x"].shape).astype(F32)
    want = run_graph(graph, {"x": x})[0]
    np.testing.assert_allclose(module.run(x)[0], want, rtol=1e-4, atol=1e-4)
    untiled = Graph(graph.inputs, graph.initializers, [Node(node.op, node.inputs, node.outputs, node.attrs,
                                                            schedule=Untiled())], graph.outputs)
    lowered = tensoregg.compile(untiled, "llvm", optimize=False).program.lowered
    assert not any(isinstance(s, Invoke) for low in lowered for s in statements(low.kernel.body))


def test_the_extracted_schedules_reach_the_native_code():
    graph = matmul_graph()
    module = tensoregg.compile(graph, "llvm")
    (node,) = contractions(module.graph)
    invoked = {s.intrinsic for low in module.program.lowered for s in statements(low.kernel.body)
               if isinstance(s, Invoke) and isinstance(s.intrinsic, MicroKernel)}
    assert invoked == ({node.schedule.ukernel} if isinstance(node.schedule, GemmSchedule) else set())
    x = RNG.standard_normal((192, 256)).astype(F32)
    np.testing.assert_allclose(module.run(x)[0], run_graph(graph, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_resnet50_explain_lists_each_convs_alternatives_and_picks_the_cheapest():
    e = tensoregg.explain(light_model("resnet50"), MACHINES["znver4"])
    convs = [n for n in e.after.nodes if n.op in ("Conv", "FusedConv", "Einsum", "Gemm", "FusedGemm")]
    assert len(convs) >= 53 and all(n.schedule is not None for n in convs)
    headers = [line for line in e.report.kernels if not line.startswith(" ")]
    assert len(headers) == len(convs)
    block: list[str] = []
    for line in [*e.report.kernels, "end"]:
        if not line.startswith(" ") and block:
            costs = [float(re.search(r"([\d.]+) us", row).group(1)) for row in block[1:]]
            marked = [row.lstrip().startswith("*") for row in block[1:]]
            assert marked.count(True) == 1 and len(costs) >= 2, block
            assert costs[marked.index(True)] == min(costs), block  # the chosen one is the cheapest
            block = []
        block.append(line)
    assert "schedules (predicted time" in str(e)


def test_definitions_that_need_constant_values_are_no_kernels():
    """Pad's definition reads its pads' values, which pricing does not pass: it is skipped (no
    alternatives), never an error (the conformance suite's Pad cases crashed optimize once)."""
    pads = np.array([0, 1, 0, 1], np.int64)
    weights = {"pads": pads, "w": RNG.standard_normal((8, 8)).astype(F32)}
    graph = Graph({"x": TensorType(F32, (8, 6))}, weights,
                  [Node("Pad", ("x", "pads"), ("p",)), Node("MatMul", ("p", "w"), ("y",))], ["y"])
    optimized, _ = optimize(graph, MACHINES["znver4"], schedules=PRICER)
    assert [n.schedule is not None for n in optimized.nodes] == [False, True]
