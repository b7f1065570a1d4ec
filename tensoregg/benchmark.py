"""Timing a model's runs, alone or against onnxruntime on the same inputs and thread count (``tensoregg
bench``, ``bench/models.py``). onnxruntime is imported only by ``ort_session``, never by the runtime.

Against onnxruntime the two sides alternate in blocks of about ``BLOCK_S`` of calls, so that both share
the machine's noise; onnxruntime's idle intra-op workers spin for tens of milliseconds after a call, so
with several threads each block of ours starts after a ``settle`` pause (bench/models.py says more).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tensoregg.errors import TensoreggError

BLOCK_S = 0.1
RTOL = 1e-3


def time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    """Seconds of each of ``n`` calls of ``fn``."""
    clock, out = time.perf_counter, []
    for _ in range(n):
        start = clock()
        fn()
        out.append(clock() - start)
    return out


def runs_for(per_call: float, runs: int | None, seconds: float) -> int:
    """``runs``, or enough calls of ``per_call`` seconds for about ``seconds`` (5 to 20000)."""
    return runs if runs is not None else min(max(5, math.ceil(seconds / max(per_call, 1e-6))), 20000)


def time_alone(ours: Callable[[], Any], runs: int | None, seconds: float) -> list[float]:
    """Per-call seconds of ``ours()`` after 2 warm-up calls: ``runs`` calls, or about ``seconds``."""
    warm = time_calls(ours, 2)
    return time_calls(ours, runs_for(warm[-1], runs, seconds))


def time_pair(ours: Callable[[], Any], theirs: Callable[[], Any], runs: int | None, seconds: float,
              settle: float) -> tuple[list[float], list[float]]:
    """Per-call seconds of ``ours()`` and ``theirs()``, ``runs`` calls each or enough for about
    ``seconds`` of each side: 2 warm-up calls each, then rounds of a ``settle`` pause (not timed), a
    block of ``ours`` calls and a block of as many ``theirs`` calls (about BLOCK_S each)."""
    warm = [time_calls(ours, 2), time_calls(theirs, 2)]
    per_call = (warm[0][-1] + warm[1][-1]) / 2
    runs = runs_for(per_call, runs, seconds)
    size = max(1, min(runs, round(BLOCK_S / max(per_call, 1e-6))))
    times: list[list[float]] = [[], []]
    while len(times[0]) < runs:
        time.sleep(settle)
        n = min(size, runs - len(times[0]))
        times[0] += time_calls(ours, n)
        times[1] += time_calls(theirs, n)
    return times[0], times[1]


def quartiles(seconds: list[float]) -> list[float]:
    """The quartiles of ``seconds``, in milliseconds."""
    if len(seconds) < 2:
        return [seconds[0] * 1e3] * 3
    return [q * 1e3 for q in statistics.quantiles(seconds, n=4)]


def summary(seconds: list[float]) -> dict[str, Any]:
    """Median and quartiles (ms) of per-call ``seconds``."""
    return {"runs": len(seconds), "median_ms": statistics.median(seconds) * 1e3,
            "quartiles_ms": quartiles(seconds)}


def max_rel_err(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """max |g - w| / (|w| + 1e-3 max|w|) over all outputs: below RTOL means allclose(g, w, RTOL, atol)
    with atol = RTOL * 1e-3 * max|w| (scaled to the output's size). inf on a shape mismatch."""
    err = 0.0
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            return math.inf
        if w.size:
            w64, g64 = w.astype(np.float64), g.astype(np.float64)
            floor = 1e-3 * float(np.max(np.abs(w64))) or 1e-30
            err = max(err, float(np.max(np.abs(g64 - w64) / (np.abs(w64) + floor))))
    return err


def ort_session(model: bytes | str, threads: int) -> Any:
    """An onnxruntime CPU session of ``model`` with ``threads`` intra-op threads, one inter-op thread
    and its default optimizations; TensoreggError if onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise TensoreggError("--vs onnxruntime needs onnxruntime: pip install onnxruntime") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
