"""The native thread team: every thread runs its share, runs repeat, no thread outlives its team."""

import gc
import threading
import time

import llvmlite.ir as ir
import numpy as np
import pytest

from tensoregg.targets.llvm.codegen import I64
from tensoregg.targets.llvm.jit import JitModule
from tensoregg.targets.llvm.team import ENTRY_TYPE, NativeTeam


@pytest.fixture(scope="module")
def count_entry():
    """An entry point that adds 1 to counts[tid] and nthreads to counts[tid + 8] (counts: its
    first pointer argument)."""
    module = ir.Module("count")
    fn = ir.Function(module, ENTRY_TYPE, "count")
    counts, _, _, _, tid, n, _ = fn.args
    b = ir.IRBuilder(fn.append_basic_block())
    for slot, value in ((tid, ir.Constant(I64, 1)), (b.add(tid, ir.Constant(I64, 8)), n)):
        at = b.gep(counts, [slot], source_etype=I64)
        b.store(b.add(b.load(at, typ=I64), value), at)
    b.ret_void()
    jit = JitModule(module)
    yield jit, jit.address("count")


def test_every_thread_runs_each_run_and_teams_do_not_leak_threads(count_entry):
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
    assert list(counts[:3]) == [100, 100, 100] and list(counts[8:11]) == [300, 300, 300]
    assert threading.active_count() == before


def test_a_closed_team_refuses_to_run_and_an_idle_one_wakes_up(count_entry):
    _, entry = count_entry
    counts = np.zeros(16, np.int64)
    team = NativeTeam(2)
    team.run(entry, [counts.ctypes.data, 0, 0, 0], 0)
    time.sleep(0.05)  # the worker has gone from spinning to sleeping between polls
    team.run(entry, [counts.ctypes.data, 0, 0, 0], 0)
    assert list(counts[:2]) == [2, 2]
    team.close()
    with pytest.raises(RuntimeError, match="closed"):
        team.run(entry, [counts.ctypes.data, 0, 0, 0], 0)
    with pytest.raises(ValueError):
        NativeTeam(0)
