"""A compiled model's signature (its inputs' and outputs' names, dtypes and shapes) and how a run's
outputs are gathered from what the program wrote."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """A named input or output: its element dtype and static shape."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def collect_outputs(names: Sequence[str], produced: Mapping[str, np.ndarray],
                    constants: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The outputs ``names`` in order, for a program that computed ``produced``: the others (graph
    inputs and constants, looked up in ``constants``) as copies, a value named twice copied the
    second time."""
    result, seen = [], set()
    for name in names:
        if name in produced:
            result.append(produced[name].copy() if name in seen else produced[name])
        else:
            result.append(np.array(constants[name], copy=True))
        seen.add(name)
    return result


def specs(graph: Any, names: Iterable[str]) -> list[TensorSpec]:
    """The specs of the values ``names`` of ``graph`` (an ``ir.Graph``: read through its ``types``)."""
    return [TensorSpec(n, np.dtype(graph.types[n].dtype), tuple(graph.types[n].shape)) for n in names]
