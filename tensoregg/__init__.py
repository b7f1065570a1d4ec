"""tensoregg: a deep-learning compiler whose optimizations are rewrite rules."""

from tensoregg import errors
from tensoregg.api import compile  # noqa: A004
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

__all__ = ["ArtifactError", "CompileError", "Explanation", "InputError", "InvalidModel", "Module",
           "ShapeError", "TensoreggError", "UnsupportedOperator", "ValidationError", "__version__", "compile",
           "errors", "explain", "extract", "load"]
