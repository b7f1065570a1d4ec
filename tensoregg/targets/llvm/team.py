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

from tensoregg.runtime.team import (
    ARGS,
    BARRIER,
    CLOSED,
    COUNT_MASK,
    ENTRY,
    GENERATION,
    JOIN,
    LEFT_SHIFT,
    STOP,
    THREADS,
    Team,
    TeamFunctions,
)
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
        """``void tensoregg_team_worker(ptr state, i64 tid)``: join each new generation's run while it
        is open, until stop."""
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, I64]), "tensoregg_team_worker")
        state, tid = fn.args
        entry, poll, idle, waiting, join, attempt, run, skip, leave = (fn.append_basic_block(x) for x in (
            "entry", "poll", "idle", "waiting", "join", "attempt", "run", "skip", "leave"))
        zero = ir.Constant(I64, 0)
        b = ir.IRBuilder(entry)
        b.branch(poll)
        b.position_at_end(poll)
        seen, spins = b.phi(I64), b.phi(I64)
        seen.add_incoming(zero, entry)
        spins.add_incoming(zero, entry)
        stop = b.icmp_signed("!=", self.load(b, state, STOP), zero)
        generation = self.load(b, state, GENERATION)
        b.cbranch(stop, leave, idle)
        b.position_at_end(idle)
        b.cbranch(b.icmp_signed("!=", generation, seen), join, waiting)
        b.position_at_end(waiting)
        nxt = self.wait(b, spins, poll)
        seen.add_incoming(seen, b.block)
        spins.add_incoming(nxt, b.block)
        b.position_at_end(join)  # while the join word is this generation's and open: one more
        word = self.load(b, state, JOIN)
        ours = b.icmp_unsigned("==", b.lshr(word, ir.Constant(I64, 32)),
                               b.and_(generation, ir.Constant(I64, 0xFFFFFFFF)))
        open_ = b.icmp_unsigned("==", b.and_(word, ir.Constant(I64, CLOSED)), zero)
        b.cbranch(b.and_(ours, open_), attempt, skip)
        b.position_at_end(attempt)
        swapped = b.cmpxchg(self.slot(b, state, JOIN), word, b.add(word, ir.Constant(I64, 1)),
                            "acq_rel", "acquire")
        b.cbranch(b.extract_value(swapped, 1), run, join)
        b.position_at_end(run)
        self.call_entry(b, state, tid)
        b.atomic_rmw("add", self.slot(b, state, JOIN), ir.Constant(I64, 1 << LEFT_SHIFT), "release")
        b.branch(skip)
        b.position_at_end(skip)  # this generation is over for this worker
        seen.add_incoming(generation, skip)
        spins.add_incoming(zero, skip)
        b.branch(poll)
        b.position_at_end(leave)
        b.ret_void()

    def runner(self) -> None:
        """``void tensoregg_team_run(ptr state)``: open a generation's run (its shared words at 0),
        run the entry as thread 0, close the run and wait for the workers that joined it to leave."""
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), "tensoregg_team_run")
        (state,) = fn.args
        entry, reset, start, poll, waiting, done = (fn.append_basic_block(x) for x in (
            "entry", "reset", "start", "poll", "waiting", "done"))
        zero, half = ir.Constant(I64, 0), ir.Constant(I64, 32)
        b = ir.IRBuilder(entry)
        generation = b.add(self.load(b, state, GENERATION), ir.Constant(I64, 1))
        opened = b.shl(generation, half)
        b.atomic_rmw("xchg", self.slot(b, state, JOIN), opened, "release")
        words = self.load(b, state, BARRIER)
        b.cbranch(b.icmp_signed("!=", words, zero), reset, start)
        b.position_at_end(reset)
        for k in range(2):
            b.atomic_rmw("xchg", b.gep(b.inttoptr(words, PTR), [ir.Constant(I64, k)], inbounds=True,
                                       source_etype=I64), zero, "monotonic")
        b.branch(start)
        b.position_at_end(start)
        b.atomic_rmw("add", self.slot(b, state, GENERATION), ir.Constant(I64, 1), "acq_rel")
        self.call_entry(b, state, zero)
        closed = b.atomic_rmw("or", self.slot(b, state, JOIN), ir.Constant(I64, CLOSED), "acq_rel")
        joined = b.and_(closed, ir.Constant(I64, COUNT_MASK))
        b.branch(poll)
        b.position_at_end(poll)
        spins = b.phi(I64)
        spins.add_incoming(zero, start)
        left = b.and_(b.lshr(self.load(b, state, JOIN), ir.Constant(I64, LEFT_SHIFT)),
                      ir.Constant(I64, COUNT_MASK))
        finished = b.icmp_signed(">=", left, joined)
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
