"""Whole models through tensoregg, checked against onnxruntime."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensoregg
from tensoregg import testing_models
from tensoregg.testing import LIGHT_MODELS, light_model

ort = pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]


def against_onnxruntime(model, rtol=1e-4):
    """Compile for llvm (the default target) and compare with onnxruntime, then run the same machine
    code in guard mode (every buffer between poisoned guard regions, checked after each kernel)."""
    module = tensoregg.compile(model)
    assert module.target == "llvm"
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s).astype(d) for n, s, d in
             zip(module.input_names, module.input_shapes, module.input_dtypes)}
    data = model if isinstance(model, (str, Path)) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)
    for run in (module.run(**feeds), module.program.run_guarded(feeds)):
        for got, w in zip(run, want):
            assert got.shape == w.shape and got.dtype == w.dtype
            np.testing.assert_allclose(got, w, rtol=rtol, atol=rtol * float(np.abs(w).max()))


def test_example_model():
    against_onnxruntime(str(ROOT / "examples" / "tinycnn.onnx"))


def test_example_model_is_what_its_script_builds():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import make_tinycnn
    finally:
        sys.path.pop(0)
    assert make_tinycnn.build().SerializeToString() == (ROOT / "examples" / "tinycnn.onnx").read_bytes()


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_zoo_model(name):
    against_onnxruntime(light_model(name))


@pytest.mark.parametrize("build", [testing_models.mlp, testing_models.encoder_layer,
                                   testing_models.small_resnet])
def test_bench_model(build):
    """The rest of bench/models.py's model set."""
    against_onnxruntime(build())


def test_cli_run_check():
    example = str(ROOT / "examples" / "tinycnn.onnx")
    out = subprocess.run([sys.executable, "-m", "tensoregg.cli", "run", example, "--check", "--repeat", "2"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "vs onnxruntime" in out.stdout and "MISMATCH" not in out.stdout


def test_cli_reports_errors_cleanly(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    out = subprocess.run([sys.executable, "-m", "tensoregg.cli", "run", str(bad)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2 and "InvalidModel" in out.stderr and "Traceback" not in out.stderr
