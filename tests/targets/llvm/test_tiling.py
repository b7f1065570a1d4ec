"""Tiled GEMM schedules (tensoregg.ir.tiling): every legal schedule of a contraction computes what the
unscheduled kernel computes, in guard mode, on one and two threads; contractions are recognized by
their index structure.

Both sum the same products in the same order; the tiled kernel rounds once per product (FMA), the
default lowering does too where LLVM contracts its multiply-add, which it does not always do, so the
two agree to a few ulps, not bit for bit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.compute import Buffer, call, cast, fresh, reduce
from tensoregg.ir.contraction import evaluate, find_contraction
from tensoregg.ir.intrinsics import PanelRuns, PanelTranspose
from tensoregg.ir.loops import Invoke, statements
from tensoregg.ir.schedules import GemmSchedule
from tensoregg.ir.tiling import _runs, in_rows
from tensoregg.targets.llvm import NativeModel
from tensoregg.targets.llvm.host import host_target
from tensoregg.testing import arrays, assert_same

F32 = np.dtype(np.float32)
TILES = host_target().microkernels


@st.composite
def schedules(draw, m: int, n: int, k: int) -> GemmSchedule:
    """A random legal schedule: a micro-kernel of the host, blocks that are multiples of its tile."""
    uk = draw(st.sampled_from(TILES))
    mc = uk.mr * draw(st.integers(1, max(1, -(-m // uk.mr))))
    nc = uk.nr * draw(st.integers(1, max(1, -(-n // uk.nr))))
    kc, split_m, split_n = draw(st.integers(1, k + 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return GemmSchedule(uk, mc, nc, kc, split_m, split_n)


def check_schedule(graph: Graph, feeds: dict, schedule: GemmSchedule) -> None:
    """The scheduled model matches the unscheduled one (a few ulps) and the reference; its runs on
    one and two threads and in guard mode are identical."""
    want = NativeModel(graph, schedule=False).run(feeds)[0]
    guarded = NativeModel(graph, guard=64, choose=lambda problem: schedule)
    invokes = [s for low in guarded.lowered for s in statements(low.kernel.body) if isinstance(s, Invoke)]
    assert invokes, "the contraction was not tiled"
    got = guarded.run(feeds)[0]
    assert_same(got, want, f"{schedule} vs untiled", rtol=1e-5, atol=1e-5)
    model = NativeModel(graph, choose=lambda problem: schedule)
    for threads in (1, 2):
        model.num_threads = threads
        assert np.array_equal(model.run(feeds)[0], got), (schedule, threads)
    assert_same(want, run_graph(graph, feeds)[0], "reference", rtol=1e-4, atol=1e-4)


@settings(max_examples=15)
@given(st.data())
def test_matmul_schedules_equal_the_untiled_kernel(data):
    """Either operand may be a constant (packed at compile time), per batch or shared by all."""
    m, n, k = data.draw(st.integers(1, 70)), data.draw(st.integers(2, 70)), data.draw(st.integers(1, 70))
    batch = data.draw(st.sampled_from([(), (2,), (2, 1)]))
    constant = data.draw(st.sampled_from(["", "a", "b"]))
    shapes = {"a": (*batch, m, k), "b": (*batch, k, n) if data.draw(st.booleans()) else (k, n)}
    inputs = {name: TensorType(F32, shape) for name, shape in shapes.items() if name != constant}
    weights = {name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)
               for name, shape in shapes.items() if name == constant}
    graph = Graph(inputs, weights, [Node("MatMul", ("a", "b"), ("y",))], ["y"])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    feeds = {name: rng.uniform(-4, 4, t.shape).astype(np.float32) for name, t in inputs.items()}
    check_schedule(graph, feeds, data.draw(schedules(m, n, k)))


@pytest.mark.parametrize("constant", ["a", "b"])
def test_a_constant_that_differs_per_batch_is_packed_per_batch(constant):
    """Both operands batched (a Winograd product's shape): the constant one is packed once per batch,
    and each batch's tiles read their own."""
    shapes = {"a": (3, 20, 30), "b": (3, 30, 40)}
    inputs = {name: TensorType(F32, shape) for name, shape in shapes.items() if name != constant}
    weights = {constant: np.random.default_rng(1).standard_normal(shapes[constant]).astype(np.float32)}
    graph = Graph(inputs, weights, [Node("MatMul", ("a", "b"), ("y",))], ["y"])
    rng = np.random.default_rng(2)
    feeds = {name: rng.uniform(-4, 4, t.shape).astype(np.float32) for name, t in inputs.items()}
    uk = TILES[0]
    check_schedule(graph, feeds, GemmSchedule(uk, uk.mr, uk.nr, 16, 1, 2))


@settings(max_examples=10)
@given(st.data())
def test_conv_schedules_equal_the_untiled_kernel(data):
    """A Conv with bias and a ReLU epilogue as an implicit GEMM (im2col while packing B); grouped
    Convs as a batch of them, one per group."""
    group = data.draw(st.sampled_from([1, 1, 2, 3]))
    c, m = group * data.draw(st.integers(1, 5)), group * data.draw(st.integers(1 if group == 1 else 2, 20))
    kernel, stride = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
    pad = data.draw(st.integers(0, 1))
    hw = data.draw(st.integers(kernel, 12))
    rng = np.random.default_rng(1)
    w = rng.standard_normal((m, c // group, kernel, kernel)).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    attrs = {"pads": (pad,) * 4, "strides": (stride, stride), "activation": "Relu", "group": group}
    node = Node("FusedConv", ("x", "w", "b"), ("y",), attrs, domain="tensoregg")
    graph = Graph({"x": TensorType(F32, (1, c, hw, hw))}, {"w": w, "b": bias}, [node], ["y"])
    x = data.draw(arrays(np.float32, (1, c, hw, hw)))
    out = graph.types["y"].shape
    check_schedule(graph, {"x": x}, data.draw(schedules(m // group, out[2] * out[3], c // group * kernel**2)))


def test_contractions_are_found_by_index_structure():
    a, b = Buffer("a", F32, (2, 5, 7)), Buffer("b", F32, (7, 3))
    out = Buffer("y", F32, (2, 5, 3))
    i, j, h = fresh("i"), fresh("j"), fresh("h")
    value = call("max", reduce("add", [7], lambda r: a[h, i, r] * b[r, j], 0), 0.0)
    found = find_contraction(out, (h, i, j), value)
    assert found is not None  # h is read by A only: rows of one 10 x 3 product
    assert (found.batch, found.m, found.n, found.k) == (1, 10, 3, 7)
    batched = Buffer("b", F32, (2, 7, 3))
    found = find_contraction(out, (h, i, j), reduce("add", [7], lambda r: a[h, i, r] * batched[h, r, j], 0))
    assert (found.batch, found.m, found.n, found.k) == (2, 5, 3, 7)
    swapped = reduce("add", [7], lambda r: b[r, j] * a[h, i, r], 0)
    assert find_contraction(out, (h, i, j), swapped).m == 10
    wide = Buffer("w", F32, (2, 5, 7, 3))
    both = reduce("add", [7], lambda r: wide[h, i, r, j] * b[r, j], 0)  # j read by both factors
    assert find_contraction(out, (h, i, j), both) is None
    maximum = reduce("max", [7], lambda r: a[h, i, r] * b[r, j], -np.inf)
    assert find_contraction(out, (h, i, j), maximum) is None


@pytest.mark.parametrize("split", [(1, 1), (2, 1), (1, 3)])
def test_tasks_beyond_the_edge_do_nothing(split):
    """More tasks than tiles: the extra tasks' ranges are empty."""
    graph = Graph({"a": TensorType(F32, (3, 5)), "b": TensorType(F32, (5, 2))}, {},
                  [Node("MatMul", ("a", "b"), ("y",))], ["y"])
    uk = TILES[0]
    rng = np.random.default_rng(2)
    feeds = {name: rng.standard_normal(t.shape).astype(np.float32) for name, t in graph.inputs.items()}
    check_schedule(graph, feeds, GemmSchedule(uk, uk.mr, uk.nr, 2, *split))


def transposes(model: NativeModel) -> list[int]:
    """The widths of the panel transposes a model's kernels invoke."""
    return sorted({s.intrinsic.width for low in model.lowered for s in statements(low.kernel.body)
                   if isinstance(s, Invoke) and isinstance(s.intrinsic, PanelTranspose)})


@pytest.mark.parametrize("trans_b", [0, 1])
def test_operands_in_rows_are_packed_by_transposes(trans_b):
    """A (k contiguous) is packed by the target's transpose; so is B given transposed (Gemm transB),
    while B as K x N rows (n contiguous) is packed by the copy loop."""
    m, k, n = 30, 21, 40
    graph = Graph({"a": TensorType(F32, (m, k)), "b": TensorType(F32, (n, k) if trans_b else (k, n))}, {},
                  [Node("Gemm", ("a", "b"), ("y",), {"transB": trans_b})], ["y"])
    uk = TILES[0]
    schedule = GemmSchedule(uk, uk.mr, uk.nr, 8, 1, 2)
    assert transposes(NativeModel(graph, choose=lambda problem: schedule)) == sorted({uk.mr, uk.nr} if trans_b
                                                                                    else {uk.mr})
    rng = np.random.default_rng(3)
    feeds = {name: rng.standard_normal(t.shape).astype(np.float32) for name, t in graph.inputs.items()}
    check_schedule(graph, feeds, schedule)


def test_factors_that_are_not_rows_of_memory_are_packed_by_loops():
    """A transposed (m contiguous), a cast, and a factor computed from two loads are not rows."""
    a, a16 = Buffer("a", F32, (9, 7)), Buffer("h", np.dtype(np.float16), (5, 7))
    b, out = Buffer("b", F32, (7, 3)), Buffer("y", F32, (5, 3))
    i, j = fresh("i"), fresh("j")
    for factor in (lambda r: a[r, i], lambda r: cast(a16[i, r], F32), lambda r: a[i, r] + a[i + 1, r]):
        c = find_contraction(out, (i, j), reduce("add", [7], lambda r: factor(r) * b[r, j], 0))
        assert c is not None and in_rows(c, "a") is None
    c = find_contraction(out, (i, j), reduce("add", [7], lambda r: a[i + 2, r] * b[r, j], 0))
    src, start, ld = in_rows(c, "a")(fresh("b"))
    assert src is a and ld == 7 and evaluate(start, {}, {}) == 14


def test_runs_of_a_stride_1_panel():
    """Offsets of 16-line panels over 5-wide rows 7 apart: runs cut where a row ends."""
    offsets = np.array([r * 7 + c for r in range(8) for c in range(5)])  # 40 lines: two whole panels
    table = _runs(offsets, 40, 16)
    assert table.tolist() == [[[0, 5, 0], [5, 10, 7 - 5], [10, 15, 14 - 10], [15, 16, 21 - 15]],
                              [[0, 4, 22], [4, 9, 28 - 4], [9, 14, 35 - 9], [14, 16, 42 - 14]]]
    assert _runs(np.arange(12) + 3, 12, 4).tolist() == [[[0, 4, 3]], [[0, 4, 7]], [[0, 4, 11]]]  # one each
    assert _runs(offsets, 40, 64) is None  # no whole panel
    assert _runs(np.arange(16) * 2, 16, 8) is None  # stride 2: runs of one


def runs_of(model: NativeModel) -> list[int]:
    return [s.intrinsic.runs for low in model.lowered for s in statements(low.kernel.body)
            if isinstance(s, Invoke) and isinstance(s.intrinsic, PanelRuns)]


@pytest.mark.parametrize("hw,stride,runs", [((20, 20), 1, True), ((20, 20), 2, False), ((40, 3), 1, False)])
def test_stride_1_conv_panels_are_copied_as_runs(hw, stride, runs):
    """A 3x3 Conv's im2col panels: runs at stride 1 on rows wide enough, gathers otherwise (3-wide
    rows: a panel spans more than one run per 4 lanes)."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    node = Node("Conv", ("x", "w"), ("y",), {"pads": (1,) * 4, "strides": (stride, stride)})
    graph = Graph({"x": TensorType(F32, (1, 3, *hw))}, {"w": w}, [node], ["y"])
    uk = next(t for t in TILES if t.nr >= 2 * host_target().lanes)
    schedule = GemmSchedule(uk, uk.mr, uk.nr, 9, 1, 1)
    assert bool(runs_of(NativeModel(graph, choose=lambda problem: schedule))) == runs
    check_schedule(graph, {"x": rng.standard_normal((1, 3, *hw)).astype(np.float32)}, schedule)
