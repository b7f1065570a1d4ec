"""Whole PyTorch models through torch.export and through the torch.compile backend, on llvm, against
torch eager (relative L2 error at most 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensoregg  # noqa: E402
from tensoregg.frontends.torch_backend import tensoregg_backend  # noqa: E402
from tensoregg.testing.torch_models import MODELS  # noqa: E402

pytestmark = pytest.mark.slow


def _rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_path_matches_eager(name):
    model, inputs = MODELS[name]()
    module = tensoregg.compile(model, "llvm", example_inputs=inputs)
    (got,) = module.run(*[x.numpy() for x in inputs])
    with torch.no_grad():
        want = model(*inputs).numpy()
    assert _rel_l2(got, want) <= 1e-4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_compile_backend_matches_eager(name, caplog):
    model, inputs = MODELS[name]()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=tensoregg_backend, options={"target": "llvm"})
    with torch.no_grad():
        got, want = compiled(*inputs).numpy(), model(*inputs).numpy()
    assert "eager mode" not in caplog.text
    assert _rel_l2(got, want) <= 1e-4
