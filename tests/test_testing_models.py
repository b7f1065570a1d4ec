"""The model builders of tensoregg.testing_models give valid models that onnxruntime runs."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tensoregg import testing_models

BUILDERS = {"mlp": (testing_models.mlp, (64, 10)),
            "small_resnet": (lambda: testing_models.small_resnet(size=64), (1, 1000)),
            "encoder_layer": (testing_models.encoder_layer, (1, 16, 64))}


@pytest.mark.parametrize("name", BUILDERS)
def test_builder_checks_and_runs(name):
    build, out_shape = BUILDERS[name]
    model = build()
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == testing_models.OPSET
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (x,) = session.get_inputs()
    feed = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    (y,) = session.run(None, {x.name: feed})
    assert y.shape == out_shape
    assert np.all(np.isfinite(y)) and 0.1 < float(np.std(y)) < 100


def test_seeded():
    assert testing_models.mlp(seed=1) == testing_models.mlp(seed=1)
    assert testing_models.mlp(seed=1) != testing_models.mlp(seed=2)
