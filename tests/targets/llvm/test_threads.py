"""The thread team: every thread runs the job, errors reach the caller, no thread outlives its team."""

import gc
import threading
import time

import numpy as np
import pytest

from tensoregg.runtime.threads import ThreadTeam


def test_every_thread_runs_the_job_and_teams_do_not_leak_threads():
    before = threading.active_count()
    seen = np.zeros(3)
    for k in range(30):
        team = ThreadTeam(3)
        team.run(lambda tid: seen.__setitem__(tid, seen[tid] + 1))
        if k % 2:
            team.close()
        del team
    gc.collect()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.01)
    assert list(seen) == [30, 30, 30] and threading.active_count() == before


def test_an_error_in_a_worker_reaches_the_caller_and_the_team_still_runs():
    team = ThreadTeam(2)

    def job(tid):
        if tid == 1:
            raise ValueError("worker failed")
    with pytest.raises(ValueError, match="worker failed"):
        team.run(job)
    done = []
    team.run(done.append)
    assert sorted(done) == [0, 1]
