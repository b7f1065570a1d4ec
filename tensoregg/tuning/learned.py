"""A learned cost model: gradient-boosted trees (LightGBM, the optional extra ``tune``) over features
of a kernel's schedule, trained from the tuning records, ranking a kernel's candidates before they
are measured (``tensoregg.tuning.search``).

The features (``FEATURES``) are the problem's extents and packing, the template and its literals,
what they imply for the loop nest (tasks and their balance over the cores, register accumulators,
padding, micro-kernel calls), the bytes of each blocked operand against the cache level it is meant
to fit (L1, L2, a core's share of L3), the arithmetic intensity, and the analytic model's prediction
(``tensoregg.extraction.kernel_cost``). The label is the measured log-seconds less the mean of its
kernel's (only the order within a kernel matters), so records of one kernel measured on a slower day
still teach the order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensoregg.extraction.kernel_cost import F32, cache_bytes, gemm_cost, untiled_cost
from tensoregg.ir.schedules import GemmProblem, GemmSchedule, Schedule
from tensoregg.ir.target import Target
from tensoregg.tuning.records import Records, decode_schedule, fingerprint

FEATURES = ("log_batch", "log_m", "log_n", "log_k", "pack_a", "pack_b", "row_form", "log_flops", "tiled",
            "mr", "nr", "log_mc", "log_nc", "log_kc", "split_m", "split_n", "tasks_per_core", "balance",
            "accumulators", "vectors_per_row", "padding", "log_calls", "l1_fill", "l2_fill", "l3_fill",
            "log_intensity", "log_analytic")
MIN_SAMPLES = 3
"""Measured schedules a kernel needs to teach (or test) an order."""


@dataclass(frozen=True)
class Sample:
    """One successful measurement: the kernel (signature, problem), the schedule, its seconds."""

    signature: str
    problem: GemmProblem
    schedule: Schedule
    seconds: float


def features(problem: GemmProblem, schedule: Schedule, target: Target) -> list[float]:
    """The feature vector of ``problem`` under ``schedule`` on ``target`` (``FEATURES``, in order)."""
    p, cores, lanes = problem, max(target.cores, 1), target.lanes
    log = math.log2
    base = [log(p.batch), log(p.m), log(p.n), log(p.k), float(p.pack_a), float(p.pack_b), float(p.row_form),
            log(p.flops)]
    moved = (p.m * p.k + p.k * p.n + p.m * p.n) * p.batch * F32
    if not isinstance(schedule, GemmSchedule):
        analytic = untiled_cost(p, target)
        threads = min(cores, p.batch * p.m)
        no_template = [0.0] * 8  # tiled .. split_n
        return [*base, *no_template, threads / cores, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0,
                p.k * p.n * F32 / cache_bytes(target, "L2"), 0.0, log(p.flops / moved), log(analytic)]
    s = schedule
    mr, nr = s.ukernel.mr, s.ukernel.nr
    tiles_m, tiles_n = math.ceil(math.ceil(p.m / mr) / s.split_m), math.ceil(math.ceil(p.n / nr) / s.split_n)
    tasks = p.batch * s.split_m * s.split_n
    waves = math.ceil(tasks / cores)
    calls = tiles_m * tiles_n * math.ceil(p.k / s.kc)
    padding = tiles_m * mr * s.split_m * tiles_n * nr * s.split_n / (p.m * p.n)
    analytic = float(gemm_cost(p, [s], target)[0])
    return [*base, 1.0, mr, nr, log(s.mc), log(s.nc), log(s.kc), s.split_m, s.split_n, tasks / cores,
            tasks / (waves * cores), mr * nr / lanes, nr / lanes, padding, log(calls),
            (mr + nr) * s.kc * F32 / cache_bytes(target, "L1"), s.kc * s.nc * F32 / cache_bytes(target, "L2"),
            s.mc * s.kc * F32 * cores / cache_bytes(target, "L3"), log(p.flops / moved), log(analytic)]


def samples(records: Records, target: Target) -> list[Sample]:
    """The successful measurements of ``target`` on this machine, of kernels with at least
    ``MIN_SAMPLES`` of them."""
    mine = fingerprint(target)
    found: dict[str, list[Sample]] = {}
    for r in records.all():
        if r.target != target.name or r.fingerprint != mine or r.seconds is None or r.seconds <= 0:
            continue
        schedule = decode_schedule(r.template, r.params, target)
        if schedule is not None:
            found.setdefault(r.signature, []).append(
                Sample(r.signature, GemmProblem(**json.loads(r.problem)), schedule, r.seconds))
    return [s for group in found.values() if len(group) >= MIN_SAMPLES for s in group]


def relative_log_seconds(samples: Sequence[Sample]) -> np.ndarray:
    """Each sample's log-seconds less the mean of its kernel's (the label)."""
    logs = np.log([s.seconds for s in samples])
    means: dict[str, list[float]] = {}
    for s, v in zip(samples, logs):
        means.setdefault(s.signature, []).append(float(v))
    return np.array([v - np.mean(means[s.signature]) for s, v in zip(samples, logs)])


class LearnedCostModel:
    """Trees predicting a schedule's relative log-seconds within its kernel (lower: faster)."""

    def __init__(self, booster: Any, target: Target) -> None:
        self.booster, self.target = booster, target

    @classmethod
    def fit(cls, train: Sequence[Sample], target: Target, seed: int = 0) -> LearnedCostModel:
        """Train on ``train`` (needs ``lightgbm``: ``pip install 'tensoregg[tune]'``)."""
        import lightgbm

        x = np.array([features(s.problem, s.schedule, target) for s in train])
        params = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 5,
                  "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8, "seed": seed,
                  "num_threads": 1, "verbose": -1}
        model = lightgbm.train(params, lightgbm.Dataset(x, relative_log_seconds(train)), num_boost_round=200)
        return cls(model, target)

    def predict(self, problem: GemmProblem, schedules: Sequence[Schedule]) -> np.ndarray:
        """Predicted relative log-seconds of ``problem`` under each of ``schedules``."""
        if not schedules:
            return np.zeros(0)
        x = np.array([features(problem, s, self.target) for s in schedules])
        return np.asarray(self.booster.predict(x))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (average ranks for ties)."""
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    order = np.empty(len(v))
    order[v.argsort(kind="stable")] = np.arange(len(v))
    _, tie = np.unique(v, return_inverse=True)
    return (np.bincount(tie, order) / np.bincount(tie))[tie]
