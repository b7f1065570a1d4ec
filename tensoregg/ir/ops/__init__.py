"""Operator families. Importing this package registers every operator in ``ir.registry.OPS``."""

from tensoregg.ir.ops import (
    activations,
    attention,
    casts,
    detection,
    elementwise,
    fused,
    indexing,
    linalg,
    loss,
    misc,
    nn,
    normalization,
    reduce,
    resize,
    shape,
    winograd,
)

__all__ = ["activations", "attention", "casts", "detection", "elementwise", "fused", "indexing", "linalg",
           "loss", "misc", "nn", "normalization", "reduce", "resize", "shape", "winograd"]
