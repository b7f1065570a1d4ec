"""The CPUs a team of threads may use, and pinning a thread to one.

Native code releases the GIL (ctypes calls do), so plain Python threads run it in parallel (the team
itself is ``tensoregg.targets.llvm.team``). Each worker is pinned to one CPU of this process's
affinity set: unpinned, the scheduler tends to wake a worker on its waker's core (see
../shared/notes/llvmlite.md). The caller is not: pinned to the first CPU for each run, as it was, it
was moved into that CPU's queue behind whatever else ran there, and on a busy machine most runs
waited a time slice for it (mlp at 2 threads beside other processes, load ~10 on 2 cores: 3.0 ms
pinned, 0.84 ms not; 0.87 ms on 1 thread).
"""

from __future__ import annotations

import os

from tensoregg.errors import ParameterError

THREADS_PER_CPU = 4
"""The most threads a model may use per CPU available (more only thrash)."""


def available_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def pin(cpus: list[int], tid: int) -> None:
    """Pin the calling thread to the ``tid``-th of ``cpus`` (round robin)."""
    if len(cpus) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpus[tid % len(cpus)]})


def thread_count(n: object) -> int:
    """``n`` checked as a number of threads: an int from 1 to ``THREADS_PER_CPU`` times the CPUs
    available; ParameterError otherwise."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ParameterError(f"num_threads must be an int, got {type(n).__name__} {n!r}")
    most = THREADS_PER_CPU * len(available_cpus())
    if not 1 <= n <= most:
        raise ParameterError(f"num_threads must be a positive int of at most {most} "
                             f"({THREADS_PER_CPU} per CPU available), got {n}")
    return n
