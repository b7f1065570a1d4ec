"""The native thread team: the caller runs every run, workers join a run while it lasts, no thread
outlives its team."""

import gc
import threading
import time

import llvmlite.ir as ir
import numpy as np
import pytest

from tensoregg.targets.llvm.codegen import I64
from tensoregg.targets.llvm.irtypes import I32, declare
from tensoregg.targets.llvm.jit import JitModule
from tensoregg.targets.llvm.team import ENTRY_TYPE, NativeTeam

WANT, PATIENCE_MS = 14, 10_000
"""Thread 0 of the counting entry waits (up to PATIENCE_MS, in 1 ms sleeps) until counts[1] + counts[2]
reaches counts[WANT]."""


@pytest.fixture(scope="module")
def count_entry():
    """An entry point that adds 1 to counts[tid] and nthreads to counts[tid + 8] (counts: its
    first pointer argument); thread 0 then waits for workers to reach counts[WANT] (see WANT)."""
    module = ir.Module("count")
    fn = ir.Function(module, ENTRY_TYPE, "count")
    counts, _, _, _, tid, n, _ = fn.args
    b = ir.IRBuilder(fn.append_basic_block())
    for slot, value in ((tid, ir.Constant(I64, 1)), (b.add(tid, ir.Constant(I64, 8)), n)):
        at = b.gep(counts, [slot], source_etype=I64)
        b.store(b.add(b.load(at, typ=I64), value), at)

    def count(k: int) -> ir.Value:
        return b.load(b.gep(counts, [ir.Constant(I64, k)], source_etype=I64), typ=I64)

    with b.if_then(b.icmp_signed("==", tid, ir.Constant(I64, 0))):
        pre = b.block
        poll, nap, out = (fn.append_basic_block(x) for x in ("poll", "nap", "out"))
        b.branch(poll)
        b.position_at_end(poll)
        waited = b.phi(I64)
        waited.add_incoming(ir.Constant(I64, 0), pre)
        enough = b.icmp_signed(">=", b.add(count(1), count(2)), count(WANT))
        b.cbranch(b.or_(enough, b.icmp_signed(">=", waited, ir.Constant(I64, PATIENCE_MS))), out, nap)
        b.position_at_end(nap)
        b.call(declare(module, "usleep", I32, [I32]), [ir.Constant(I32, 1000)])
        waited.add_incoming(b.add(waited, ir.Constant(I64, 1)), nap)
        b.branch(poll)
        b.position_at_end(out)
    b.ret_void()
    jit = JitModule(module)
    yield jit, jit.address("count")


def test_the_caller_runs_every_run_and_teams_do_not_leak_threads(count_entry):
    _, entry = count_entry
    before = threading.active_count()
    counts = np.zeros(16, np.int64)
    for k in range(20):
        team = NativeTeam(3)
        for _ in range(5):
            team.run(entry, [counts.ctypes.data, 0, 0, 0], 0)
        if k % 2:
            team.close()
        del team
    gc.collect()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.01)
    assert counts[0] == 100 and all(counts[t] <= 100 for t in (1, 2))  # workers join the runs they see
    assert list(counts[8:11]) == [3 * c for c in counts[:3]]  # everyone is told the team's size
    assert threading.active_count() == before


def test_workers_join_a_run_that_lasts_and_a_closed_team_refuses_to_run(count_entry):
    _, entry = count_entry
    counts = np.zeros(16, np.int64)
    team = NativeTeam(3)
    for want in (2, 4):  # thread 0 waits until both workers have joined each run (or 10 s)
        counts[WANT] = want
        team.run(entry, [counts.ctypes.data, 0, 0, 0], 0)
        time.sleep(0.05)  # the workers go from spinning to sleeping between polls
    assert list(counts[:3]) == [2, 2, 2]
    team.close()
    with pytest.raises(RuntimeError, match="closed"):
        team.run(entry, [counts.ctypes.data, 0, 0, 0], 0)
    with pytest.raises(ValueError):
        NativeTeam(0)
