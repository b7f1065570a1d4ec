"""A team of threads that run one native function together (thread ids 0..n-1).

Native code releases the GIL (ctypes calls do), so plain Python threads run it in parallel. Thread 0
is the caller; the others are workers started on the first parallel run, each pinned to one CPU of
this process's affinity set (unpinned, the scheduler tends to wake a worker on its waker's core; see
../shared/notes/llvmlite.md), and the caller is pinned to the first CPU while the team runs. The
workers stop when the team is closed or garbage-collected (they hold no reference to it).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable


def available_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _pin(cpus: list[int], tid: int) -> None:
    if len(cpus) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpus[tid % len(cpus)]})


class _Crew:
    """What the workers share with the team: the job, two barriers, the errors."""

    def __init__(self, size: int) -> None:
        self.size, self.cpus = size, available_cpus()
        self.job: Callable[[int], None] | None = None
        self.errors: list[BaseException] = []
        self.start, self.end = threading.Barrier(size), threading.Barrier(size)
        self.lock = threading.Lock()
        self.started = False

    def work(self, tid: int) -> None:
        _pin(self.cpus, tid)
        while True:
            try:
                self.start.wait()
            except threading.BrokenBarrierError:  # closed
                return
            job = self.job
            try:
                if job is not None:
                    job(tid)
            except BaseException as exc:  # re-raised in the caller
                self.errors.append(exc)
            try:
                self.end.wait()
            except threading.BrokenBarrierError:
                return

    def run(self, fn: Callable[[int], None]) -> None:
        with self.lock:
            if not self.started:
                for tid in range(1, self.size):
                    threading.Thread(target=self.work, args=(tid,), daemon=True,
                                     name=f"tensoregg-worker-{tid}").start()
                self.started = True
            self.job, self.errors = fn, []
            mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
            try:
                _pin(self.cpus, 0)
                self.start.wait()
                try:
                    fn(0)
                finally:
                    self.end.wait()
            finally:
                if mask is not None:
                    os.sched_setaffinity(0, mask)
                self.job = None
            if self.errors:
                raise self.errors[0]

    def close(self) -> None:
        self.start.abort()
        self.end.abort()


class ThreadTeam:
    """``run(fn)`` calls ``fn(tid)`` on ``size`` threads at once and returns when all are done."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._crew = _Crew(size)
        self._finalizer = weakref.finalize(self, self._crew.close)

    def run(self, fn: Callable[[int], None]) -> None:
        if self.size == 1:
            fn(0)
        else:
            self._crew.run(fn)

    def close(self) -> None:
        """Stop the workers (the team cannot run again)."""
        self._finalizer()
