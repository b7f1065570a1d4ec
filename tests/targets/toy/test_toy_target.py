"""A target defined outside the package is registered and compiles the example model."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import tensoregg
from tensoregg.cli import main
from tensoregg.errors import CompileError
from tensoregg.ir import run_graph
from tensoregg.targets import available, get_target, register_target, registration

sys.path.insert(0, str(Path(__file__).parent))
import toy_target

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tinycnn.onnx"


@pytest.fixture(autouse=True, scope="module")
def toy():
    toy_target.register()


def test_the_toy_target_compiles_the_example_model():
    module = tensoregg.compile(str(EXAMPLE), "toy")
    assert module.target == "toy" and "def model(" in module.program.source
    assert [p.name for p in module.report.phases] == ["algebra"]  # the toy's rule families
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = run_graph(tensoregg.compile(str(EXAMPLE), "ref", optimize=False).graph, {"x": x})
    np.testing.assert_allclose(module.run(x)[0], want[0], rtol=1e-5, atol=1e-6)


def test_the_registry_lists_and_describes_it():
    assert {"llvm", "ref", "toy"} <= set(available())
    assert get_target("toy") is toy_target.TOY and registration("toy").unavailable() is None


def test_the_command_lists_it(capsys):
    assert main(["targets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["toy"]["runs_here"] and rows["toy"]["summary"].startswith("a toy")


def test_a_name_is_registered_once_and_an_unknown_one_is_named():
    with pytest.raises(CompileError, match="already registered"):
        register_target("toy", summary="", describe=lambda: toy_target.TOY, build=toy_target.PythonProgram)
    with pytest.raises(CompileError, match=r"unknown target 'nope'; available targets: .*toy"):
        tensoregg.compile(str(EXAMPLE), "nope")


def test_a_description_selects_its_target_and_cost_model():
    described = dataclasses.replace(get_target("llvm"), mem_bandwidth=1e9)
    module = tensoregg.compile(str(EXAMPLE), described)
    assert module.target == "llvm" and module.program.target is described
    x = np.zeros((1, 3, 32, 32), np.float32)
    np.testing.assert_allclose(module.run(x)[0], tensoregg.compile(str(EXAMPLE), "ref").run(x)[0], atol=1e-6)


def test_code_for_features_this_host_lacks_is_refused():
    llvm = get_target("llvm")
    alien = dataclasses.replace(llvm, features=llvm.features + ",+tensoregg-test-feature")
    with pytest.raises(CompileError, match=r"tensoregg-test-feature, which this host .* lacks"):
        tensoregg.compile(str(EXAMPLE), alien)
