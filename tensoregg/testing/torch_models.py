"""PyTorch models for the frontend's tests and benchmarks: torchvision's resnet18 and mobilenet_v2
and a transformer encoder layer, with seeded random weights (no downloads), in eval mode."""

from __future__ import annotations

import types
from collections.abc import Callable

import torch

_LIBRARIES: list[torch.library.Library] = []


def torchvision_models() -> types.ModuleType:
    """``torchvision.models``. PyPI's torchvision wheel is built against torch's CUDA build: with the
    CPU build (as CI installs it) its C++ operators do not load, and importing torchvision fails on
    registering fake kernels for two of them; those two are declared here first (nothing here calls
    them: the models are plain nn.Modules)."""
    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        library = torch.library.Library("torchvision", "DEF")
        for name in ("nms", "qnms"):
            library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARIES.append(library)
        import torchvision
    return torchvision.models


def _image() -> tuple[torch.Tensor]:
    return (torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)),)


def resnet18() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return torchvision_models().resnet18(weights=None).eval(), _image()


def mobilenet_v2() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return torchvision_models().mobilenet_v2(weights=None).eval(), _image()


def encoder_layer(batch: int = 2, seq: int = 32, d_model: int = 256, heads: int = 8,
                  ffn: int = 1024) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """``nn.TransformerEncoderLayer`` (batch first, ReLU, post-norm) on a (batch, seq, d_model) input."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model, heads, ffn, batch_first=True).eval()
    return layer, (torch.randn(batch, seq, d_model, generator=torch.Generator().manual_seed(1)),)


class Seq2Seq(torch.nn.Module):
    """An LSTM encoder-decoder with greedy decoding: token embeddings, an encoder LSTM whose final
    state starts a decoder LSTM that runs ``steps`` steps, each fed the argmax token of the step
    before (the first: the source's first token); returns the logits (batch, steps, vocab)."""

    def __init__(self, vocab: int = 50, width: int = 16, hidden: int = 32, steps: int = 6) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.encoder = torch.nn.LSTM(width, hidden, batch_first=True)
        self.decoder = torch.nn.LSTM(width, hidden, batch_first=True)
        self.project = torch.nn.Linear(hidden, vocab)
        self.steps = steps

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        _, state = self.encoder(self.embed(source))
        token, logits = source[:, :1], []
        for _ in range(self.steps):
            out, state = self.decoder(self.embed(token), state)
            logits.append(self.project(out[:, -1]))
            token = logits[-1].argmax(-1, keepdim=True)
        return torch.stack(logits, 1)


def seq2seq_lstm() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return Seq2Seq().eval(), (torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(1)),)


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]] = {
    "resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "encoder_layer": encoder_layer,
    "seq2seq_lstm": seq2seq_lstm}
"""Model name -> a builder of (module, example inputs)."""
