"""The interp target end to end: registered, and the example model and the light zoo models computing
what the reference interpreter computes (relative L2 error at most 1e-4)."""

import json
from pathlib import Path

import numpy as np
import pytest

import tensoregg
from tensoregg.cli import main
from tensoregg.targets import get_target, registration
from tensoregg.targets.interp.program import InterpProgram
from tensoregg.testing import LIGHT_MODELS, light_model

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tinycnn.onnx"
FAST = {"squeezenet", "shufflenet"}
"""Light models that compile and run in a few seconds; the others are marked slow."""


def against_reference(model) -> None:
    """Compile ``model`` for interp and for ref, run both on seeded random inputs, compare."""
    module = tensoregg.compile(model, "interp")
    assert module.target == "interp" and isinstance(module.program, InterpProgram)
    reference = tensoregg.compile(model, "ref")
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s).astype(d) for n, s, d in
             zip(module.input_names, module.input_shapes, module.input_dtypes)}
    for got, want in zip(module.run(**feeds), reference.run(**feeds), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        error = np.linalg.norm((got - want).astype(np.float64)) / np.linalg.norm(want.astype(np.float64))
        assert error <= 1e-4, error


def test_the_example_model():
    against_reference(str(EXAMPLE))


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in FAST else [pytest.mark.slow])
                                  for n in LIGHT_MODELS])
def test_light_zoo_model(name):
    against_reference(light_model(name))


def test_the_target_is_registered_and_listed(capsys):
    assert get_target("interp").name == "interp" and registration("interp").unavailable() is None
    assert main(["targets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["interp"]["runs_here"] and "loop program" in rows["interp"]["summary"]
