"""tensoregg: a deep-learning compiler whose optimizations are rewrite rules."""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tensoregg import errors
from tensoregg.api import compile, tune  # noqa: A004
from tensoregg.errors import (
    ArtifactError,
    CompileError,
    InputError,
    InvalidModel,
    ShapeError,
    TensoreggError,
    UnsupportedOperator,
    ValidationError,
)
from tensoregg.explain import Explanation, explain
from tensoregg.runtime import Module, extract, load
from tensoregg.version import __version__


def quantize(model: Any, calibration_inputs: Sequence[Mapping[str, np.ndarray]], *,
             per_channel: bool = True) -> Any:
    """``model`` quantized statically into QDQ form from ``calibration_inputs``: an ``onnx.ModelProto``
    (``tensoregg.quantization.quantize``, imported when called, so that loading a saved artifact
    needs no ONNX)."""
    from tensoregg.quantization import quantize as run

    return run(model, calibration_inputs, per_channel=per_channel)


__all__ = ["ArtifactError", "CompileError", "Explanation", "InputError", "InvalidModel", "Module",
           "ShapeError", "TensoreggError", "UnsupportedOperator", "ValidationError", "__version__", "compile",
           "errors", "explain", "extract", "load", "quantize", "tune"]
