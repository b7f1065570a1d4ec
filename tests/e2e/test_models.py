"""Whole models through tensoregg, checked against onnxruntime."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensoregg
from tensoregg.testing import LIGHT_MODELS, light_model

ort = pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]


def against_onnxruntime(model, rtol=1e-4):
    module = tensoregg.compile(model)
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s).astype(d) for n, s, d in
             zip(module.input_names, module.input_shapes, module.input_dtypes)}
    data = model if isinstance(model, (str, Path)) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for got, want in zip(module.run(**feeds), session.run(None, feeds)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.abs(want).max()))


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
