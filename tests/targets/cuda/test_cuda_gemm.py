"""The GPU GEMM template (shared-memory tiles, ``targets/cuda/gemm.py``): contractions in it compute
what the reference interpreter computes under the GPU emulation (which also checks every shared
access for races between barriers); every parameter set the H100 admits builds with NVRTC for sm_80
and sm_90 without spills or local memory, within the shared memory of a block; extraction chooses
tiles for large contractions and ``explain -t cuda`` lists them with their costs."""

from dataclasses import replace

import numpy as np
import pytest

import tensoregg
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.ir.compute import Buffer, fresh
from tensoregg.ir.contraction import find_contraction
from tensoregg.ir.schedules import GemmProblem, Untiled
from tensoregg.runtime.cuda import EMULATE
from tensoregg.targets.cuda import GPUS
from tensoregg.targets.cuda.codegen import PRELUDE, kernel_source
from tensoregg.targets.cuda.cost import price
from tensoregg.targets.cuda.gemm import SharedTiles, templates
from tensoregg.targets.cuda.machines import description
from tensoregg.targets.cuda.nvrtc import nvrtc_missing
from tensoregg.targets.cuda.program import CudaProgram
from tensoregg.targets.cuda.schedule import Launch
from tensoregg.testing import single_op_model

H100 = GPUS["sm_90"]
R = np.random.default_rng(1)
needs_nvrtc = pytest.mark.skipif(nvrtc_missing() is not None, reason=str(nvrtc_missing()))


def f(*shape):
    return R.standard_normal(shape).astype(np.float32)


CONTRACTIONS = [
    ("MatMul", [f(37, 45), f(45, 29)], {}, (1,)),
    ("MatMul", [f(2, 19, 33), f(2, 33, 40)], {}, ()),
    ("Gemm", [f(21, 50), f(18, 50), f(18)], {"transB": 1}, (1, 2)),
    ("Conv", [f(1, 5, 9, 11), f(7, 5, 3, 3), f(7)], {"pads": [1, 1, 1, 1]}, (1, 2)),
    ("Conv", [f(2, 4, 8, 8), f(8, 2, 3, 3)], {"group": 2, "strides": [2, 2]}, (1,)),
]
TILES = [SharedTiles(16, 16, 8, 2, 2), SharedTiles(32, 16, 16, 2, 1), SharedTiles(16, 32, 8, 1, 4)]


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv(EMULATE, "1")


@needs_nvrtc
@pytest.mark.parametrize("tiles", TILES, ids=str)
@pytest.mark.parametrize("op, inputs, attrs, constant", CONTRACTIONS, ids=[c[0] for c in CONTRACTIONS])
def test_contractions_in_shared_tiles_compute_the_reference(op, inputs, attrs, constant, tiles):
    graph = import_onnx(single_op_model(op, inputs, attrs, constant=constant))
    graph.nodes = [replace(node, schedule=tiles) for node in graph.nodes]
    program = CudaProgram(graph, description(H100), H100)
    tiled = [item for item in program.launches if item.launch.shared_bytes]
    assert len(tiled) == 1 and tiled[0].launch.threads == tiles.threads
    feeds = {f"in{i}": a for i, a in enumerate(inputs) if i not in constant}
    want = run_graph(graph, dict(feeds))[0]
    got = program.run(feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_parameters_the_h100_admits_fit_its_limits():
    admitted = templates(H100)
    assert len(admitted) > 50
    for t in admitted:
        assert 64 <= t.threads <= 256 and t.threads % 32 == 0
        assert t.shared_bytes <= H100.shared_per_block and t.registers <= H100.registers_per_thread
    assert SharedTiles(128, 128, 16, 8, 8) in admitted  # 256 threads, 16 KiB
    assert SharedTiles(128, 128, 8, 2, 2) not in admitted  # 4096 threads


@needs_nvrtc
def test_every_admitted_template_builds_without_spills_for_both_architectures(builds_without_spills):
    """One module holding every admitted parameter set of one stage on a 300 x 500 x 200 MatMul (ragged
    for all; the double-buffered ones: ``test_cuda_pipeline``)."""
    a, b = Buffer("a", np.dtype(np.float32), (300, 200)), Buffer("b", np.dtype(np.float32), (200, 500))
    out = Buffer("c", np.dtype(np.float32), (300, 500))
    i, j = fresh("i"), fresh("j")
    value = tensoregg.ir.compute.reduce("add", [200], lambda k: a[i, k] * b[k, j], 0.0)
    c = find_contraction(out, (i, j), value)
    assert c is not None
    sources, names = [PRELUDE], []
    for n, t in enumerate(t for t in templates(H100) if t.stages == 1):
        (stage,), _ = t.lower(c, {})
        launch = Launch(f"g{n}", stage, 1, t.threads, t.shared_bytes)
        sources.append(kernel_source(launch, [a, b, out], {id(out)}))
        names.append((launch.name, t))
    builds_without_spills("\n".join(sources), names)


def test_the_cost_model_tiles_large_contractions():
    (large,) = price([GemmProblem(1, 256, 3136, 576)], H100)
    assert isinstance(large[0][0], SharedTiles) and any(isinstance(s, Untiled) for s, _ in large)
    assert [c for _, c in large] == sorted(c for _, c in large)


@needs_nvrtc
def test_explain_lists_the_gpu_alternatives_of_each_contraction():
    model = single_op_model("MatMul", [f(512, 1024), f(1024, 768)], {}, constant=(1,))
    e = tensoregg.explain(model, "cuda")
    (node,) = e.after.nodes
    assert isinstance(node.schedule, SharedTiles)
    header, *rows = e.report.kernels
    assert "MatMul" in header and any("untiled" in r for r in rows)
    chosen = [r for r in rows if r.lstrip().startswith("*")]
    assert len(chosen) == 1 and str(node.schedule) in chosen[0]
    assert "gpu shared tiles" in str(e)
