"""Measuring candidates in a worker process: a candidate that crashes the compiler or the kernel, or
hangs, costs one measurement (the worker is killed and a fresh one starts for the next), never the
tuning run.

A candidate is a kernel (``KernelSpec``) under one schedule: its one-node Graph is compiled by the
target's registered code generator, run on seeded inputs with ``target.cores`` threads (2 warm-up
calls, then calls for about ``seconds``, at least ``MIN_REPEATS``), and its time is the median call.
Each result is compared with the result of the kernel under its ``baseline`` schedule (the untuned
choice, measured first), which a worker that has not run it yet (a fresh worker after a crash, another
machine of a cluster) computes first: a schedule that computes something else is an error, not a time.

Where candidates are measured is a ``Backend``: ``Worker`` (one local worker process, one candidate at
a time) or ``tensoregg.tuning.cluster.RayCluster`` (one worker per machine of a Ray cluster).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np

from tensoregg.benchmark import RTOL, max_rel_err, time_calls, time_pair
from tensoregg.extraction.kernel_spec import KernelSpec
from tensoregg.ir.graph import Graph
from tensoregg.ir.schedules import Schedule
from tensoregg.ir.target import Target
from tensoregg.ir.types import sample_array

MIN_REPEATS = 5
"""Timed calls of a candidate at least, however slow."""


@dataclass(frozen=True)
class Candidate:
    """A kernel under one schedule, compiled for ``target`` by the registration ``registered``."""

    registered: str
    target: Target
    spec: KernelSpec
    schedule: Schedule
    seconds: float = 0.2
    """Timed calls for about this long."""
    baseline: Schedule | None = None
    """The schedule whose result this one's must match (None: this one's result is the reference)."""


@dataclass(frozen=True)
class Result:
    """A candidate's median seconds per call over ``repeats`` calls, or why it has none."""

    seconds: float | None
    repeats: int = 0
    error: str | None = None


_references: dict[str, list[np.ndarray]] = {}
"""In a worker: the baseline result of each kernel signature, which the others must match."""


def _compiled(c: Candidate, schedule: Schedule) -> tuple[Any, dict[str, np.ndarray]]:
    """The kernel compiled under ``schedule`` and its seeded inputs."""
    from tensoregg.runtime import Module
    from tensoregg.targets import registration

    entry = registration(c.registered)
    graph = c.spec.graph(schedule)
    module = Module(graph, entry.name, entry.build(graph, c.target))
    module.num_threads = max(1, c.target.cores)
    rng = np.random.default_rng(1)
    feeds = {name: sample_array(graph.inputs[name].dtype, graph.inputs[name].shape, rng)
             for name in module.input_names}
    return module, feeds


def measure(candidate: Candidate) -> Result:
    """Compile, check and time ``candidate`` in this process (what a worker runs)."""
    c = candidate
    if c.baseline is not None and c.baseline != c.schedule and c.spec.signature not in _references:
        module, feeds = _compiled(c, c.baseline)
        _references[c.spec.signature] = module.run(**feeds)
    module, feeds = _compiled(c, c.schedule)
    got = module.run(**feeds)
    want = _references.setdefault(c.spec.signature, got)
    err = max_rel_err(got, want)
    if not err <= RTOL:
        return Result(None, error=f"wrong result: max relative error {err:.1e} against the first candidate")
    estimate = min(time_calls(lambda: module.run(**feeds), 2))
    repeats = max(MIN_REPEATS, int(c.seconds / max(estimate, 1e-7)))
    times = time_calls(lambda: module.run(**feeds), repeats)
    return Result(statistics.median(times), repeats)


@dataclass(frozen=True)
class ModelCheck:
    """A model to time whole, compiled for ``target`` without and with the tuning records at
    ``records``: what tuning changed for it, end to end."""

    target: Target
    graph: Graph
    records: str
    seconds: float = 1.0
    """Timed calls for about this long, each side."""


def time_model(check: ModelCheck) -> tuple[float, float]:
    """Median seconds per call of ``check``'s model untuned and tuned, on ``target.cores`` threads,
    timed in alternating blocks (``tensoregg.benchmark.time_pair``) on the same seeded inputs."""
    from tensoregg.optimize import optimize
    from tensoregg.runtime import Module
    from tensoregg.targets import registration
    from tensoregg.tuning.records import Records, measured_pricing

    c = check
    entry = registration(c.target.name)
    with Records(c.records, create=False) as records:
        reprice = measured_pricing(records.measured(c.target))

    def compiled(reprice: Any) -> Module:  # as compile does, with or without the records
        graph, _ = optimize(c.graph, c.target, schedules=entry.schedules, reprice=reprice)
        return Module(graph, entry.name, entry.build(graph, c.target))

    untuned, tuned = compiled(None), compiled(reprice)
    rng = np.random.default_rng(1)
    feeds = {name: sample_array(t.dtype, t.shape, rng) for name, t in c.graph.inputs.items()}
    for module in (untuned, tuned):
        module.num_threads = max(1, c.target.cores)
    a, b = time_pair(lambda: untuned.run(**feeds), lambda: tuned.run(**feeds), None, c.seconds,
                     settle=0.1 if c.target.cores > 1 else 0.0)
    return statistics.median(a), statistics.median(b)


class Backend(Protocol):
    """Where candidates are measured: ``slots`` at a time, each job under its own time limit."""

    slots: int
    used: dict[str, int]
    """Jobs run per worker (a name for people)."""

    def run_many(self, fn: Any, args: Sequence[Any], timeout: float) -> list[tuple[str, Any]]:
        """``fn(arg)`` for each of ``args`` on the workers, as ``Worker.run`` answers, in order."""
        ...

    def close(self) -> None:
        ...


STARTUP_S = 120.0
"""How long a worker may take to start (import tensoregg) before it counts as failed."""


def _serve(conn: Connection) -> None:
    """A worker's loop: says it is ready, then (function, argument) in, ("ok", value) or ("error",
    text) out; None ends it."""
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        fn, arg = job
        try:
            conn.send(("ok", fn(arg)))
        except Exception as e:  # reported to the parent: one candidate's failure
            conn.send(("error", f"{type(e).__name__}: {e}"))


class Worker:
    """A process that runs jobs one at a time, each under a time limit; started on first use and
    again after a job killed it. The local ``Backend``: one slot."""

    slots = 1

    def __init__(self) -> None:
        self.used: dict[str, int] = {}
        self._ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited threads or JIT state
        self._proc: Any = None
        self._conn: Connection | None = None

    def _start(self) -> tuple[str, Any]:
        """Start a worker unless one runs; ("ok", None), or ("error", why) where it did not start."""
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            return "ok", None
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_serve, args=(child,), daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        status, why = self._receive(STARTUP_S)
        return ("ok", None) if status == "ok" else ("error", f"worker did not start: {why}")

    def _receive(self, timeout: float) -> tuple[str, Any]:
        """The worker's next message as ("ok", it), or ("error", why) after killing it: it died or
        sent nothing for ``timeout`` seconds."""
        assert self._conn is not None and self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() <= deadline:
            if self._conn.poll(0.05):
                try:
                    return "ok", self._conn.recv()
                except (EOFError, OSError):
                    break
            if not self._proc.is_alive():
                break
        else:
            self._reset()
            return "error", f"timed out after {timeout:.0f} s"
        self._proc.join(5.0)
        code = self._proc.exitcode
        self._reset()
        return "error", f"worker died (exit code {code})"

    def run(self, fn: Any, arg: Any, timeout: float) -> tuple[str, Any]:
        """``fn(arg)`` in the worker: ("ok", its value), or ("error", why): it raised, the worker
        died, or it ran past ``timeout`` seconds (the worker's start not counted) and was killed."""
        started = self._start()
        if started[0] != "ok":
            return started
        assert self._conn is not None
        self._conn.send((fn, arg))
        status, reply = self._receive(timeout)
        return reply if status == "ok" else (status, reply)

    def run_many(self, fn: Any, args: Sequence[Any], timeout: float) -> list[tuple[str, Any]]:
        """``run`` of each of ``args`` in turn."""
        self.used["local"] = self.used.get("local", 0) + len(args)
        return [self.run(fn, arg, timeout) for arg in args]

    def _reset(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        """End the worker."""
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(5.0)
            except OSError:
                pass
        self._reset()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
