"""Hypothesis strategies for shapes and tensors: what property tests (``tensoregg.testing``) and rule
witnesses (``tensoregg.rules``) draw. Imports nothing of tensoregg, so every layer may use it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st


def shapes(min_rank: int = 0, max_rank: int = 4, min_side: int = 1, max_side: int = 5) -> st.SearchStrategy:
    """Static tensor shapes."""
    return st.lists(st.integers(min_side, max_side), min_size=min_rank, max_size=max_rank).map(tuple)


def arrays(dtype: Any, shape: Sequence[int], *, low: float = -4.0, high: float = 4.0) -> st.SearchStrategy:
    """Arrays of ``dtype`` and ``shape`` with finite values in [low, high] (ints: rounded)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    elems: st.SearchStrategy[Any]
    if dtype == np.bool_:
        elems = st.booleans()
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        elems = st.integers(max(int(low), int(info.min)), min(int(high), int(info.max)))
    else:
        elems = st.floats(low, high, allow_nan=False, allow_infinity=False, width=32)
    if n > LIST_LIMIT:  # beyond what hypothesis draws element by element: values from a drawn seed
        def seeded(seed: int) -> np.ndarray:
            rng = np.random.default_rng(seed)
            values: np.ndarray
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                values = rng.integers(max(int(low), int(info.min)), min(int(high), int(info.max)) + 1, n)
            else:
                values = rng.uniform(low, high, n) if dtype != np.bool_ else rng.uniform(size=n) > 0.5
            return values.astype(dtype).reshape(shape)
        return st.integers(0, 2**32 - 1).map(seeded)
    return st.lists(elems, min_size=n, max_size=n).map(lambda xs: np.array(xs, dtype=dtype).reshape(shape))


LIST_LIMIT = 4096
"""Arrays with more elements than this are drawn as a seed for numpy's generator."""


def broadcastable_shapes(shape: Sequence[int]) -> st.SearchStrategy:
    """Shapes that broadcast with ``shape``: a suffix of it with some sides set to 1."""
    rank = len(shape)
    return st.integers(0, rank).flatmap(lambda k: st.tuples(
        *[st.sampled_from([d, 1]) for d in shape[rank - k:]]))
