"""The torch.compile backend: compiled graphs match eager; graphs it cannot take run eagerly, logged."""

from __future__ import annotations

import logging
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tensoregg.frontends import aten  # noqa: E402
from tensoregg.frontends.torch_backend import tensoregg_backend  # noqa: E402

nn = torch.nn
LOGGER = "tensoregg.frontends.torch_backend"


def _model() -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)]
    return nn.Sequential(*layers).eval()


def _run(model: nn.Module, x: torch.Tensor, caplog: pytest.LogCaptureFixture) -> torch.Tensor:
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=tensoregg_backend, options={"target": "ref"})
    with caplog.at_level(logging.INFO, logger=LOGGER), torch.no_grad():
        return compiled(x)


def test_compiled_graph_matches_eager(caplog):
    model, x = _model(), torch.randn(2, 3, 6, 6)
    got = _run(model, x, caplog)
    assert "compiled a graph" in caplog.text and "eager" not in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
        model[0].weight.mul_(2)  # weights changed in place: the compiled constants are stale
        torch.testing.assert_close(_run_again(model, x), model(x))
    assert "not the ones compiled in" in caplog.text


def _run_again(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.compile(model, backend=tensoregg_backend, options={"target": "ref"})(x)


def test_unsupported_graph_runs_eagerly_with_the_reason(caplog, monkeypatch):
    monkeypatch.delitem(aten.ATEN, "aten.relu.default")
    model, x = _model(), torch.randn(2, 3, 6, 6)
    got = _run(model, x, caplog)
    assert "eager mode" in caplog.text and "aten.relu.default" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(got, model(x))


def test_graph_needing_gradients_runs_eagerly(caplog):
    model, x = _model(), torch.randn(2, 3, 6, 6)
    torch._dynamo.reset()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        got = torch.compile(model, backend=tensoregg_backend)(x)
    assert "requires gradients" in caplog.text and got.requires_grad


def test_entry_point_names_the_backend():
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["torch_dynamo_backends"]["tensoregg"]
    assert metadata.EntryPoint("tensoregg", target, "torch_dynamo_backends").load() is tensoregg_backend
    installed = metadata.entry_points(group="torch_dynamo_backends")
    if "tensoregg" not in installed.names:
        pytest.skip("this install predates the entry point: pip install -e . registers it")
    assert torch._dynamo.lookup_backend("tensoregg") is tensoregg_backend
