"""Shape-rule building blocks shared by many operators (broadcasting, same-as-input, reductions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tensoregg.ir.registry import InferCtx, ShapeRule
from tensoregg.ir.types import TensorType


def broadcast_shapes(ctx: InferCtx, shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """Numpy/ONNX multidirectional broadcasting, failing with both shapes named."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        ctx.fail(f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast")


def given(ctx: InferCtx) -> list[TensorType]:
    """The types of the inputs that were given (variadic/optional slots dropped)."""
    return [t for t in ctx.types if t is not None]


def same_dtype(ctx: InferCtx, types: Sequence[TensorType]) -> np.dtype:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        ctx.fail(f"inputs must share one dtype, got {', '.join(sorted(d.name for d in dtypes))}")
    return types[0].dtype


def same(i: int = 0) -> ShapeRule:
    """Output 0 has the type of input ``i``."""

    def rule(ctx: InferCtx) -> TensorType:
        return ctx.type(i)

    return rule


def broadcast(dtype: Any = None) -> ShapeRule:
    """Inputs of one dtype broadcast together; output dtype is theirs, or ``dtype`` if given."""

    def rule(ctx: InferCtx) -> TensorType:
        types = given(ctx)
        dt = same_dtype(ctx, types)
        return TensorType(dt if dtype is None else dtype, broadcast_shapes(ctx, [t.shape for t in types]))

    return rule


def reduced_shape(shape: tuple[int, ...], axes: Sequence[int], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def norm_axes(ctx: InferCtx, axes: Sequence[int], rank: int) -> list[int]:
    """Normalize axes (negative allowed), failing on duplicates or out-of-range values."""
    out = [ctx.axis(int(a), rank) for a in axes]
    if len(set(out)) != len(out):
        ctx.fail(f"repeated axes {list(axes)}")
    return out
