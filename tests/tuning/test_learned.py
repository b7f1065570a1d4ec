"""The learned cost model (tensoregg.tuning.learned) and how tuning orders candidates with it."""

import numpy as np
import pytest

from tensoregg.ir.schedules import GemmProblem, Untiled
from tensoregg.targets import get_target
from tensoregg.targets.llvm.gemm_schedules import priced_schedules
from tensoregg.tuning.learned import FEATURES, LearnedCostModel, Sample, features, spearman
from tensoregg.tuning.search import TOP, candidates

TARGET = get_target("llvm")
PROBLEMS = [GemmProblem(1, m, n, k, pack_a=a) for m, n, k, a in
            [(64, 512, 784, True), (64, 96, 128, True), (256, 196, 512, False), (96, 1024, 27, False),
             (512, 49, 512, False), (128, 768, 256, True), (64, 3136, 64, False), (32, 384, 96, True)]]


def test_features_name_every_value():
    for problem in PROBLEMS[:2]:
        for schedule, _ in priced_schedules([problem], TARGET)[0][:5]:
            assert len(features(problem, schedule, TARGET)) == len(FEATURES)
        assert len(features(problem, Untiled(), TARGET)) == len(FEATURES)


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [5, 5, 9]) == pytest.approx(1.0)  # ties share their rank


def test_the_learned_model_ranks_held_out_kernels_as_the_times_it_learned():
    pytest.importorskip("lightgbm")
    rng = np.random.default_rng(0)
    data = []
    for p in PROBLEMS:  # "measured" = a hidden law the model has to learn: the analytic cost, squared
        priced = priced_schedules([p], TARGET)[0]
        for schedule, cost in priced[::max(1, len(priced) // 40)]:  # spread over the ranking
            data.append(Sample(repr(p), p, schedule, cost ** 2 * rng.uniform(0.98, 1.02)))
    held = repr(PROBLEMS[0])
    model = LearnedCostModel.fit([s for s in data if s.signature != held], TARGET)
    test = [s for s in data if s.signature == held]
    predicted = model.predict(PROBLEMS[0], [s.schedule for s in test])
    assert spearman(predicted, [s.seconds for s in test]) > 0.7


def test_a_rank_orders_the_candidates_after_the_models_best():
    priced = priced_schedules([PROBLEMS[0]], TARGET)[0]
    rest = [s for s, _ in priced if s not in {priced[0][0], Untiled()}][TOP - 1:]
    favourite = rest[-1]
    order = candidates(priced, 8, 0, rank=lambda ss: np.array([0.0 if s == favourite else 1.0 for s in ss]))
    assert order[0] == priced[0][0] and Untiled() in order[:2]
    assert order[len({priced[0][0], Untiled(), *[s for s, _ in priced[1:TOP]]})] == favourite
    assert candidates(priced, 8, 0) == candidates(priced, 8, 0) != order  # seeded random without a rank
