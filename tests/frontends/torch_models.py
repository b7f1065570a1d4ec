"""The torch models the frontend tests use, importable where torchvision's C++ ops cannot load."""

from __future__ import annotations

import types

import torch


def torchvision_models() -> types.ModuleType:
    """``torchvision.models``. PyPI's torchvision wheel is built against torch's CUDA build: with the
    CPU build (as CI installs it) its C++ operators do not load and importing torchvision fails on
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


_LIBRARIES: list[torch.library.Library] = []
