"""A symbolic batch dimension: one ``compile`` runs every batch in the declared range, each matching
onnxruntime; sizes outside it, bad ranges and saving are refused with tensoregg errors."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import tensoregg
from tensoregg.errors import ArtifactError, InputError, ParameterError
from tensoregg.runtime.batched import BatchedModule
from tensoregg.testing_models import mlp, small_resnet, symbolic_batch

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "tinycnn.onnx")


def check_batches(module, model, sizes, feature):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = module.input_names[0]
    for n in sizes:
        x = np.random.default_rng(n).standard_normal((n, *feature)).astype(np.float32)
        got, want = module.run(x)[0], session.run(None, {name: x})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_one_compile_runs_every_batch_in_its_range():
    model = symbolic_batch(small_resnet(widths=(8, 16, 16, 16), size=16, classes=10))
    module = tensoregg.compile(model, dim_ranges={"N": (1, 4)})
    assert isinstance(module, BatchedModule) and sorted(module.buckets) == [1, 2, 4]
    assert module.input_shapes == [("N", 3, 16, 16)]
    assert "input  x: float32[N,3,16,16]" in str(module) and "N in 1..4, buckets [1, 2, 4]" in repr(module)
    check_batches(module, model, [1, 3, 4, 2], (3, 16, 16))
    assert sum(rows for _, rows in module.chunks(3)) == 3
    with pytest.raises(InputError, match="N=5 is outside"):
        module.run(np.zeros((5, 3, 16, 16), np.float32))
    with pytest.raises(InputError, match="shape"):
        module.run(np.zeros((2, 3, 16, 17), np.float32))


@pytest.fixture(scope="module")
def batched_example():
    model = symbolic_batch(EXAMPLE)
    return model, tensoregg.compile(model, dim_ranges={"N": (1, 4)})


def test_a_batched_module_saves_and_loads(batched_example, tmp_path):
    model, module = batched_example
    path = module.save(tmp_path / "batched.tegg")
    loaded = tensoregg.load(path)
    assert isinstance(loaded, BatchedModule) and loaded.buckets.keys() == module.buckets.keys()
    assert loaded.input_shapes == [("N", 3, 32, 32)] and loaded.chunks(3) == module.chunks(3)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(loaded.run(x)[0], module.run(x)[0])
    check_batches(loaded, model, [1, 3], (3, 32, 32))


def test_a_corrupted_bucket_is_refused(batched_example, tmp_path):
    import json
    import zipfile

    from tensoregg.runtime.artifact import _manifest_hash

    _, module = batched_example
    artifact = module.artifact()
    manifest = json.loads(json.dumps(artifact.manifest))
    manifest["code"]["batched"]["buckets"]["2"]["inputs"][0]["shape"] = [2, 3, 32, 33]
    manifest["manifest_sha256"] = _manifest_hash(manifest)
    path = tmp_path / "bad.tegg"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for name, data in artifact.parts.items():
            zf.writestr(name, bytes(data))
    with pytest.raises(ArtifactError, match="buckets\\['2'\\]"):
        tensoregg.load(path)


def test_a_dim_param_model_compiles_without_input_shapes():
    model = symbolic_batch(EXAMPLE)
    module = tensoregg.compile(model)
    assert list(module.buckets) == [1]
    check_batches(module, model, [1, 3], (3, 32, 32))
    module.num_threads = 1
    assert module.num_threads == 1


def test_a_named_batch_in_input_shapes():
    model = symbolic_batch(mlp(batch=8, sizes=(12, 8, 4)))
    module = tensoregg.compile(model, input_shapes={"x": ("B", 12)}, dim_ranges={"B": (2, 2)})
    assert not isinstance(module, BatchedModule) and module.input_shapes == [(2, 12)]


@pytest.mark.parametrize(("ranges", "words"), [
    ({"M": (1, 4)}, "must map"), ({"N": (4, 1)}, "low <= high"), ({"N": (0, 4)}, "low <= high"),
    ({"N": "1-4"}, "low <= high"), ([1, 4], "must map"),
])
def test_bad_dim_ranges(ranges, words):
    with pytest.raises(ParameterError, match=words):
        tensoregg.compile(symbolic_batch(EXAMPLE), dim_ranges=ranges)


def test_dim_ranges_on_a_static_model_is_refused():
    with pytest.raises(ParameterError, match="all fixed"):
        tensoregg.compile(EXAMPLE, dim_ranges={"N": (1, 4)})


def test_a_model_fixed_to_one_batch_is_refused():
    """A Reshape to [1, ...] (an export for batch 1 alone) under a symbolic batch dim."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 2, 3]), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(tensoregg.errors.ShapeError, match="does not take batch N=2"):
        tensoregg.compile(model)


def test_the_command_line_runs_a_symbolic_batch(tmp_path, capsys):
    from tensoregg.cli import main

    path = tmp_path / "batched.onnx"
    path.write_bytes(symbolic_batch(EXAMPLE).SerializeToString())
    assert main(["run", str(path), "--input-shape", "x=B,3,32,32", "--dim-range", "B=1:2", "--check",
                 "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "BatchedModule" in out and "B in 1..2" in out and "MISMATCH" not in out
    assert main(["run", str(path), "--dim-range", "B=1-2"]) == 2
    assert "--dim-range expects NAME=LOW:HIGH" in capsys.readouterr().err


def test_a_torch_model_with_a_batch_range():
    """Exported once per bucket (the example's first row repeated); every batch matches eager."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    module = tensoregg.compile(model, example_inputs=(torch.randn(1, 3, 8, 8),), dim_ranges={"batch": (1, 2)})
    assert isinstance(module, BatchedModule) and module.input_shapes == [("batch", 3, 8, 8)]
    for n in (1, 2):
        x = torch.randn(n, 3, 8, 8)
        np.testing.assert_allclose(module.run(x.numpy())[0], model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ParameterError, match="one batch dimension"):
        tensoregg.compile(model, example_inputs=(torch.randn(1, 3, 8, 8),),
                          dim_ranges={"a": (1, 2), "b": (1, 2)})
