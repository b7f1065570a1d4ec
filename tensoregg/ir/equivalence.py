"""Comparing two programs on seeded random inputs with the reference interpreter: what translation
validation (``compile(..., validate=True)``) runs on the extracted program, and the dtype-aware
tolerances the test helpers (``tensoregg.testing``) compare with too."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from tensoregg.ir.graph import Graph
from tensoregg.ir.interpreter import run_graph
from tensoregg.ir.types import TensorType

log = logging.getLogger(__name__)

FLOAT_TOL = {np.dtype(np.float16): (1e-2, 1e-3), np.dtype(np.float32): (1e-5, 1e-6),
             np.dtype(np.float64): (1e-10, 1e-12)}


def tolerance(dtype: np.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing results of ``dtype``: exact for integers and bools, two units in
    the last place for the low-precision floats of ml_dtypes (bfloat16, float8...)."""
    dtype = np.dtype(dtype)
    if dtype in FLOAT_TOL:
        return FLOAT_TOL[dtype]
    if dtype.kind == "V" and dtype.name.startswith(("bfloat", "float")):
        import ml_dtypes

        return 2 * float(ml_dtypes.finfo(dtype).eps), 0.0
    return (1e-5, 1e-6) if dtype.kind == "f" else (0.0, 0.0)


@dataclass(frozen=True)
class Difference:
    """Where two programs' outputs differ most: output ``output`` at ``index`` on draw ``draw``."""

    output: str
    index: tuple[int, ...]
    got: object
    want: object
    error: float
    """|got - want| (inf where one is NaN or infinite and the other is not the same)."""
    allowed: float
    """The error the dtype's tolerance allows there."""
    draw: int

    def __str__(self) -> str:
        return (f"output {self.output!r} differs by {self.error:.6g} (allowed {self.allowed:.3g}) at index "
                f"{self.index}: {self.got!r} instead of {self.want!r} (random inputs, draw {self.draw})")


def random_feeds(types: dict[str, TensorType], rng: np.random.Generator,
                 extremes: bool = False) -> dict[str, np.ndarray]:
    """Inputs of ``types``: floats standard normal (negatives and values near 0 included), integers
    small (0..4 unsigned, -4..4 signed, so that index inputs stay mostly in range), bools fair coins.
    ``extremes``: integers drawn from their type's minimum and maximum, -1, 0 and 1 (where wrap-around
    tells rules apart)."""
    feeds = {}
    for name, t in types.items():
        kind = t.dtype.kind
        value: np.ndarray
        if kind == "b":
            value = rng.random(t.shape) < 0.5
        elif kind in "iu" and extremes:
            info = np.iinfo(t.dtype)
            value = rng.choice(np.array([info.min, info.max, 0, 1, info.max - 1], t.dtype)
                               if kind == "u" else np.array([info.min, info.max, -1, 0, 1], t.dtype), t.shape)
        elif kind in "iu":
            value = rng.integers(0 if kind == "u" else -4, 5, t.shape).astype(t.dtype)
        else:
            value = rng.standard_normal(t.shape).astype(t.dtype)
        feeds[name] = np.asarray(value)
    return feeds


def worst(got: np.ndarray, want: np.ndarray) -> tuple[tuple[int, ...], object, object, float, float] | None:
    """(index, got there, wanted there, error, allowed) of the element of ``got`` farthest outside
    ``want``'s tolerance (floats: ``atol + rtol * max |want|``, NaN only against NaN, infinities only
    against themselves; others: exact), or None if all are within it. Different shapes: the shapes."""
    rtol, atol = tolerance(want.dtype)
    if np.shape(got) != np.shape(want):
        return (), f"shape {np.shape(got)}", f"shape {np.shape(want)}", float("inf"), 0.0
    if np.size(want) == 0:
        return None
    g, w = np.asarray(got).astype(np.float64), np.asarray(want).astype(np.float64)
    with np.errstate(invalid="ignore"):
        error = np.abs(g - w)
    same = (g == w) | (np.isnan(g) & np.isnan(w))
    error = np.where(same, 0.0, np.where(np.isfinite(error), error, np.inf))
    finite = np.isfinite(w)
    allowed = atol + rtol * (float(np.abs(w[finite]).max()) if finite.any() else 0.0)
    at = np.unravel_index(int(np.argmax(error)), error.shape)
    if error[at] <= allowed:
        return None
    return tuple(int(k) for k in at), g[at].item(), w[at].item(), float(error[at]), allowed


def compare(original: Graph, candidate: Graph, *, seed: int = 0, draws: int = 3) -> Difference | None:
    """Run both graphs on ``draws`` seeded random inputs of ``original``'s input types (the last draw
    with extreme integers); the first output out of tolerance (its worst element), or None. A draw
    that ``original`` itself rejects (an index out of range...) proves nothing and is skipped; one
    that only ``candidate`` rejects is a difference."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for draw in range(draws):
        feeds = random_feeds(dict(original.inputs), rng, extremes=draw == draws - 1 and draws > 1)
        try:
            wanted = run_graph(original, feeds)
        except Exception:  # whatever the reference raises: the inputs are invalid, not the program
            rejected += 1
            continue
        try:
            results = run_graph(candidate, feeds)
        except Exception as exc:  # the original ran on them: any failure is a difference
            return Difference(original.outputs[0], (), f"{type(exc).__name__}: {exc}", "a value",
                              float("inf"), 0.0, draw)
        for name, got, want in zip(original.outputs, results, wanted):
            found = worst(got, want)
            if found is not None:
                return Difference(name, *found, draw=draw)
    if rejected == draws:
        log.warning("%s rejected all %d random inputs: nothing compared", original.name, draws)
    return None
