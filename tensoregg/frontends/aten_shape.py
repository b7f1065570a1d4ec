"""Converters of ATen's view, copy and data-movement ops (reshape, expand, permute, slice, cat...)
into IR nodes; ``aten.ATEN`` maps the ops to them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tensoregg.frontends.aten import Builder

INT64_MAX = np.iinfo(np.int64).max


def normal_axes(dims: Any, rank: int) -> list[int]:
    """``dims`` (an int, a list, or None / [] for every axis) as non-negative axes."""
    if dims is None or dims == []:
        return list(range(rank))
    return [d % max(rank, 1) for d in ([dims] if isinstance(dims, int) else dims)]


def reshape(b: Builder, x: Any, *_: Any) -> str:
    return b.emit("Reshape", [b.tensor(x), b.const(b.out_shape, np.int64)])


def expand(b: Builder, x: Any, *_: Any, **__: Any) -> str:
    if b.shape(x) == b.out_shape:
        return b.tensor(x)
    return b.emit("Expand", [b.tensor(x), b.const(b.out_shape, np.int64)])


def bmm(b: Builder, x: Any, y: Any) -> str:
    """A batched matmul. torch.matmul of a batch by a matrix (a linear layer on 3-d input)
    decomposes to expanding the matrix to every batch, then ``bmm``: MatMul broadcasts the matrix
    instead of copying it per batch."""
    return b.emit("MatMul", [_unexpanded(b, x), _unexpanded(b, y)])


def _unexpanded(b: Builder, x: Any) -> str:
    """``x``, or the matrix it was expanded from when ``x`` is view(expand(matrix, [B, M, K]))."""
    if str(getattr(x, "target", "")) in ("aten.view.default", "aten._unsafe_view.default"):
        expanded = x.args[0]
        if str(getattr(expanded, "target", "")) == "aten.expand.default":
            source = expanded.args[0]
            if len(b.shape(source)) == 2 and b.shape(x)[1:] == b.shape(source):
                return b.tensor(source)
    return b.tensor(x)


def permute(b: Builder, x: Any, dims: Sequence[int]) -> str:
    return b.emit("Transpose", [b.tensor(x)], perm=normal_axes(list(dims), len(dims)))


def transpose(b: Builder, x: Any, d0: int = 0, d1: int = 1) -> str:
    rank = len(b.shape(x))
    perm = list(range(rank))
    if rank >= 2:
        a, c = d0 % rank, d1 % rank
        perm[a], perm[c] = perm[c], perm[a]
    return b.emit("Transpose", [b.tensor(x)], perm=perm)


def unsqueeze(b: Builder, x: Any, dim: int) -> str:
    return b.emit("Unsqueeze", [b.tensor(x), b.const([dim % len(b.out_shape)], np.int64)])


def squeeze(b: Builder, x: Any, dims: Any = None) -> str:
    shape = b.shape(x)
    axes = [a for a in normal_axes(dims, len(shape)) if shape[a] == 1]
    if not axes:
        return b.tensor(x)
    return b.emit("Squeeze", [b.tensor(x), b.const(axes, np.int64)])


def select(b: Builder, x: Any, dim: int, index: int) -> str:
    shape = b.shape(x)
    axis = dim % len(shape)
    return b.emit("Gather", [b.tensor(x), b.const(index % shape[axis], np.int64)], axis=axis)


def slice_(b: Builder, x: Any, dim: int = 0, start: Any = None, end: Any = None, step: int = 1) -> str:
    shape = b.shape(x)
    axis = dim % len(shape)
    start, end = start or 0, INT64_MAX if end is None else end
    if step == 1 and start in (0, -INT64_MAX - 1) and end >= shape[axis]:
        return b.tensor(x)
    return b.emit("Slice", [b.tensor(x), b.const([start], np.int64), b.const([end], np.int64),
                            b.const([axis], np.int64), b.const([step], np.int64)])


def cat(b: Builder, tensors: Sequence[Any], dim: int = 0) -> str:
    return b.emit("Concat", [b.operand(t, b.out_dtype) for t in tensors], axis=dim % len(b.out_shape))


def split(b: Builder, x: Any, sizes: Sequence[int], dim: int = 0) -> tuple[str, ...]:
    axis = dim % len(b.shape(x))
    return tuple(b.emit("Split", [b.tensor(x), b.const(list(sizes), np.int64)], outputs=len(sizes),
                        axis=axis))


def pad(b: Builder, x: Any, pad: Sequence[int], value: float = 0) -> str:
    rank = len(b.shape(x))
    begins, ends = [0] * rank, [0] * rank
    for k in range(len(pad) // 2):  # torch lists (begin, end) pairs from the last axis
        begins[rank - 1 - k], ends[rank - 1 - k] = pad[2 * k], pad[2 * k + 1]
    return b.emit("Pad", [b.tensor(x), b.const(begins + ends, np.int64), b.const(value, b.out_dtype)])


def flip(b: Builder, x: Any, dims: Sequence[int]) -> str:
    axes = normal_axes(list(dims), len(b.shape(x)))
    return b.emit("Slice", [b.tensor(x), b.const([-1] * len(axes), np.int64),
                            b.const([-INT64_MAX - 1] * len(axes), np.int64), b.const(axes, np.int64),
                            b.const([-1] * len(axes), np.int64)])


def repeat(b: Builder, x: Any, repeats: Sequence[int]) -> str:
    shape = b.shape(x)
    padded = (1,) * (len(repeats) - len(shape)) + shape
    name = b.emit("Reshape", [b.tensor(x), b.const(padded, np.int64)]) if padded != shape else b.tensor(x)
    return b.emit("Tile", [name, b.const(list(repeats), np.int64)])


def alias(b: Builder, x: Any, *_: Any, **__: Any) -> str:
    return b.tensor(x)


def to_copy(b: Builder, x: Any, **_: Any) -> str:
    return b.operand(x, b.out_dtype)
