"""A team of threads that run a model's entry point together, handed work in native code.

Handing a run to Python threads costs two ``threading.Barrier`` waits and GIL handoffs, about 0.1 ms:
as much as a whole small model. Here the workers live in native code: each is a Python thread (pinned
to its CPU, see ``tensoregg.runtime.threads``) that calls ``tensoregg_team_worker`` once and stays
in it, with the GIL released, waiting for the next run. A run is one native call by the caller,
``tensoregg_team_run``: it publishes the job, runs thread 0's share and waits until every worker has
run its share. Workers wait by spinning (``pause``) for about ``SPIN`` polls after a run, then by
sleeping ``IDLE_US`` microseconds between polls, so an idle team costs almost no CPU and back-to-back
runs start at once.

The team's state is one array of i64 (``State``): generation, finished workers, stop flag, the
entry's address, its four pointer arguments, the thread count and the barrier the entry uses.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import weakref
from collections.abc import Callable, Sequence

import llvmlite.ir as ir
import numpy as np

from tensoregg.runtime.threads import available_cpus, pin
from tensoregg.targets.llvm.irtypes import I32, I64, PTR, VOID, declare
from tensoregg.targets.llvm.jit import JitModule

GENERATION, DONE, STOP, ENTRY, ARGS, THREADS, BARRIER = 0, 1, 2, 3, 4, 8, 9
STATE_SIZE = 10
SPIN = 200_000
"""Polls (``pause`` each, ~50 ns) a worker spins before it starts sleeping between polls."""
IDLE_US = 200
"""Microseconds a worker sleeps between polls once it has spun ``SPIN`` times."""

ENTRY_TYPE = ir.FunctionType(VOID, [PTR] * 4 + [I64, I64, PTR])
"""The model entry point: inputs, outputs, weights, workspace, tid, nthreads, barrier."""


class _Emitter:
    def __init__(self, module: ir.Module) -> None:
        self.module = module
        self.pause = declare(module, "llvm.x86.sse2.pause", VOID, [])  # x86's spin-wait hint
        self.usleep = declare(module, "usleep", I32, [I32])

    def slot(self, b: ir.IRBuilder, state: ir.Value, k: int) -> ir.Value:
        return b.gep(state, [ir.Constant(I64, k)], inbounds=True, source_etype=I64)

    def load(self, b: ir.IRBuilder, state: ir.Value, k: int) -> ir.Value:
        return b.load_atomic(self.slot(b, state, k), "acquire", 8, typ=I64)

    def call_entry(self, b: ir.IRBuilder, state: ir.Value, tid: ir.Value) -> None:
        fn = b.inttoptr(self.load(b, state, ENTRY), ENTRY_TYPE.as_pointer())  # typed: the callee's signature
        args = [b.inttoptr(self.load(b, state, ARGS + i), PTR) for i in range(4)]
        n, barrier = self.load(b, state, THREADS), b.inttoptr(self.load(b, state, BARRIER), PTR)
        b.call(fn, [*args, tid, n, barrier])

    def wait(self, b: ir.IRBuilder, spins: ir.Value, poll: ir.Block) -> ir.Value:
        """Pause (or sleep, past SPIN polls) and go back to ``poll``; returns the next spin count."""
        b.call(self.pause, [])
        slow = b.icmp_signed(">", spins, ir.Constant(I64, SPIN))
        with b.if_then(slow):
            b.call(self.usleep, [ir.Constant(I32, IDLE_US)])
        nxt = b.add(spins, ir.Constant(I64, 1))
        b.branch(poll)
        return nxt

    def worker(self) -> None:
        """``void tensoregg_team_worker(ptr state, i64 tid)``: run each new generation's job until stop."""
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, I64]), "tensoregg_team_worker")
        state, tid = fn.args
        entry, poll, idle, run, leave = (fn.append_basic_block(x)
                                         for x in ("entry", "poll", "idle", "run", "leave"))
        b = ir.IRBuilder(entry)
        b.branch(poll)
        b.position_at_end(poll)
        seen, spins = b.phi(I64), b.phi(I64)
        seen.add_incoming(ir.Constant(I64, 0), entry)
        spins.add_incoming(ir.Constant(I64, 0), entry)
        stop = b.icmp_signed("!=", self.load(b, state, STOP), ir.Constant(I64, 0))
        generation = self.load(b, state, GENERATION)
        b.cbranch(stop, leave, idle)
        b.position_at_end(idle)
        fresh = b.icmp_signed("!=", generation, seen)
        waiting = fn.append_basic_block("waiting")
        b.cbranch(fresh, run, waiting)
        b.position_at_end(waiting)
        nxt = self.wait(b, spins, poll)
        seen.add_incoming(seen, b.block)
        spins.add_incoming(nxt, b.block)
        b.position_at_end(run)
        self.call_entry(b, state, tid)
        b.atomic_rmw("add", self.slot(b, state, DONE), ir.Constant(I64, 1), "release")
        seen.add_incoming(generation, b.block)
        spins.add_incoming(ir.Constant(I64, 0), b.block)
        b.branch(poll)
        b.position_at_end(leave)
        b.ret_void()

    def runner(self) -> None:
        """``void tensoregg_team_run(ptr state)``: start a generation, run thread 0's share, wait for
        the other ``nthreads - 1``."""
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), "tensoregg_team_run")
        (state,) = fn.args
        entry, poll, waiting, done = (fn.append_basic_block(x) for x in ("entry", "poll", "waiting", "done"))
        b = ir.IRBuilder(entry)
        b.atomic_rmw("xchg", self.slot(b, state, DONE), ir.Constant(I64, 0), "monotonic")
        b.atomic_rmw("add", self.slot(b, state, GENERATION), ir.Constant(I64, 1), "acq_rel")
        self.call_entry(b, state, ir.Constant(I64, 0))
        others = b.sub(self.load(b, state, THREADS), ir.Constant(I64, 1))
        b.branch(poll)
        b.position_at_end(poll)
        spins = b.phi(I64)
        spins.add_incoming(ir.Constant(I64, 0), entry)
        finished = b.icmp_signed(">=", self.load(b, state, DONE), others)
        b.cbranch(finished, done, waiting)
        b.position_at_end(waiting)
        spins.add_incoming(self.wait(b, spins, poll), b.block)
        b.position_at_end(done)
        b.ret_void()


@functools.cache
def _functions() -> tuple[JitModule, Callable[[int, int], None], Callable[[int], None]]:
    """The team's native functions, compiled once per process (they outlive every team)."""
    module = ir.Module("tensoregg_team")
    emitter = _Emitter(module)
    emitter.worker()
    emitter.runner()
    jit = JitModule(module)
    worker = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(jit.address("tensoregg_team_worker"))
    run = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(jit.address("tensoregg_team_run"))
    return jit, worker, run


def _stop(state: np.ndarray) -> None:
    state[STOP] = 1


class NativeTeam:
    """``run(entry, args, barrier)`` runs the entry point on ``size`` threads (ids 0..size-1; the
    caller is thread 0) and returns when all are done. Workers start on the first run and stop when
    the team is resized, closed or garbage-collected; a resize or close waits for a run in progress
    (stopping its workers under it would leave the caller waiting for them forever)."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._fresh(size)

    def _fresh(self, size: int) -> None:
        """New state for ``size`` threads, whose workers start on the next run."""
        if size < 1:
            raise ValueError(f"a team needs at least one thread, got {size}")
        self.size = size
        self._state = np.zeros(STATE_SIZE, np.int64)
        self._started = False
        self._finalizer = weakref.finalize(self, _stop, self._state)

    def resize(self, size: int) -> None:
        """Run on ``size`` threads from the next run on (the current workers stop)."""
        with self._lock:
            if size != self.size and not self._state[STOP]:
                self._finalizer()
                self._fresh(size)

    def _start(self) -> None:
        _, worker, _ = _functions()
        cpus, state = available_cpus(), self._state

        def work(tid: int) -> None:  # holds ``state``: it outlives the team while the worker runs
            pin(cpus, tid)
            worker(state.ctypes.data, tid)
        for tid in range(1, self.size):
            threading.Thread(target=work, args=(tid,), daemon=True, name=f"tensoregg-worker-{tid}").start()
        self._started = True

    def run(self, entry: int, args: Sequence[int], barrier: int) -> None:
        """Run the native function at ``entry`` (the model entry signature) with the four pointer
        ``args`` on every thread."""
        with self._lock:
            if self._state[STOP]:
                raise RuntimeError("the thread team is closed")
            if not self._started and self.size > 1:
                self._start()
            state = self._state
            state[ENTRY], state[ARGS:ARGS + 4] = entry, args
            state[THREADS], state[BARRIER] = self.size, barrier
            mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") and self.size > 1 else None
            try:
                if mask is not None:
                    pin(available_cpus(), 0)
                _functions()[2](state.ctypes.data)
            finally:
                if mask is not None:
                    os.sched_setaffinity(0, mask)

    def close(self) -> None:
        """Stop the workers (the team cannot run again)."""
        with self._lock:
            self._finalizer()
