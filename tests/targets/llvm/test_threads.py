"""The native thread team: the caller runs every run, workers join the runs that last, no thread
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

LINGER = 15
"""counts[LINGER]: microseconds thread 0 sleeps in each call of the counting entry."""


@pytest.fixture(scope="module")
def count_entry():
    """An entry point that adds 1 to counts[tid] and nthreads to counts[tid + 8] (counts: its
    first pointer argument); thread 0 then sleeps counts[LINGER] microseconds."""
    module = ir.Module("count")
    fn = ir.Function(module, ENTRY_TYPE, "count")
    counts, _, _, _, tid, n, _ = fn.args
    b = ir.IRBuilder(fn.append_basic_block())
    for slot, value in ((tid, ir.Constant(I64, 1)), (b.add(tid, ir.Constant(I64, 8)), n)):
        at = b.gep(counts, [slot], source_etype=I64)
        b.store(b.add(b.load(at, typ=I64), value), at)
    with b.if_then(b.icmp_signed("==", tid, ir.Constant(I64, 0))):
        linger = b.load(b.gep(counts, [ir.Constant(I64, LINGER)], source_etype=I64), typ=I64)
        b.call(declare(module, "usleep", I32, [I32]), [b.trunc(linger, I32)])
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
    counts[LINGER] = 200_000  # thread 0 lasts 0.2 s: workers spinning or sleeping (0.2 ms) join in time
    team = NativeTeam(3)
    team.run(entry, [counts.ctypes.data, 0, 0, 0], 0)
    time.sleep(0.05)  # the workers have gone from spinning to sleeping between polls
    team.run(entry, [counts.ctypes.data, 0, 0, 0], 0)
    assert list(counts[:3]) == [2, 2, 2]
    team.close()
    with pytest.raises(RuntimeError, match="closed"):
        team.run(entry, [counts.ctypes.data, 0, 0, 0], 0)
    with pytest.raises(ValueError):
        NativeTeam(0)
