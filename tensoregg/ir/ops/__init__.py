"""Operator families. Importing this package registers every operator in ``ir.registry.OPS``."""

from tensoregg.ir.ops import (activations, elementwise, indexing, linalg, misc, nn, normalization,
                              reduce, resize, shape)

__all__ = ["activations", "elementwise", "indexing", "linalg", "misc", "nn", "normalization",
           "reduce", "resize", "shape"]
