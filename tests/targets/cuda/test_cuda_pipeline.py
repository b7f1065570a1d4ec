"""Double-buffered GEMM templates (``stages`` 2: ``targets/cuda/copies.py``): slice k + 1 copied by
``cp.async`` while slice k is computed. Contractions of odd and aligned shapes compute the reference
under the GPU emulation, whose race checker refuses a read of a copy not yet waited for (so a
missing wait, a wait for too few groups or a missing barrier after the wait fails), and in their CUDA
C on this CPU; the copies move 16 bytes where operand and tile are contiguous and aligned, 4 or 8
elsewhere, and fall back to loads and stores where no copy fits; the templates build with NVRTC for
sm_80 and sm_90 without spills; the cost model prices both forms and ``explain -t cuda`` shows them."""

from dataclasses import replace

import ml_dtypes
import numpy as np
import pytest

import tensoregg
from tensoregg.errors import RaceError
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.ir.compute import Buffer, cast, fresh
from tensoregg.ir.contraction import find_contraction
from tensoregg.ir.intrinsics import MMA_BF16, MMA_F16, MMA_TF32, AsyncCopy, AsyncWait
from tensoregg.ir.loops import Barrier, For, Invoke, Kernel, Local, statements
from tensoregg.ir.schedules import GemmProblem
from tensoregg.runtime.cuda import EMULATE
from tensoregg.targets.cuda import GPUS, gemm, mma
from tensoregg.targets.cuda.codegen import PRELUDE, kernel_source
from tensoregg.targets.cuda.cost import mma_seconds, price
from tensoregg.targets.cuda.gemm import SharedTiles
from tensoregg.targets.cuda.host import check_on_host
from tensoregg.targets.cuda.machines import description
from tensoregg.targets.cuda.mma import TensorCoreTiles
from tensoregg.targets.cuda.nvrtc import nvrtc_missing
from tensoregg.targets.cuda.program import CudaProgram
from tensoregg.targets.cuda.schedule import Launch
from tensoregg.targets.interp.executor import KernelExecutor
from tensoregg.testing import single_op_model

H100 = GPUS["sm_90"]
F32, F16, BF16 = np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)
R = np.random.default_rng(3)
needs_nvrtc = pytest.mark.skipif(nvrtc_missing() is not None, reason=str(nvrtc_missing()))
SIMT = SharedTiles(32, 32, 16, 2, 4, 2)
CORES = {F16: TensorCoreTiles(MMA_F16, 32, 64, 32, 1, 4, 2, True),
         BF16: TensorCoreTiles(MMA_BF16, 64, 32, 16, 2, 2, 2, True),
         F32: TensorCoreTiles(MMA_TF32, 32, 32, 16, 1, 2, 2)}


def data(dtype, *shape):
    return R.standard_normal(shape).astype(dtype)


CASES = [  # (tiles, op, inputs, attrs, constant): odd shapes (4-byte or no copies), aligned ones (16 bytes)
    (SIMT, "MatMul", [data(F32, 37, 45), data(F32, 45, 29)], {}, ()),
    (SIMT, "MatMul", [data(F32, 2, 40, 64), data(F32, 2, 64, 72)], {}, ()),
    (SIMT, "Conv", [data(F32, 1, 5, 9, 11), data(F32, 7, 5, 3, 3), data(F32, 7)], {"pads": [1, 1, 1, 1]},
     (1, 2)),
    (CORES[F16], "MatMul", [data(F16, 37, 45), data(F16, 45, 29)], {}, ()),
    (CORES[F16], "MatMul", [data(F16, 40, 64), data(F16, 64, 72)], {}, (1,)),  # B k-major: ldmatrix.trans
    (CORES[F16], "Gemm", [data(F16, 40, 64), data(F16, 72, 64)], {"transB": 1}, (1,)),
    (CORES[F16], "Conv", [data(F16, 1, 8, 9, 9), data(F16, 16, 8, 3, 3)], {}, (1,)),
    (CORES[BF16], "MatMul", [data(BF16, 70, 48), data(BF16, 48, 40)], {}, ()),
    (CORES[F32], "MatMul", [data(F32, 33, 64), data(F32, 64, 24)], {}, (1,)),
]
TOLERANCE = {"simt": (1e-5, 1e-5), "f16": (1e-3, 1e-2), "bf16": (1e-2, 1e-2), "tf32": (1e-4, 5e-3)}
"""(rtol, atol relative to the output's scale): ``test_cuda_mma``'s for the tensor cores."""


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv(EMULATE, "1")


def program_of(tiles, op, inputs, attrs, constant):
    graph = import_onnx(single_op_model(op, inputs, attrs, constant=constant))
    graph.nodes = [replace(node, schedule=tiles) if node.op == op else node for node in graph.nodes]
    return graph, CudaProgram(graph, description(H100), H100)


@needs_nvrtc
@pytest.mark.parametrize("tiles, op, inputs, attrs, constant", CASES,
                         ids=[f"{c[1]}-{c[2][0].dtype}-{'x'.join(map(str, c[2][0].shape))}" for c in CASES])
def test_double_buffered_contractions_compute_the_reference(tiles, op, inputs, attrs, constant):
    graph, program = program_of(tiles, op, inputs, attrs, constant)
    assert "te_cp_async_wait<1>();" in program.source
    feeds = {f"in{i}": a for i, a in enumerate(inputs) if i not in constant}
    want = run_graph(graph, dict(feeds))[0].astype(np.float64)
    got = program.run(feeds)[0]
    scale = np.sqrt(np.mean(want ** 2))
    rtol, atol = TOLERANCE["simt" if tiles is SIMT else tiles.mma.ab]
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol * scale)
    if op == "MatMul" and inputs[0].ndim == 2:  # the CUDA C on this CPU (the MMAs bit for bit as emulated)
        host = check_on_host(program, feeds)[0]
        if tiles is SIMT:
            np.testing.assert_allclose(host, got, rtol=1e-5, atol=1e-5 * scale)
        else:
            np.testing.assert_array_equal(host, got)


def matmul(dtype, m, k, n, trans_b=False):
    """A matmul in ``dtype`` summed in float32, as a contraction, with its buffers (B as n x k where
    ``trans_b``)."""
    a, b = Buffer("a", dtype, (m, k)), Buffer("b", dtype, (n, k) if trans_b else (k, n))
    out = Buffer("c", dtype, (m, n))
    i, j = fresh("i"), fresh("j")
    factor = (lambda r: b[j, r]) if trans_b else (lambda r: b[r, j])
    value = tensoregg.ir.compute.reduce("add", [k], lambda r: cast(a[i, r], F32) * cast(factor(r), F32), 0.0)
    c = find_contraction(out, (i, j), value if dtype == F32 else cast(value, dtype))
    assert c is not None
    return c, [a, b, out]


def copies(stage):
    """(bytes, buffer) of each asynchronous copy in ``stage``, once each."""
    return sorted({(s.intrinsic.bytes, s.args[0].buffer.name) for s in statements([stage])
                   if isinstance(s, Invoke) and isinstance(s.intrinsic, AsyncCopy)})


@pytest.mark.parametrize("tiles, dtype, shape, trans_b, want", [
    (CORES[F16], F16, (64, 64, 64), False, [(16, "As"), (16, "Bs")]), # B along n: its tile k-major
    (CORES[F16], F16, (64, 64, 64), True, [(16, "As"), (16, "Bs")]),  # B^T along k: 16 bytes too
    (CORES[F16], F16, (64, 60, 64), True, [(8, "As"), (8, "Bs")]),    # k % 8: 8 bytes (4 halves)
    (CORES[F16], F16, (64, 58, 64), True, [(4, "As"), (4, "Bs")]),    # k % 4: 4 bytes
    (CORES[F16], F16, (64, 45, 64), True, []),                        # k odd: no copy fits a half
    (CORES[F32], F32, (64, 64, 64), False, [(16, "As"), (16, "Bs")]),
    (CORES[F16], F16, (64, 64, 60), False, [(16, "As")]),             # n % 8: B n-major, loads and stores
    (SIMT, F32, (64, 64, 64), False, [(4, "As"), (16, "Bs")]),        # A k-major in its tile: elements
    (SIMT, F32, (64, 64, 30), False, [(4, "As"), (8, "Bs")]),
])
def test_copies_move_16_bytes_where_operand_and_tile_are_contiguous_and_aligned(tiles, dtype, shape, trans_b,
                                                                                want):
    m, k, n = shape
    c, _ = matmul(dtype, m, k, n, trans_b)
    (stage,), _ = tiles.lower(c, {})
    assert copies(stage) == want


def pipeline_kernel(tiles, dtype, m, k, n):
    c, params = matmul(dtype, m, k, n)
    (stage,), _ = tiles.lower(c, {})
    return Kernel("gemm", params, [stage], [params[-1]]), params


def without(body, drop):
    """``body`` with the statements ``drop`` accepts removed (in loops and locals too), in place."""
    body[:] = [s for s in body if not drop(s)]
    for s in body:
        if isinstance(s, (For, Local)):
            without(s.body, drop)


def emulate_kernel(kernel, params, *arrays):
    out = np.full(params[-1].shape, np.nan, params[-1].dtype)
    KernelExecutor(kernel, "kernel gemm", {}, set()).run([a.reshape(-1) for a in (*arrays, out)])
    return out


@pytest.mark.parametrize("tiles, dtype", [(SIMT, F32), (CORES[F16], F16)], ids=["simt", "f16"])
@pytest.mark.parametrize("break_it, message", [
    ("wait", r"thread \d+ loads it while an asynchronous copy into it is in flight"),
    ("deeper wait", r"thread \d+ loads it while an asynchronous copy into it is in flight"),
    ("barrier after the wait", r"thread \d+ loads it and thread \d+ stored it with no barrier between"),
    ("last barrier", r"while an asynchronous copy into it is in flight|with no barrier between"),
])
def test_the_race_checker_refuses_a_pipeline_that_reads_before_its_copies_land(tiles, dtype, break_it,
                                                                                message):
    kernel, params = pipeline_kernel(tiles, dtype, 64, 80, 64)
    a, b = data(dtype, 64, 80), data(dtype, 80, 64)
    emulate_kernel(kernel, params, a, b)  # as lowered: fine
    (main,) = [s for s in statements(kernel.body) if isinstance(s, For) and any(
        isinstance(x, Invoke) and isinstance(x.intrinsic, AsyncWait) for x in s.body)]
    if break_it == "wait":
        without(kernel.body, lambda s: isinstance(s, Invoke) and isinstance(s.intrinsic, AsyncWait))
    elif break_it == "deeper wait":
        main.body = [Invoke(AsyncWait(2), ()) if isinstance(s, Invoke) and isinstance(s.intrinsic, AsyncWait)
                     else s for s in main.body]
    else:
        barriers = [k for k, s in enumerate(main.body) if isinstance(s, Barrier)]
        del main.body[barriers[0 if break_it == "barrier after the wait" else -1]]
    with pytest.raises(RaceError, match=message):
        emulate_kernel(kernel, params, a, b)


@needs_nvrtc
def test_double_buffered_templates_build_without_spills(builds_without_spills):
    """The largest double-buffered parameter set the H100 admits (most registers and shared memory)
    of each kind, on an odd MatMul (4-byte copies or none) and an aligned one (16-byte copies)."""
    sources, names = [PRELUDE], []
    kinds = [(F32, gemm.templates(H100))] + [(d, mma.templates(H100, d)) for d in (F16, BF16, F32)]
    for kind, (dtype, admitted) in enumerate(kinds):
        double = [t for t in admitted if t.stages == 2]
        for t in sorted(double, key=lambda t: (t.registers, t.shared_bytes))[-1:]:
            for shape in ((301, 203, 499), (256, 256, 256)):
                c, params = matmul(dtype, *shape)
                (stage,), _ = t.lower(c, {})
                launch = Launch(f"p{kind}_{len(names)}", stage, 1, t.threads, t.shared_bytes)
                sources.append(kernel_source(launch, params, {id(params[-1])}))
                names.append((launch.name, t))
    builds_without_spills("\n".join(sources), names)


@needs_nvrtc
@pytest.mark.slow
def test_every_admitted_double_buffered_template_builds_without_spills(builds_without_spills):
    sources, names = [PRELUDE], []
    kinds = [(F32, gemm.templates(H100))] + [(d, mma.templates(H100, d)) for d in (F16, BF16, F32)]
    for kind, (dtype, admitted) in enumerate(kinds):
        c, params = matmul(dtype, 256, 256, 256)
        for t in admitted:
            if t.stages == 2:
                (stage,), _ = t.lower(c, {})
                launch = Launch(f"p{kind}_{len(names)}", stage, 1, t.threads, t.shared_bytes)
                sources.append(kernel_source(launch, params, {id(params[-1])}))
                names.append((launch.name, t))
    builds_without_spills("\n".join(sources), names)


def test_the_cost_model_prices_double_buffering_by_its_latency_and_its_shared_memory():
    """One block per SM at a time (a small problem): two stages hide the copies' latency behind the
    block's own arithmetic; where many blocks share an SM, their arithmetic hides it with one stage
    too, and the second stage's shared memory (fewer resident blocks) is what counts."""
    one, two = replace(CORES[F16], stages=1), CORES[F16]
    assert two.shared_bytes == 2 * one.shared_bytes
    small = GemmProblem(1, 64, 3136, 64, dtype="float16")
    large = GemmProblem(8, 4096, 4096, 4096, dtype="float16")
    assert mma_seconds(small, two, H100) < mma_seconds(small, one, H100)
    assert mma_seconds(large, two, H100) >= mma_seconds(large, one, H100)
    (priced,) = price([small], H100)
    assert str(priced[0][0]).endswith(", 2 stages (cp.async)") and "stages" not in str(one)


@needs_nvrtc
def test_explain_shows_the_double_buffered_alternatives():
    model = single_op_model("MatMul", [data(F16, 64, 64), data(F16, 64, 3136)], {}, constant=(1,))
    e = tensoregg.explain(model, "cuda")
    (node,) = e.after.nodes
    chosen = [r for r in e.report.kernels[1:] if r.lstrip().startswith("*")]
    assert node.schedule.stages == 2 and str(node.schedule) in chosen[0]
    assert "2 stages (cp.async)" in chosen[0]
