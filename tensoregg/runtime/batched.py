"""``BatchedModule``: a model compiled for a symbolic batch dimension, run as chunks.

The model is compiled once per bucket size (``tensoregg.batching`` chooses them and proves that the
model computes each batch row apart, by a function of that row alone); a batch of ``n`` rows runs as
the chunks of bucket sizes whose estimated cost is least, the last chunk padded with copies of its
last row when a larger bucket is cheaper than smaller ones (the padded rows' outputs are dropped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from tensoregg.errors import ArtifactError, InputError
from tensoregg.runtime.artifact import (
    Artifact,
    TargetCode,
    build_artifact,
    nested_artifact,
    require,
    require_fields,
)
from tensoregg.runtime.device_arrays import DeviceView
from tensoregg.runtime.module import Module, bind, from_artifact
from tensoregg.runtime.signature import TensorSpec

BATCHED = "batched"
"""The key of a saved BatchedModule's object in its manifest's ``code``."""


class BatchedModule(Module):
    """A Module whose inputs' first dimension, the symbolic ``symbol``, takes any size from ``low``
    to ``high`` (None: no bound). ``buckets`` maps each compiled batch size to its Module;
    ``batched`` names the inputs and outputs that carry the batch on axis 0 (the others are the same
    for every row); ``costs`` is each bucket's estimated seconds per run (the cost model's)."""

    def __init__(self, symbol: str, low: int, high: int | None, buckets: Mapping[int, Module],
                 batched: set[str], costs: Mapping[int, float]) -> None:
        if 1 not in buckets:
            raise ValueError("a BatchedModule needs the bucket of batch 1")
        self.symbol, self.low, self.high = symbol, low, high
        self.buckets = dict(sorted(buckets.items()))
        self.batched = set(batched)
        self.costs = dict(costs)
        largest = self.buckets[max(self.buckets)]
        super().__init__(largest.graph, largest.target, largest.program, artifact=largest._artifact)
        self.inputs, self.outputs = largest.inputs, largest.outputs
        self.report = largest.report
        self._plan = lru_cache(maxsize=256)(self._chunks)

    @property
    def num_threads(self) -> int:
        return self.buckets[1].num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        for module in self.buckets.values():
            module.num_threads = n

    @property
    def input_shapes(self) -> list[tuple[Any, ...]]:  # type: ignore[override]
        """Each input's shape, the symbol standing for the batch dimension."""
        return [(self.symbol, *t.shape[1:]) if t.name in self.batched else t.shape for t in self.inputs]

    def run(self, *args: Any, **named: Any) -> list[np.ndarray]:
        feeds = self._feeds(args, named)
        plan = self._plan(self._batch(feeds))
        if len(plan) == 1 and plan[0][1] == plan[0][2]:  # one bucket of exactly this batch
            return list(self.buckets[plan[0][1]].program.run(feeds))
        parts = []
        for start, size, rows in plan:  # outputs copied: the next run may reuse their memory
            chunk = {k: _rows(v, start, rows, size) if k in self.batched else v for k, v in feeds.items()}
            parts.append([np.array(r[:rows] if spec.name in self.batched else r)
                          for r, spec in zip(self.buckets[size].program.run(chunk), self.outputs)])
        return [np.concatenate(p) if spec.name in self.batched else p[0]
                for spec, p in zip(self.outputs, zip(*parts))]

    def bind_inputs(self, args: Sequence[Any], named: dict[str, Any]) -> dict[str, np.ndarray | DeviceView]:
        return dict(self._feeds(args, named))

    def _feeds(self, args: Sequence[Any], named: dict[str, Any]) -> dict[str, np.ndarray]:
        """The inputs checked like ``Module.bind_inputs``, the batch dimension excepted; numpy
        arrays only (chunks are sliced and padded on the host)."""
        given = _by_name(self.input_names, args, named)
        free = [TensorSpec(t.name, t.dtype, (_size(v, t), *t.shape[1:])) if t.name in self.batched else t
                for t, v in zip(self.inputs, given)]
        feeds = {}
        for name, value in bind(free, args, named).items():
            if not isinstance(value, np.ndarray):
                raise InputError(f"input {name!r}: an array in GPU memory; a model compiled for a symbolic "
                                 f"batch takes numpy arrays")
            feeds[name] = value
        return feeds

    def _batch(self, feeds: Mapping[str, np.ndarray]) -> int:
        sizes = {k: v.shape[0] for k, v in feeds.items() if k in self.batched}
        n = next(iter(sizes.values()))
        if len(set(sizes.values())) != 1:
            raise InputError(f"the inputs' batch dimension {self.symbol!r} differs: {sizes}")
        if n < self.low or (self.high is not None and n > self.high):
            bound = f"{self.low}..{self.high}" if self.high is not None else f">= {self.low}"
            raise InputError(f"batch {self.symbol}={n} is outside the range the model was compiled for "
                             f"({bound})")
        return n

    def _chunks(self, n: int) -> tuple[tuple[int, int, int], ...]:
        """(start, bucket, rows) per chunk: the least estimated cost over sums of buckets covering
        ``n`` rows, the last chunk padded where a larger bucket costs less; at equal cost, fewer
        chunks, then fewer padded rows. A bucket is taken to cost at least as much as any smaller one
        (estimates of small programs need not grow with the batch; a run does)."""
        costs, most = {}, 0.0
        for size, cost in sorted(self.costs.items()):
            costs[size] = most = max(most, cost)
        best: list[tuple[float, int, int]] = [(0.0, 0, 0)] + [(float("inf"), 0, 0)] * n
        pick = [0] * (n + 1)
        for k in range(1, n + 1):
            for size, cost in costs.items():
                before = best[max(0, k - size)]
                total = (before[0] + cost, before[1] + 1, before[2] + max(0, size - k))
                if total < best[k]:
                    best[k], pick[k] = total, size
        chunks, start, left = [], 0, n
        while left > 0:
            size = pick[left]
            rows = min(size, left)
            chunks.append((start, size, rows))
            start, left = start + rows, left - rows
        return tuple(chunks)

    def chunks(self, n: int) -> list[tuple[int, int]]:
        """How a batch of ``n`` runs: (bucket size, rows) per chunk."""
        return [(size, rows) for _, size, rows in self._plan(n)]

    def artifact(self) -> Artifact:
        """One artifact holding every bucket's, each under ``bucket-<size>/``; the manifest's
        ``code`` holds the batch (``BATCHED``) and the buckets' manifests."""
        saved = {b: module.artifact() for b, module in self.buckets.items()}
        parts = {f"bucket-{b}/{name}": bytes(data)
                 for b, a in saved.items() for name, data in a.parts.items()}
        code = {BATCHED: {"symbol": self.symbol, "low": self.low, "high": self.high,
                          "batched": sorted(self.batched),
                          "costs": {str(b): c for b, c in self.costs.items()},
                          "buckets": {str(b): a.manifest for b, a in saved.items()}}}
        largest = saved[max(saved)]
        return build_artifact(self.target, largest.inputs, largest.outputs, largest.graph_text,
                              TargetCode(code, parts))

    def _specs(self, specs: list[TensorSpec]) -> list[str]:
        """``name: dtype[dims]`` per spec, the symbol standing for a batched one's first dim."""
        shapes = [(self.symbol, *t.shape[1:]) if t.name in self.batched else t.shape for t in specs]
        return [f"{t.name}: {t.dtype.name}[{','.join(map(str, shape))}]" for t, shape in zip(specs, shapes)]

    def _range(self) -> str:
        high = self.high if self.high is not None else ""
        return f"{self.symbol} in {self.low}..{high}, buckets {list(self.buckets)}"

    def __repr__(self) -> str:
        return (f"<tensoregg.BatchedModule target={self.target} ({', '.join(self._specs(self.inputs))}) -> "
                f"({', '.join(self._specs(self.outputs))}) {self._range()}>")

    def __str__(self) -> str:
        lines = [f"tensoregg.BatchedModule for target {self.target}, {self._range()}"]
        lines += [f"  input  {spec}" for spec in self._specs(self.inputs)]
        lines += [f"  output {spec}" for spec in self._specs(self.outputs)]
        return "\n".join([*lines, self.graph_text])


def from_batched_artifact(artifact: Artifact) -> BatchedModule:
    """The BatchedModule saved in ``artifact`` (checked by ``read_artifact``): each bucket's artifact
    checked in turn (``nested_artifact``) and loaded by its target's loader."""
    spec = require(artifact.manifest["code"][BATCHED], dict, ".code.batched")
    where = "manifest .code.batched"
    require_fields(spec, {"symbol": str, "low": int, "batched": list, "costs": dict, "buckets": dict}, where)
    high = spec.get("high")
    if (high is not None and not isinstance(high, int)) or not set(spec["buckets"]) == set(spec["costs"]):
        raise ArtifactError(f"{where}: malformed range or buckets")
    buckets, costs = {}, {}
    for key, manifest in spec["buckets"].items():
        if not key.isdigit() or not isinstance(spec["costs"][key], (int, float)):
            raise ArtifactError(f"{where}.buckets: {key!r} is not a batch size with a cost")
        buckets[int(key)] = from_artifact(nested_artifact(artifact, manifest, f"bucket-{key}/",
                                                          f".code.batched.buckets[{key!r}]"))
        costs[int(key)] = float(spec["costs"][key])
    if 1 not in buckets or not all(isinstance(n, str) for n in spec["batched"]):
        raise ArtifactError(f"{where}: no bucket of batch 1, or batched names that are not strings")
    return BatchedModule(spec["symbol"], spec["low"], high, buckets, set(spec["batched"]), costs)


def _by_name(names: list[str], args: Sequence[Any], named: Mapping[str, Any]) -> list[Any]:
    given = dict(zip(names, args)) | dict(named)
    return [given.get(n) for n in names]


def _size(value: Any, spec: TensorSpec) -> int:
    """The batch size ``value`` gives for ``spec`` (the model's own for a value that is no array:
    ``Module.bind_inputs`` then names what is wrong)."""
    shape = getattr(value, "shape", None)
    return int(shape[0]) if shape else spec.shape[0]


def _rows(value: np.ndarray, start: int, rows: int, size: int) -> np.ndarray:
    """Rows ``start`` to ``start + rows`` of ``value``, padded to ``size`` with copies of the last."""
    part = value[start:start + rows]
    if rows == size:
        return np.ascontiguousarray(part)
    return np.concatenate([part, np.repeat(part[-1:], size - rows, axis=0)])
