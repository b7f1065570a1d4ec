"""Witness builders: hypothesis strategies of small Graphs on which a rule applies.

Used through each rule's ``example``; hypothesis is imported lazily (it is a test dependency).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.types import TensorType


def chain(steps: Sequence[tuple[str, dict[str, Any]]], *, min_rank: int = 1, max_rank: int = 4,
          rank: int | None = None) -> Any:
    """Strategy of (Graph, feeds): a float32 input through the single-input ops of ``steps``."""
    from hypothesis import strategies as st

    from tensoregg.testing import arrays, shapes

    rank_st = st.just(rank) if rank is not None else st.integers(min_rank, max_rank)

    def build(shape: tuple[int, ...], x: np.ndarray) -> tuple[Graph, dict[str, np.ndarray]]:
        nodes, value = [], "x"
        for k, (op, attrs) in enumerate(steps):
            out = "y" if k == len(steps) - 1 else f"v{k}"
            nodes.append(Node(op, (value,), (out,), attrs))
            value = out
        return Graph({"x": TensorType(np.dtype(np.float32), shape)}, {}, nodes, ["y"]), {"x": x}

    return rank_st.flatmap(lambda r: shapes(r, r)).flatmap(
        lambda shape: arrays(np.float32, shape).map(lambda x: build(shape, x)))


def permutations(rank: int) -> Any:
    """Strategy of permutations of ``range(rank)`` as tuples."""
    from hypothesis import strategies as st

    return st.permutations(list(range(rank))).map(tuple)
