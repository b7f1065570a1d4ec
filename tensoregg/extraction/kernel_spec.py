"""A contraction kernel on its own: what one contraction e-node computes (op, attributes, input types,
which inputs are compile-time constants, its GEMM problem), its stable signature, and a one-node
Graph that computes it under a given schedule, which auto-tuning compiles and times
(``tensoregg.tuning``). Two e-nodes of one signature, in one model or in two, compile to the same
kernel, so a measurement of one stands for both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.schedules import GemmProblem, Schedule
from tensoregg.ir.types import TensorType, sample_array


@dataclass(frozen=True, eq=False)
class KernelSpec:
    """One contraction kernel, independent of the model it came from."""

    op: str
    domain: str
    attrs: Mapping[str, Any]
    """Operator attributes, a tensor attribute as its value (an array)."""
    inputs: tuple[TensorType | None, ...]
    """Input types (None for an omitted optional input)."""
    constant: tuple[bool, ...]
    """Per input: whether it is known at compile time (weights: packed once, not per run)."""
    problem: GemmProblem

    @property
    def signature(self) -> str:
        """SHA-256 (hex) of the op, its attributes, input types and constness: equal for kernels
        that compile to the same code, stable across processes, models and versions."""
        facts = json.dumps([self.op, self.domain, sorted((k, _canonical(v)) for k, v in self.attrs.items()),
                            [str(t) if t is not None else "" for t in self.inputs], list(self.constant)],
                           default=repr)
        return hashlib.sha256(facts.encode()).hexdigest()

    def __str__(self) -> str:
        p = self.problem
        return f"{self.op} GEMM {p.batch}x{p.m}x{p.n}x{p.k} {p.dtype}"

    def graph(self, schedule: Schedule | None = None, seed: int = 0) -> Graph:
        """A Graph of this kernel alone, scheduled as ``schedule``: the non-constant inputs are its
        inputs ``x0, x1...``, the constant ones seeded sample initializers ``w0, w1...``."""
        rng = np.random.default_rng(seed)
        inputs: dict[str, TensorType] = {}
        initializers: dict[str, np.ndarray] = {}
        names = []
        for k, (t, const) in enumerate(zip(self.inputs, self.constant, strict=True)):
            if t is None:
                names.append("")
            elif const:
                names.append(f"w{k}")
                initializers[f"w{k}"] = sample_array(t.dtype, t.shape, rng)
            else:
                names.append(f"x{k}")
                inputs[f"x{k}"] = t
        node = Node(self.op, tuple(names), ("y",), dict(self.attrs), "kernel", self.domain, schedule)
        return Graph(inputs, initializers, [node], ["y"], name=f"kernel-{self.signature[:12]}")


def _canonical(value: Any) -> Any:
    """An attribute value as JSON-able data; an array as its dtype, shape and content hash."""
    if isinstance(value, np.ndarray):
        return ["array", value.dtype.str, list(value.shape),
                hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()]
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
