"""The native functions of the thread team (``tensoregg.runtime.team``), generated as LLVM IR.

Workers wait by spinning (``pause``) for about ``SPIN`` polls after a run, then by sleeping
``IDLE_US`` microseconds between polls, so an idle team costs almost no CPU and back-to-back runs
start at once. ``emit_team`` adds both functions to a module: JIT-compiled once per process for
compiled models (``NativeTeam``), and linked into a saved artifact's shared library.
"""

from __future__ import annotations

import ctypes
import functools

import llvmlite.ir as ir

from tensoregg.runtime.team import ARGS, BARRIER, DONE, ENTRY, GENERATION, STOP, THREADS, Team, TeamFunctions
from tensoregg.targets.llvm.irtypes import I32, I64, PTR, VOID, declare
from tensoregg.targets.llvm.jit import JitModule

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


def emit_team(module: ir.Module) -> None:
    """Add ``tensoregg_team_worker`` and ``tensoregg_team_run`` (``TeamFunctions``) to ``module``."""
    emitter = _Emitter(module)
    emitter.worker()
    emitter.runner()


@functools.cache
def jit_functions() -> TeamFunctions:
    """The team's native functions, JIT-compiled once per process (they outlive every team)."""
    module = ir.Module("tensoregg_team")
    emit_team(module)
    jit = JitModule(module)
    worker = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(jit.address("tensoregg_team_worker"))
    run = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(jit.address("tensoregg_team_run"))
    return TeamFunctions(worker, run, jit)


def NativeTeam(size: int) -> Team:  # noqa: N802  (a team, built like a class)
    """A team of ``size`` threads on the JIT-compiled team functions."""
    return Team(size, jit_functions())
