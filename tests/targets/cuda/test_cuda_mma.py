"""The tensor-core GEMM template (``targets/cuda/mma.py``): float16, bfloat16 and (tf32) float32
contractions in it compute the reference interpreter's result, within the tensor cores' tolerance,
under the GPU emulation (which runs the warp MMA by its fragment layout and checks shared memory for
races) and, for one tile shape, in their CUDA C run on this CPU (``runtime/cuda_host.h``: the
warp's threads as fibers meeting at each MMA), bit for bit as emulated; every parameter set the H100
admits builds with NVRTC for sm_80 and sm_90 without spills or local memory; the cost model offers
it for float16 and bfloat16 contractions, and for float32 ones where tf32 is opted into."""

from dataclasses import replace

import ml_dtypes
import numpy as np
import pytest

import tensoregg
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.ir.compute import Buffer, cast, fresh
from tensoregg.ir.contraction import find_contraction
from tensoregg.ir.intrinsics import MMA_BF16, MMA_F16, MMA_TF32
from tensoregg.ir.schedules import GemmProblem, Untiled
from tensoregg.runtime.cuda import EMULATE
from tensoregg.targets.cuda import ARCH, GPUS, TF32, chosen_gpu
from tensoregg.targets.cuda.codegen import PRELUDE, kernel_source
from tensoregg.targets.cuda.cost import price
from tensoregg.targets.cuda.gemm import SharedTiles
from tensoregg.targets.cuda.host import check_on_host
from tensoregg.targets.cuda.machines import description
from tensoregg.targets.cuda.mma import TensorCoreTiles, templates
from tensoregg.targets.cuda.nvrtc import nvrtc_missing
from tensoregg.targets.cuda.program import CudaProgram
from tensoregg.targets.cuda.schedule import Launch
from tensoregg.testing import single_op_model

H100 = GPUS["sm_90"]
F32 = np.dtype(np.float32)
R = np.random.default_rng(2)
needs_nvrtc = pytest.mark.skipif(nvrtc_missing() is not None, reason=str(nvrtc_missing()))
DTYPES = {"f16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16), "tf32": F32}
TOLERANCE = {"f16": (1e-3, 1e-2), "bf16": (1e-2, 1e-2), "tf32": (1e-4, 5e-3)}
"""(rtol, atol relative to the output's scale) per MMA input type (notes/gpu.md, tinygrad's). The
reference sums exact products in float32 and rounds once to the output dtype, as the MMA does (in
another order): float16/bfloat16 results differ by at most an ulp of the output, K aside; tf32's
rounded inputs add an error that grows like sqrt(K) with the sum, so it is scaled by the data."""
L2 = {"f16": 1e-3, "bf16": 5e-3, "tf32": 2e-3}
"""Relative L2 error bounds: an ulp's fraction of the output (2**-11, 2**-8 in rounding to nearest,
halved on average), tf32's inputs' (2**-11 each) over the sum."""


def data(ab, *shape):
    return R.standard_normal(shape).astype(DTYPES[ab])


def contractions(ab):
    return [("MatMul", [data(ab, 37, 45), data(ab, 45, 29)], {}, ()),
            ("MatMul", [data(ab, 2, 19, 70), data(ab, 2, 70, 40)], {}, (1,)),
            ("Gemm", [data(ab, 21, 50), data(ab, 18, 50), data(ab, 18)], {"transB": 1}, (1, 2)),
            ("Conv", [data(ab, 1, 5, 9, 11), data(ab, 7, 5, 3, 3), data(ab, 7)], {"pads": [1, 1, 1, 1]}, ()),
            ("Conv", [data(ab, 2, 4, 8, 8), data(ab, 8, 2, 3, 3)], {"group": 2, "strides": [2, 2]}, (1,))]


CASES = [(ab, *case) for ab in DTYPES for case in contractions(ab)]
TILES = {ab: [TensorCoreTiles(mma, 32, 32, 2 * mma.k, 1, 2), TensorCoreTiles(mma, 64, 32, mma.k, 2, 2),
              TensorCoreTiles(mma, 32, 64, 2 * mma.k, 1, 4)]
         for ab, mma in (("f16", MMA_F16), ("bf16", MMA_BF16), ("tf32", MMA_TF32))}


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv(EMULATE, "1")


def close(got, want, ab):
    """``got`` equals ``want`` within the tolerance of ``ab`` (relative to the scale of ``want``)."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    assert np.isfinite(got).all()
    scale = np.sqrt(np.mean(want ** 2))
    rtol, atol = TOLERANCE[ab]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)
    assert np.linalg.norm(got - want) <= L2[ab] * np.linalg.norm(want)


@needs_nvrtc
@pytest.mark.parametrize("tile", [0, 1, 2])
@pytest.mark.parametrize("ab, op, inputs, attrs, constant", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_contractions_on_tensor_cores_compute_the_reference(ab, op, inputs, attrs, constant, tile):
    tiles = TILES[ab][tile]
    graph = import_onnx(single_op_model(op, inputs, attrs, constant=constant))
    graph.nodes = [replace(node, schedule=tiles) if node.op == op else node for node in graph.nodes]
    program = CudaProgram(graph, description(H100), H100)
    mma = [item for item in program.launches if item.launch.shared_bytes]
    assert len(mma) == 1 and mma[0].launch.threads == tiles.threads
    assert f"te_mma_{ab}(" in program.source
    feeds = {f"in{i}": a for i, a in enumerate(inputs) if i not in constant}
    want = run_graph(graph, dict(feeds))[0]
    got = program.run(feeds)[0]
    assert got.dtype == want.dtype == inputs[0].dtype
    close(got, want, ab)
    if tile == 0:  # the CUDA C on this CPU: its packing of fragments, the MMA by the PTX ISA's layout
        np.testing.assert_array_equal(check_on_host(program, feeds)[0], got)


def test_the_template_refuses_contractions_of_another_dtype():
    a, b = Buffer("a", F32, (16, 16)), Buffer("b", F32, (16, 8))
    i, j = fresh("i"), fresh("j")
    c = find_contraction(Buffer("c", F32, (16, 8)), (i, j),
                         tensoregg.ir.compute.reduce("add", [16], lambda k: a[i, k] * b[k, j], 0.0))
    assert c is not None and c.operand_dtype == F32 and c.problem(False, False).dtype == "float32"
    with pytest.raises(ValueError, match=r"contractions of float16 summed in float32 only, not float32"):
        TILES["f16"][0].lower(c, {})


def test_the_parameters_the_h100_admits_fit_its_limits():
    for ab, dtype in DTYPES.items():
        admitted = templates(H100, dtype)
        assert len(admitted) > 30 and replace(TILES[ab][0], ldmatrix=ab != "tf32") in admitted
        for t in admitted:
            assert t.mma.dtype == dtype and 64 <= t.threads <= 256
            assert t.shared_bytes <= H100.shared_per_block
            assert t.bm % (t.wm * 16) == 0 and t.bn % (t.wn * 8) == 0 and t.bk % t.mma.k == 0


def matmul(dtype, m, k, n):
    """A ragged m x k by k x n matmul in ``dtype`` summed in float32, as a contraction."""
    a, b = Buffer("a", dtype, (m, k)), Buffer("b", dtype, (k, n))
    out = Buffer("c", dtype, (m, n))
    i, j = fresh("i"), fresh("j")
    value = tensoregg.ir.compute.reduce("add", [k], lambda r: cast(a[i, r], F32) * cast(b[r, j], F32), 0.0)
    c = find_contraction(out, (i, j), value if dtype == F32 else cast(value, dtype))
    assert c is not None
    return c, [a, b, out]


@needs_nvrtc
def test_every_admitted_template_builds_without_spills_for_both_architectures(builds_without_spills):
    """One module holding every admitted parameter set of one stage of each dtype on a 300 x 500 x 200
    MatMul (the double-buffered ones: ``test_cuda_pipeline``)."""
    sources, names = [PRELUDE], []
    for ab, dtype in DTYPES.items():
        c, params = matmul(dtype, 300, 200, 500)
        for n, t in enumerate(t for t in templates(H100, dtype) if t.stages == 1):
            (stage,), _ = t.lower(c, {})
            launch = Launch(f"{ab}_{n}", stage, 1, t.threads, t.shared_bytes)
            sources.append(kernel_source(launch, params, {id(params[-1])}))
            names.append((launch.name, t))
    builds_without_spills("\n".join(sources), names)


@pytest.mark.parametrize("tf32", [False, True])
def test_the_cost_model_puts_half_precision_and_opted_in_float32_contractions_on_tensor_cores(tf32):
    gpu = replace(H100, tf32=tf32)
    for dtype, kind in [("float16", MMA_F16), ("bfloat16", MMA_BF16),
                        ("float32", MMA_TF32 if tf32 else None)]:
        (priced,) = price([GemmProblem(1, 256, 3136, 576, dtype=dtype)], gpu)
        best = priced[0][0]
        assert [c for _, c in priced] == sorted(c for _, c in priced)
        assert any(isinstance(s, Untiled) for s, _ in priced)
        if kind is None:
            assert isinstance(best, SharedTiles)
        else:
            assert isinstance(best, TensorCoreTiles) and best.mma == kind, (dtype, str(best))
    (small,) = price([GemmProblem(1, 4, 4, 4, dtype="int8")], gpu)
    assert [s for s, _ in small] == [Untiled()]


def test_tf32_is_opted_into_by_the_environment(monkeypatch):
    monkeypatch.setenv(ARCH, "sm_80")
    assert not chosen_gpu().tf32 and "tf32" not in description(chosen_gpu()).features
    monkeypatch.setenv(TF32, "1")
    assert chosen_gpu().tf32 and chosen_gpu().arch == "sm_80"
    assert description(chosen_gpu()).features == "+tf32"


@needs_nvrtc
@pytest.mark.parametrize("ab", ["f16", "bf16"])
def test_extraction_chooses_tensor_cores_for_a_half_precision_matmul(ab):
    a, b = data(ab, 300, 512), data(ab, 512, 256)
    model = single_op_model("MatMul", [a, b], {}, constant=(1,))
    e = tensoregg.explain(model, "cuda")
    (node,) = e.after.nodes
    assert isinstance(node.schedule, TensorCoreTiles) and node.schedule.mma.ab == ab
    assert "gpu tensor cores" in str(e)
    module = tensoregg.compile(model, target="cuda")
    close(module.run(a)[0], run_graph(import_onnx(model), {"in0": a})[0], ab)
