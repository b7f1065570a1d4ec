"""Tiled contractions on the interpreter: the micro-kernel and packing intrinsics and the stack tiles
of ``tensoregg.ir.tiling``, as a fixed machine's schedules lay them out, against numpy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.intrinsics import MicroKernel, PanelRuns, PanelTranspose
from tensoregg.ir.loops import Invoke, Local, statements
from tensoregg.ir.schedules import GemmSchedule
from tensoregg.targets.interp.program import InterpProgram
from tensoregg.targets.llvm.gemm_schedules import choose_gemm_schedule
from tensoregg.targets.llvm.machines import ZEN3_AVX2, ZEN4_AVX512

F32 = np.dtype(np.float32)
RNG = np.random.default_rng(0)


def zen4(problem):
    return choose_gemm_schedule(problem, ZEN4_AVX512)


def tiled(graph, feeds, choose=zen4):
    """Run ``graph`` tiled by ``choose``: (its outputs, the intrinsics it invoked, its locals)."""
    program = InterpProgram(graph, choose=choose)
    body = [s for low in program.program.lowered for s in statements(low.kernel.body)]
    kinds = {type(s.intrinsic) for s in body if isinstance(s, Invoke)}
    return program.run(feeds), kinds, [s for s in body if isinstance(s, Local)]


def rel_l2(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("constant_b", [False, True])
def test_tiled_matmul_equals_numpy(constant_b):
    m, k, n = 70, 96, 130
    a, b = RNG.standard_normal((m, k)).astype(F32), RNG.standard_normal((k, n)).astype(F32)
    inputs = {"a": TensorType(F32, (m, k))}
    if not constant_b:
        inputs["b"] = TensorType(F32, (k, n))
    graph = Graph(inputs, {"b": b} if constant_b else {}, [Node("MatMul", ("a", "b"), ("y",))], ["y"])
    (got,), kinds, locals_ = tiled(graph, {"a": a} if constant_b else {"a": a, "b": b})
    assert {MicroKernel, PanelTranspose} <= kinds
    packed = {local.buffer.name for local in locals_}
    assert packed == ({"apack"} if constant_b else {"apack", "bpack"})  # a constant B: packed when compiled
    assert rel_l2(got, a.astype(np.float64) @ b.astype(np.float64)) < 1e-6


def test_tiled_conv_packs_runs():
    x = RNG.standard_normal((1, 16, 20, 20)).astype(F32)
    w = RNG.standard_normal((32, 16, 3, 3)).astype(F32)
    nodes = [Node("Conv", ("x", "w"), ("y",), {"pads": (1, 1, 1, 1)}), Node("Relu", ("y",), ("r",))]
    graph = Graph({"x": TensorType(F32, x.shape)}, {"w": w}, nodes, ["r"])
    (got,), kinds, _ = tiled(graph, {"x": x})
    assert {MicroKernel, PanelRuns} <= kinds
    assert rel_l2(got, run_graph(graph, {"x": x})[0]) < 1e-6


@settings(max_examples=8)
@given(st.data())
def test_any_legal_schedule_computes_the_product(data):
    """Random blocks, splits and tiles of the machine's micro-kernels, on batched and edge shapes."""
    batch, m, k, n = (data.draw(st.integers(1, hi)) for hi in (2, 40, 40, 70))
    uk = data.draw(st.sampled_from(ZEN4_AVX512.microkernels))
    mc, nc = uk.mr * data.draw(st.integers(1, 3)), uk.nr * data.draw(st.integers(1, 2))
    kc, split_m, split_n = (data.draw(st.integers(1, hi)) for hi in (k + 3, 3, 3))
    schedule = GemmSchedule(uk, mc, nc, kc, split_m, split_n)
    a, b = RNG.standard_normal((batch, m, k)).astype(F32), RNG.standard_normal((batch, k, n)).astype(F32)
    graph = Graph({"a": TensorType(F32, a.shape), "b": TensorType(F32, b.shape)}, {},
                  [Node("MatMul", ("a", "b"), ("y",))], ["y"])
    (got,), kinds, _ = tiled(graph, {"a": a, "b": b}, choose=lambda problem: schedule)
    assert MicroKernel in kinds
    np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-4, atol=1e-4)


def test_the_schedules_another_target_extracted_are_what_interp_runs():
    """A graph optimized for a fixed machine carries its extraction's schedules; interp lowers it as
    they say (no chooser given), so it checks that target's tiled loop program without its CPU."""
    from tensoregg.optimize import optimize
    from tensoregg.targets import registration

    m, k, n = 96, 128, 160
    graph = Graph({"a": TensorType(F32, (m, k))}, {"b": RNG.standard_normal((k, n)).astype(F32)},
                  [Node("MatMul", ("a", "b"), ("t",)), Node("Relu", ("t",), ("y",))], ["y"])
    optimized, _ = optimize(graph, ZEN4_AVX512, schedules=registration("llvm").schedules)
    (scheduled,) = [node for node in optimized.nodes if node.schedule is not None]
    assert isinstance(scheduled.schedule, GemmSchedule)
    a = RNG.standard_normal((m, k)).astype(F32)
    (got,), kinds, _ = tiled(optimized, {"a": a}, choose=None)
    invoked = {s.intrinsic for low in InterpProgram(optimized).program.lowered
               for s in statements(low.kernel.body) if isinstance(s, Invoke)}
    assert MicroKernel in kinds and scheduled.schedule.ukernel in invoked
    assert rel_l2(got, run_graph(graph, {"a": a})[0]) < 1e-6


@pytest.mark.parametrize("machine", [ZEN3_AVX2, ZEN4_AVX512], ids=lambda t: t.cpu)
def test_the_schedules_tensorize_gemm_derives_compute_the_product(machine):
    """The tensorize rule checked through interp: a spread of the schedules it derives (its premises
    and enumeration, not hand-picked parameters) for a batched edge-shaped problem, against numpy."""
    from tensoregg.ir.schedules import GemmProblem
    from tensoregg.targets.llvm.gemm_schedules import _kernel_key, derive_schedules

    batch, m, k, n = 2, 37, 29, 53
    problem = GemmProblem(batch, m, n, k)
    rows = derive_schedules([problem], machine, "float32")[_kernel_key(problem)]
    by_name = {u.name: u for u in machine.microkernels}
    schedules = sorted((GemmSchedule(by_name[name], *sizes) for name, *sizes in rows), key=str)
    assert schedules, "tensorize-gemm derived no schedule"
    a, b = RNG.standard_normal((batch, m, k)).astype(F32), RNG.standard_normal((batch, k, n)).astype(F32)
    graph = Graph({"a": TensorType(F32, a.shape), "b": TensorType(F32, b.shape)}, {},
                  [Node("MatMul", ("a", "b"), ("y",))], ["y"])
    for schedule in schedules[:: max(1, len(schedules) // 3)]:
        (got,), kinds, _ = tiled(graph, {"a": a, "b": b}, choose=lambda problem, s=schedule: s)
        assert MicroKernel in kinds
        np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-4, atol=1e-4,
                                   err_msg=str(schedule))
