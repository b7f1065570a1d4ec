"""Per-kernel time of an ``llvm`` model (``tensoregg profile``), from its artifact's kernel table.

The library exports every kernel as a function of its own (``void kN(ptr params..., i64 tid, i64
nthreads, ptr barrier)``) beside the entry point, and the manifest lists, per kernel in run order,
where each param lives (``tensoregg.targets.llvm.export.kernel_table``). Profiling calls those
functions one by one, on one thread, on buffers of the model's own memory plan, timing each call:
the normal entry point is untouched (no timers in it), and a kernel's time includes one ctypes call
(about 1 us). Kernels that multi-thread a normal run run here on one thread: their share of the
total is what a one-thread run spends in them.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensoregg.errors import ArtifactError
from tensoregg.runtime.artifact import Artifact
from tensoregg.runtime.memory import aligned_empty
from tensoregg.runtime.native import NativeExecutor


@dataclass(frozen=True)
class KernelTime:
    """One kernel's median time over the profiled runs, with what the manifest says of it."""

    kernel: str
    node: str
    ops: list[str]
    shape: list[int]
    seconds: float
    flops: float
    schedule: str


def profile_kernels(artifact: Artifact, executor: NativeExecutor, feeds: Mapping[str, np.ndarray],
                    repeat: int = 10) -> list[KernelTime]:
    """The time of each kernel that runs (median of ``repeat`` runs after one warm-up), for the
    ``llvm`` model ``executor`` whose artifact is ``artifact``, on ``feeds``."""
    code = artifact.manifest["code"]
    kernels = [k for k in code.get("kernels", []) if k.get("runs")]
    if any("params" not in k for k in kernels):
        raise ArtifactError("manifest .code.kernels: no params (an artifact saved before profiling existed: "
                            "save it again)")
    inputs = [np.ascontiguousarray(feeds[t.name]) for t in executor.inputs]
    specs = {t.name: t for t in executor.outputs}
    outputs = {k: np.empty(specs[name].shape, specs[name].dtype) for name, k in executor.slots.items()}
    work = aligned_empty(executor.work_size)
    bases = {"weights": int(executor.weights.ctypes.data), "work": int(work.ctypes.data)}

    def address(kind: str, at: int) -> int:
        if kind == "input":
            return int(inputs[at].ctypes.data)
        if kind == "output":
            return int(outputs[at].ctypes.data)
        if kind not in bases:
            raise ArtifactError(f"manifest .code.kernels: unknown place kind {kind!r}")
        return bases[kind] + at

    barrier = np.zeros(2, np.int64)
    calls = []
    for k in kernels:
        args = [address(kind, at) for kind, at in k["params"]]
        signature = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(args), ctypes.c_int64, ctypes.c_int64,
                                     ctypes.c_void_p)
        calls.append((signature(function_address(executor.owner, k["function"])), args))
    times: list[list[float]] = [[] for _ in calls]
    for run in range(repeat + 1):
        for k, (fn, args) in enumerate(calls):
            start = time.perf_counter()
            fn(*args, 0, 1, int(barrier.ctypes.data))
            if run:
                times[k].append(time.perf_counter() - start)
    return [KernelTime(k["function"], k["node"], list(k.get("ops", [])), list(k.get("shape", [])),
                       statistics.median(t), float(k.get("flops", 0.0)), str(k.get("schedule", "")))
            for k, t in zip(kernels, times)]


def function_address(owner: Any, name: str) -> int:
    """The address of function ``name`` in the code ``owner`` holds: a loaded library (ctypes) or a
    JIT module (``address(name)``)."""
    if isinstance(owner, ctypes.CDLL):
        try:
            return int(ctypes.cast(getattr(owner, name), ctypes.c_void_p).value or 0)
        except AttributeError as exc:
            raise ArtifactError(f"the model library has no kernel {name!r}") from exc
    return int(owner.address(name))
