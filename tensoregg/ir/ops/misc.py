"""Signal-processing operators: the Hann, Hamming and Blackman windows.

Each window is a sum of cosines ``sum_k c_k cos(2 pi k n / N)`` over ``n = 0..size-1``, with
``N = size`` (periodic) or ``size - 1`` (symmetric), computed in float64 and cast to
``output_datatype``.
"""

from __future__ import annotations

import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.ir.dtypes import dtype_of
from tensoregg.ir.registry import Attr, InferCtx, op
from tensoregg.ir.types import TensorType


def _output_dtype(code: int, where: str) -> np.dtype:
    try:
        dtype = dtype_of(code)
    except InvalidModel:
        raise InvalidModel(f"{where}: output_datatype {code} is not a tensor element type") from None
    if dtype.kind not in "fiu":
        raise InvalidModel(f"{where}: output_datatype {code} ({dtype}) must be numeric")
    return dtype


def _window_shape(ctx: InferCtx) -> TensorType:
    size = ctx.ints(0)
    if np.ndim(ctx.value(0)) != 0 or size[0] < 0:
        ctx.fail(f"size must be a non-negative scalar, got {np.asarray(ctx.value(0)).tolist()}")
    return TensorType(_output_dtype(ctx.attrs["output_datatype"], f"{ctx.op} node {ctx.node!r}"), (size[0],))


def _cosine_window(name: str, coeffs: tuple[float, ...], doc: str) -> None:
    def window(attrs, size):
        n = int(size)
        period = n if attrs["periodic"] else n - 1
        phase = 2 * np.pi * np.arange(n) / max(period, 1)
        w = sum(c * np.cos(k * phase) for k, c in enumerate(coeffs))
        return np.asarray(w, np.float64).astype(_output_dtype(attrs["output_datatype"], name))

    window.__doc__ = doc
    op(name, "size", "output", shape=_window_shape, static=(0,),
       attrs={"periodic": Attr("int", 1), "output_datatype": Attr("int", 1)})(window)


_cosine_window("HannWindow", (0.5, -0.5), "0.5 - 0.5 cos(2 pi n / N).")
_cosine_window("HammingWindow", (25 / 46, -21 / 46), "25/46 - 21/46 cos(2 pi n / N).")
_cosine_window("BlackmanWindow", (0.42, -0.5, 0.08), "0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N).")
