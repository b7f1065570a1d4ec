"""The cuda target without a GPU: every kernel of one-op models, the example and the light models
compiled by NVRTC for sm_80 and sm_90 with no register spills; the generated CUDA C run on the CPU
(``host``) and the GPU kernel programs run in the emulator (``TENSOREGG_CUDA_EMULATE=1``), both
against the reference interpreter."""

from pathlib import Path

import numpy as np
import pytest

import tensoregg
from tensoregg.errors import UnsupportedOperator
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.targets.cuda import GPUS
from tensoregg.targets.cuda.host import check_on_host
from tensoregg.targets.cuda.machines import description
from tensoregg.targets.cuda.nvrtc import nvrtc_missing
from tensoregg.targets.cuda.program import EMULATE, CudaProgram
from tensoregg.testing import (
    LIGHT_MODELS,
    NATIVE_SLACK,
    assert_same,
    light_model,
    one_op_cases,
    single_op_model,
    tolerance,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tinycnn.onnx"
CASES = one_op_cases()
H100 = GPUS["sm_90"]
needs_nvrtc = pytest.mark.skipif(nvrtc_missing() is not None, reason=str(nvrtc_missing()))


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv(EMULATE, "1")


def check(got, want, what):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        rtol, atol = tolerance(np.asarray(w).dtype)
        assert_same(g, np.asarray(w), f"{what} output {k}", rtol * NATIVE_SLACK, atol * NATIVE_SLACK)


@needs_nvrtc
@pytest.mark.parametrize("op, inputs, attrs, constant", CASES, ids=[c[0] for c in CASES])
def test_one_op_models(op, inputs, attrs, constant):
    outputs = {"Split": 2, "TopK": 2}.get(op, 1)
    graph = import_onnx(single_op_model(op, inputs, attrs, n_outputs=outputs, constant=constant))
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if i not in constant}
    if any(str(t.dtype).startswith("float8") for t in graph.types.values()):
        with pytest.raises(UnsupportedOperator, match="float8"):
            CudaProgram(graph, description(H100), H100)
        return
    program = CudaProgram(graph, description(H100), H100)
    assert program.cubins["sm_90"].image, "NVRTC gave no cubin"
    with np.errstate(all="ignore"):
        want = run_graph(graph, dict(feeds))
        check(check_on_host(program, feeds), want, "the CUDA C on the host")
        check(program.run(feeds), want, "the emulated GPU kernels")


def compiled_everywhere(model) -> tensoregg.Module:
    """``model`` compiled for cuda; its module built by NVRTC for sm_80 too; no kernel spills."""
    module = tensoregg.compile(model, "cuda")
    program = module.program
    assert isinstance(program, CudaProgram)
    for arch in ("sm_80", "sm_90"):
        cubin = program.compile_for(arch)
        assert set(cubin.resources) == {item.launch.name for item in program.launches}
        spilled = {k: r for k, r in cubin.resources.items() if r.spill_stores or r.spill_loads}
        assert not spilled, f"{arch}: kernels spill registers: {spilled}"
    return module


def against_reference(module: tensoregg.Module, model, host: bool = True) -> None:
    reference = tensoregg.compile(model, "ref")
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s).astype(d) for n, s, d in
             zip(module.input_names, module.input_shapes, module.input_dtypes)}
    want = reference.run(**feeds)
    runs = [("emulated", module.run(**feeds))]
    if host:
        runs.append(("host", check_on_host(module.program, feeds)))
    for what, got in runs:
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and g.dtype == w.dtype
            error = np.linalg.norm((g - w).astype(np.float64)) / np.linalg.norm(w.astype(np.float64))
            assert error <= 1e-4, (what, error)


@needs_nvrtc
def test_the_example_model():
    against_reference(compiled_everywhere(str(EXAMPLE)), str(EXAMPLE))


FAST = {"squeezenet", "shufflenet"}
"""Light models whose GPU programs run emulated and on the host in well under a minute."""


@needs_nvrtc
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_build_for_both_architectures_and_run(name):
    """Every model builds; the fast ones also run (emulated, and their CUDA C on the host)."""
    model = light_model(name)
    module = compiled_everywhere(model)
    if name in FAST:
        against_reference(module, model)


@needs_nvrtc
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(LIGHT_MODELS) - FAST))
def test_the_other_light_models_run_emulated(name):
    model = light_model(name)
    against_reference(tensoregg.compile(model, "cuda"), model, host=False)
