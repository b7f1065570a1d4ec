"""Element-wise operators: unary math, broadcasting binary arithmetic, comparisons, logic, casts."""

from __future__ import annotations

import numpy as np

from tensoregg.ir.registry import op
from tensoregg.ir.shapes import broadcast


def _binary(name: str, fn, doc: str) -> None:
    def reference(attrs, a, b):
        return np.asarray(fn(a, b)).astype(a.dtype, copy=False)

    reference.__doc__ = doc
    op(name, "A B", "C", shape=broadcast())(reference)


_binary("Add", np.add, "A + B with broadcasting.")
_binary("Sub", np.subtract, "A - B with broadcasting.")
_binary("Mul", np.multiply, "A * B with broadcasting.")
