"""A team of threads that run one native function together (thread ids 0..n-1).

Native code releases the GIL (ctypes calls do), so plain Python threads run it in parallel. Thread 0
is the caller; the others are persistent workers, each pinned to one CPU of this process's affinity
set (unpinned, the scheduler tends to wake a worker on its waker's core; see
../shared/notes/llvmlite.md), and the caller is pinned to the first CPU while the team runs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable


def available_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


class ThreadTeam:
    """``run(fn)`` calls ``fn(tid)`` on ``size`` threads at once and returns when all are done."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cpus = available_cpus()
        self._job: Callable[[int], None] | None = None
        self._errors: list[BaseException] = []
        self._start = threading.Barrier(size)
        self._end = threading.Barrier(size)
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._work, args=(tid,), daemon=True,
                                          name=f"tensoregg-worker-{tid}") for tid in range(1, size)]
        for w in self._workers:
            w.start()

    def _pin(self, tid: int) -> None:
        if len(self.cpus) > 1 and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {self.cpus[tid % len(self.cpus)]})

    def _work(self, tid: int) -> None:
        self._pin(tid)
        while True:
            self._start.wait()
            job = self._job
            if job is None:  # closed
                return
            try:
                job(tid)
            except BaseException as exc:
                self._errors.append(exc)
            self._end.wait()

    def run(self, fn: Callable[[int], None]) -> None:
        if self.size == 1:
            fn(0)
            return
        with self._lock:
            self._job, self._errors = fn, []
            mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
            try:
                self._pin(0)
                self._start.wait()
                try:
                    fn(0)
                finally:
                    self._end.wait()
            finally:
                if mask is not None:
                    os.sched_setaffinity(0, mask)
                self._job = None
            if self._errors:
                raise self._errors[0]

    def close(self) -> None:
        """Stop the workers (the team cannot run again)."""
        if self.size > 1 and any(w.is_alive() for w in self._workers):
            with self._lock:
                self._job = None
                self._start.wait()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown
            self.close()
