"""Activation functions and the softmax family."""

from __future__ import annotations

import numpy as np

from tensoregg.ir.registry import op
from tensoregg.ir.shapes import same


@op("Relu", "X", "Y", shape=same())
def relu(attrs, x):
    """max(x, 0)."""
    return np.maximum(x, np.zeros((), x.dtype))
