"""GEMM schedules: the tensorize rule enumerates exactly the candidates that pass the premises, the
space stays small, and the cost model picks sensibly and moves the obvious ways."""

import dataclasses
import json
import time

import pytest
from egglog import EGraph
from hypothesis import given, settings
from hypothesis import strategies as st

from tensoregg.extraction.kernel_cost import gemm_cost, untiled_cost
from tensoregg.ir.intrinsics import MicroKernel
from tensoregg.ir.schedules import GemmProblem, GemmSchedule, Untiled
from tensoregg.rules.saturation import Phase, run_phase
from tensoregg.targets import REF, Target
from tensoregg.targets.llvm import gemm_schedules as gemm_schedules_module
from tensoregg.targets.llvm.gemm_schedules import (
    TENSORIZE,
    _kernel_key,
    candidates,
    choose_gemm_schedule,
    derive_schedules,
    enumerate_schedules,
    gemm_schedules,
    premises_hold,
    problem_facts,
    target_facts,
)

AVX2 = Target("avx2-like", peak_flops=2 * 102.7e9, mem_bandwidth=30e9, kernel_overhead_s=2e-6,
              vector_bits=256, cores=2, vector_registers=16,
              caches=(("L1", 32 << 10), ("L2", 512 << 10), ("L3", 32 << 20)),
              microkernels=(MicroKernel("gemm_f32_6x16", 6, 16), MicroKernel("gemm_f32_4x24", 4, 24),
                            MicroKernel("gemm_f32_1x16", 1, 16)))
AVX512 = Target("avx512-like", peak_flops=8 * 192e9, mem_bandwidth=100e9, kernel_overhead_s=2e-6,
                vector_bits=512, cores=8, vector_registers=32,
                caches=(("L1", 48 << 10), ("L2", 2 << 20), ("L3", 32 << 20)),
                microkernels=(MicroKernel("gemm_f32_12x32", 12, 32), MicroKernel("gemm_f32_8x48", 8, 48),
                              MicroKernel("gemm_f32_1x16", 1, 16)))
TARGETS = (AVX2, AVX512)
MAX_SCHEDULES = 5000

problems = st.builds(GemmProblem, batch=st.integers(1, 4), m=st.integers(1, 3000), n=st.integers(1, 3000),
                     k=st.integers(1, 3000), pack_a=st.booleans(), pack_b=st.booleans())


def tiled(schedules):
    return [s for s in schedules if isinstance(s, GemmSchedule)]


@settings(max_examples=20)
@given(problems, st.sampled_from(TARGETS))
def test_rule_enumerates_exactly_the_candidates_that_pass_the_premises(problem, target):
    rows = derive_schedules([problem], target, problem.dtype)[_kernel_key(problem)]  # the rule, no cache
    by_name = {u.name: u for u in target.microkernels}
    assert {GemmSchedule(by_name[r[0]], *r[1:]) for r in rows} == set(tiled(gemm_schedules(problem, target)))
    schedules = gemm_schedules(problem, target)
    assert Untiled() in schedules
    assert len(schedules) <= MAX_SCHEDULES
    assert all(premises_hold(problem, s, target) for s in schedules)
    expected = {s for s in candidates(problem, target).combinations() if premises_hold(problem, s, target)}
    assert set(tiled(schedules)) == expected
    assert len(tiled(schedules)) == len(expected)


@pytest.mark.parametrize(("schedule", "why"), [
    (GemmSchedule(MicroKernel("t", 8, 32), 96, 256, 128), "8 x 4 accumulators + 4 + 1 > 16 registers"),
    (GemmSchedule(MicroKernel("t", 4, 20), 96, 240, 128), "nr is not whole vectors"),
    (GemmSchedule(MicroKernel("t", 6, 16), 96, 256, 512), "(6 + 16) x 512 x 4 bytes > L1"),
    (GemmSchedule(MicroKernel("t", 6, 16), 1032, 256, 256), "mc x kc x 4 > L2 / 2, and mc > M"),
    (GemmSchedule(MicroKernel("t", 6, 16), 96, 1024, 320), "the packed B block > 1 MiB"),
    (GemmSchedule(MicroKernel("t", 6, 16), 96, 256, 256, split_m=200), "tasks without rows"),
])
def test_premises_reject(schedule, why):
    problem = GemmProblem(1, 1024, 1024, 1024)
    assert not premises_hold(problem, schedule, AVX2), why
    assert premises_hold(problem, GemmSchedule(MicroKernel("t", 6, 16), 96, 256, 256), AVX2)


def test_a_model_s_problems_enumerate_together_as_they_do_alone():
    """One e-graph for several problems (as a model's extraction asks): each gets exactly its own
    schedules, problems differing only in which factor is constant included."""
    problems = [GemmProblem(1, 256, 256, 256), GemmProblem(1, 256, 256, 256, pack_b=False),
                GemmProblem(4, 64, 784, 576), GemmProblem(1, 1, 1000, 2048), GemmProblem(1, 96, 96, 96)]
    together = derive_schedules(problems, AVX512, "float32")
    by_name = {u.name: u for u in AVX512.microkernels}
    expected = [{s for s in candidates(p, AVX512).combinations() if premises_hold(p, s, AVX512)}
                for p in problems]
    got = [{GemmSchedule(by_name[r[0]], *r[1:]) for r in together[_kernel_key(p)]} for p in problems]
    assert got == expected


def test_derived_schedules_are_kept_on_disk_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(gemm_schedules_module, "_ENUMERATED", {})
    gemm_schedules_module._disk_cache.cache_clear()
    problem = GemmProblem(1, 200, 300, 400)
    first = enumerate_schedules([problem], AVX2)[0]
    (path,) = (tmp_path / "tensoregg").glob("schedules-*.json")
    monkeypatch.setattr(gemm_schedules_module, "_ENUMERATED", {})
    gemm_schedules_module._disk_cache.cache_clear()
    monkeypatch.setattr(gemm_schedules_module, "derive_schedules", None)  # must not be needed again
    assert enumerate_schedules([problem], AVX2)[0] == first and len(first) > 1
    rows = json.loads(path.read_text())
    key, good = next(iter(rows.items()))
    name = good[0][0]
    for corrupt in ("{not json", [name, 16, 32, 1 << 20, 1, 1], [name, 16, 32, 64, 1 << 10, 1 << 10],
                    [name, True, 32, 64, 1, 1], [name, 16.0, 32, 64, 1, 1],
                    ["no-such-kernel", 16, 32, 64, 1, 1]):
        path.write_text(corrupt if isinstance(corrupt, str) else json.dumps({key: [*good, corrupt]}))
        gemm_schedules_module._disk_cache.cache_clear()  # a corrupt or implausible cache is ignored
        assert gemm_schedules_module._disk_cache(AVX2, "float32") == {}, corrupt
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps(rows))
    path.unlink()
    path.symlink_to(planted)  # a symlink is not followed
    gemm_schedules_module._disk_cache.cache_clear()
    assert gemm_schedules_module._disk_cache(AVX2, "float32") == {}
    gemm_schedules_module._save(AVX2, "float32", rows)
    assert not path.is_symlink() and json.loads(path.read_text()) == rows
    gemm_schedules_module._disk_cache.cache_clear()


def test_rule_saturates_in_one_iteration():
    egraph = EGraph()
    egraph.register(*target_facts(AVX2, "float32"), *problem_facts(GemmProblem(1, 256, 256, 256), AVX2))
    report = run_phase(egraph, Phase("schedules", TENSORIZE, max_iterations=5))
    assert report.stopped_by == "saturated" and report.iterations == 2  # the second finds nothing new


def test_no_microkernels_leaves_untiled_only():
    assert gemm_schedules(GemmProblem(1, 512, 512, 512), REF) == [Untiled()]
    assert gemm_schedules(GemmProblem(1, 512, 512, 512, dtype="float64"), AVX2) == [Untiled()]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_choice_follows_the_size(target):
    assert isinstance(choose_gemm_schedule(GemmProblem(1, 1024, 1024, 1024), target), GemmSchedule)
    assert choose_gemm_schedule(GemmProblem(1, 2, 2, 2), target) == Untiled()


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_a_gemv_over_constant_weights_from_memory_streams_packed_panels(target):
    """A classifier layer (one row times 150 MB of weights) is memory-bound: the row form walks B
    in column strips at half the streaming bandwidth, so the tiled panels win."""
    gemv = GemmProblem(1, 1, 4096, 9216, pack_a=True, pack_b=False)
    assert isinstance(choose_gemm_schedule(gemv, target), GemmSchedule)


def test_choice_is_memoized_and_fast():
    problem = GemmProblem(1, 1021, 1019, 1013)
    start = time.perf_counter()
    first = choose_gemm_schedule(problem, AVX512)
    assert time.perf_counter() - start < 1.0  # about 0.05 s; generous for a loaded machine
    hits = choose_gemm_schedule.cache_info().hits
    assert choose_gemm_schedule(problem, AVX512) is first
    assert choose_gemm_schedule.cache_info().hits == hits + 1


def best_cost(problem, target):
    return min(gemm_cost(problem, tiled(gemm_schedules(problem, target)), target).min(),
               untiled_cost(problem, target))


@settings(max_examples=20)
@given(problems, st.sampled_from(TARGETS), st.sampled_from(("m", "n", "k")), st.integers(1, 500))
def test_more_work_takes_longer(problem, target, axis, extra):
    """Growing M, N or K never helps (the largest task may stay the same); doubling K or the batch
    always costs more."""
    schedules = tiled(gemm_schedules(problem, target))[:200]

    def costs(p):
        fits = [s for s in schedules if premises_hold(p, s, target)]
        return untiled_cost(p, target), gemm_cost(p, fits, target), gemm_cost(problem, fits, target)

    untiled, grown, base = costs(dataclasses.replace(problem, **{axis: getattr(problem, axis) + extra}))
    assert untiled >= untiled_cost(problem, target) and (grown >= base).all()
    untiled, grown, base = costs(dataclasses.replace(problem, k=2 * problem.k))
    assert untiled > untiled_cost(problem, target) and (grown > base).all()
    more = dataclasses.replace(problem, batch=2 * problem.batch)
    assert best_cost(more, target) > best_cost(problem, target)


def test_two_cores_beat_one():
    problem = GemmProblem(1, 1024, 1024, 1024)
    one = dataclasses.replace(AVX2, cores=1, peak_flops=AVX2.core_flops)
    assert best_cost(problem, AVX2) < 0.7 * best_cost(problem, one)
