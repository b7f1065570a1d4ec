"""Measuring on a Ray cluster (``tensoregg tune --cluster ADDRESS``, ``tune(cluster=...)``;
``pip install 'tensoregg[cluster]'``).

One measuring worker (a Ray actor) is pinned to each live machine of the cluster that offers CPUs,
holding all of them (nothing else the cluster schedules runs beside it), and measures one candidate at
a time, so that a candidate's threads have the machine to themselves. A candidate (the kernel's
description and schedule: the worker compiles it, as a local worker does) goes to a free worker, under
the same time limit; a worker that dies (a crashing candidate) or runs past the limit (it is killed)
costs that one measurement, and a fresh worker takes its machine's place.

Records name the machine they were measured on by its fingerprint (``records.fingerprint``), and
``compile`` uses those of its own machine: a cluster measures for the machine that tunes, so every
worker checks on start that its machine has that fingerprint (the CPU model, LLVM's CPU name and
features, with the tuning target's threads), and a worker that differs stops the run with a
``ClusterError`` naming it, before it measures anything. To tune for another kind of machine, run
``tensoregg tune`` on one of them (with ``--cluster`` for a cluster of that kind) and move the
records with ``tensoregg records export``/``import``.

The workers import tensoregg: it must be installed on every machine (a cluster started from this
process's environment has it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from tensoregg.errors import ClusterError
from tensoregg.ir.target import Target
from tensoregg.targets import Registration, registration
from tensoregg.tuning.measure import STARTUP_S
from tensoregg.tuning.records import fingerprint


class _Measurer:
    """What a Ray actor runs on one machine: ``check`` its fingerprint, then ``run`` jobs."""

    def check(self, registered: str, target: Target, expected: str) -> str | None:
        """None where this machine's fingerprint for ``target`` is ``expected``, else why not."""
        mine = registration(registered).describe()
        got = fingerprint(dataclasses.replace(target, cpu=mine.cpu, features=mine.features))
        if got == expected:
            return None
        return (f"machine fingerprint {got} (cpu {mine.cpu}) is not the tuning machine's {expected} "
                f"(cpu {target.cpu})")

    def run(self, fn: Any, arg: Any) -> tuple[str, Any]:
        """("ok", ``fn(arg)``), or ("error", why) where it raised."""
        try:
            return "ok", fn(arg)
        except Exception as e:  # reported to the driver: one candidate's failure
            return "error", f"{type(e).__name__}: {e}"


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ClusterError("measuring on a cluster needs Ray: pip install 'tensoregg[cluster]'") from e
    return ray


class RayCluster:
    """The ``Backend`` of a Ray cluster at ``address`` (see the module docstring): one slot per
    machine. Connects on creation (unless this process already is) and starts and checks the
    workers; ``close`` ends them, and the connection where it made it."""

    def __init__(self, address: str, entry: Registration, target: Target) -> None:
        self._ray = ray = _ray()
        self._entry, self._target, self._expected = entry, target, fingerprint(target)
        self._owns = not ray.is_initialized()
        if self._owns:
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {e}") from e
        self._actor_class = ray.remote(max_restarts=0, max_concurrency=1)(_Measurer)
        machines = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        self._actors: dict[str, Any] = {}
        self._names = {n["NodeID"]: f"{n['NodeManagerAddress']}:{n['NodeManagerPort']}" for n in machines}
        self._cpus = {n["NodeID"]: n["Resources"]["CPU"] for n in machines}
        try:
            if not machines:
                raise ClusterError(f"the Ray cluster at {address!r} has no live machine with CPUs")
            for node in self._names:
                self._start(node)
        except BaseException:
            self.close()
            raise
        self.slots = len(self._actors)
        self.used: dict[str, int] = {}

    def _start(self, node: str) -> None:
        """A checked worker on ``node`` (ClusterError where it does not start or differs)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = self._actor_class.options(
            num_cpus=self._cpus[node],
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        self._actors[node] = actor
        ref = actor.check.remote(self._entry.name, self._target, self._expected)
        ready, _ = self._ray.wait([ref], timeout=STARTUP_S)
        try:
            why = self._ray.get(ready[0]) if ready else f"did not start in {STARTUP_S:.0f} s"
        except self._ray.exceptions.RayError as e:
            why = f"did not start: {type(e).__name__}: {e}"
        if why is not None:
            raise ClusterError(f"cluster worker on {self._names[node]}: {why}")

    def _replace(self, node: str) -> None:
        self._ray.kill(self._actors.pop(node), no_restart=True)
        self._start(node)

    def run_many(self, fn: Any, args: Sequence[Any], timeout: float) -> list[tuple[str, Any]]:
        """``fn(arg)`` for each of ``args``, each on a free worker under ``timeout`` seconds: ("ok",
        value), or ("error", why): it raised, its worker died, or it ran past ``timeout``."""
        ray = self._ray
        out: list[tuple[str, Any]] = [("error", "not run")] * len(args)
        queue, free = list(range(len(args))), list(self._actors)
        running: dict[Any, tuple[int, str, float]] = {}
        while queue or running:
            while queue and free:
                i, node = queue.pop(0), free.pop(0)
                running[self._actors[node].run.remote(fn, args[i])] = (i, node, time.monotonic() + timeout)
            wait = max(0.0, min(end for _, _, end in running.values()) - time.monotonic())
            ray.wait(list(running), num_returns=1, timeout=wait)
            done, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
            for ref in done:
                i, node, _ = running.pop(ref)
                try:
                    out[i] = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker died
                    out[i] = ("error", f"worker on {self._names[node]} died: {type(e).__name__}")
                    self._replace(node)
                self._free(node, free)
            for ref, (i, node, end) in list(running.items()):
                if time.monotonic() > end and not ray.wait([ref], timeout=0)[0]:  # (done: next round)
                    del running[ref]
                    out[i] = ("error", f"timed out after {timeout:.0f} s")
                    self._replace(node)
                    self._free(node, free)
        return out

    def _free(self, node: str, free: list[str]) -> None:
        """``node``'s worker has ended a job."""
        free.append(node)
        self.used[self._names[node]] = self.used.get(self._names[node], 0) + 1

    def close(self) -> None:
        """End the workers (and the connection this object made)."""
        for actor in self._actors.values():
            self._ray.kill(actor, no_restart=True)
        self._actors = {}
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
