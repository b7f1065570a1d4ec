"""Compiling for a symbolic batch dimension: one compile per bucket size, run as chunks.

A model whose inputs keep a symbolic first dimension (an ONNX ``dim_param`` not fixed by
``input_shapes``, or a name in ``input_shapes``: ``{"x": ("N", 3, 224, 224)}``) is compiled for the
bucket sizes that cover its declared range (``dim_ranges={"N": (1, 16)}``: 1, 2, 4, 8, 16; without a
range: any batch, from the bucket of 1). Before anything is compiled, the model imported at
``ANALYSIS_BATCH`` is proved to compute each row apart (``ir.batching.batch_axes``) and every bucket's
import is checked to be that model but for its batch size (``ir.batching.same_rows``), so a batch of
any size, run as chunks of buckets (``runtime.batched.BatchedModule``), gives what the model gives.
Only the first dimension may stay symbolic, one name shared by the inputs that have it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tensoregg.errors import ParameterError, ShapeError
from tensoregg.frontends.onnx import checked_input_shapes
from tensoregg.ir import Graph
from tensoregg.ir.batching import batch_axes, same_rows
from tensoregg.runtime import Module
from tensoregg.runtime.batched import BatchedModule

log = logging.getLogger(__name__)

ANALYSIS_BATCH = 2
"""The batch the model is imported at to prove its rows apart (2: the smallest where a batch axis
cannot pass for a broadcast one)."""

Dims = dict[str, list[Any]]
"""Each input's dims: an int, or the name of a symbolic dim."""


def symbolic_dims(declared: Mapping[str, Sequence[int | str]],
                  input_shapes: Mapping[str, Sequence[Any]] | None) -> tuple[str, Dims] | None:
    """The symbolic batch name and every input's dims, or None when every dim is fixed; ShapeError
    for a symbolic dim past the first or two names for the batch. ``input_shapes`` is checked as
    ``import_onnx`` checks it, but that a dim may be a name (a non-empty str)."""
    checked_input_shapes(input_shapes if not isinstance(input_shapes, Mapping) else
                         {k: [1 if isinstance(d, str) and d else d for d in v]
                          if isinstance(v, Sequence) and not isinstance(v, (str, bytes)) else v
                          for k, v in input_shapes.items()})
    dims: Dims = {name: list(d) for name, d in declared.items()}
    dims.update({name: list(shape) for name, shape in (input_shapes or {}).items()})
    names = set()
    for name, shape in dims.items():
        for k, d in enumerate(shape):
            if isinstance(d, str):
                if k != 0:
                    raise ShapeError(f"graph input {name!r} dim {k} is symbolic ({d!r}); only the first "
                                     f"(batch) dimension may stay symbolic: pass input_shapes={{{name!r}: "
                                     f"[...]}}")
                if d == "?":
                    raise ShapeError(f"graph input {name!r} dim 0 is unknown (no dim_param, no dim_value): "
                                     f"name it in input_shapes, e.g. {{{name!r}: ('N', ...)}}, or fix it")
                names.add(d)
    if not names:
        return None
    if len(names) > 1:
        raise ShapeError(f"the inputs' first dims have several symbolic names {sorted(names)}; one batch "
                         f"dimension may stay symbolic: fix the others with input_shapes")
    return names.pop(), dims


def checked_range(symbol: str, dim_ranges: Mapping[str, Sequence[int]] | None) -> tuple[int, int | None]:
    """The declared (low, high) of ``symbol`` (default: 1 and no bound); ParameterError if malformed."""
    if dim_ranges is None:
        return 1, None
    if not isinstance(dim_ranges, Mapping) or set(dim_ranges) - {symbol}:
        raise ParameterError(f"dim_ranges must map the symbolic batch dimension {symbol!r} to (low, high), "
                             f"got {dim_ranges!r}")
    if symbol not in dim_ranges:
        return 1, None
    bounds = dim_ranges[symbol]
    if (isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
            or not 1 <= bounds[0] <= bounds[1]):
        raise ParameterError(f"dim_ranges[{symbol!r}] must be (low, high) with 1 <= low <= high, "
                             f"got {bounds!r}")
    return int(bounds[0]), int(bounds[1])


def bucket_sizes(low: int, high: int | None) -> list[int]:
    """The batch sizes compiled for the range: 1 and the powers of two up to ``high`` (every batch
    is a sum of them); just 1 without a bound."""
    sizes, b = [1], 2
    while high is not None and b <= high:
        sizes.append(b)
        b *= 2
    return sizes


def compile_batched(symbol: str, bounds: tuple[int, int | None], batched: set[str] | None,
                    import_at: Callable[[int], Graph], compile_at: Callable[[int, Graph], Module]) -> Module:
    """The model compiled for batches of ``symbol`` in ``bounds`` (``checked_range``): a plain Module
    for a range of one size, else a BatchedModule. ``import_at(b)`` imports the model at batch ``b``,
    ``compile_at(b, graph)`` compiles that import (with the caller's options); ``batched`` names the
    inputs whose first dim is the batch (None: every input)."""
    low, high = bounds

    def imported(b: int) -> Graph:
        try:
            return import_at(b)
        except ShapeError as e:
            raise ShapeError(f"the model does not take batch {symbol}={b} ({e}), so its batch dimension "
                             f"cannot stay symbolic: fix it with input_shapes") from e

    if low == high:
        return compile_at(low, imported(low))
    reference = imported(ANALYSIS_BATCH)
    batched = set(reference.inputs) if batched is None else batched
    axes = batch_axes(reference, dict.fromkeys(batched, 0))
    sizes = bucket_sizes(low, high)
    log.info("batch %s in %s..%s: compiling buckets %s", symbol, low, high if high is not None else "", sizes)
    buckets, costs = {}, {}
    for b in sizes:
        graph = reference if b == ANALYSIS_BATCH else imported(b)
        same_rows(reference, ANALYSIS_BATCH, graph, b, axes)
        buckets[b] = compile_at(b, graph)
        report = buckets[b].report
        costs[b] = report.cost_after if report is not None and report.cost_after > 0 else float(b)
    outputs = {name for name in reference.outputs if axes[name] == 0}
    return BatchedModule(symbol, low, high, buckets, batched | outputs, costs)


def batch_shapes(symbol: str, dims: Dims, b: int) -> dict[str, list[int]]:
    """Every input's dims with the batch ``symbol`` at ``b``."""
    return {name: [b if d == symbol else d for d in shape] for name, shape in dims.items()}
