"""Calibration of the GEMM cost model (tensoregg.extraction.kernel_cost) against measured kernels.

    python bench/cost_model.py [--quick] [--problems a,b] [--schedules N] [--seconds S] [--seed N]
                               [--json out.json]

For each problem (a MatMul graph; "constant A" means MatMul(W[M,K], X[K,N]) with W an initializer, as
a convolution's weights) it takes ``--schedules`` tiled schedules from ``gemm_schedules(problem,
target)``: the predicted best, the predicted worst and, in between, one drawn at random (seeded) from
each stratum of the predicted ranking, the strata growing geometrically from the top. Each is
compiled with ``NativeModel(graph, choose=lambda p: schedule)``, checked against numpy and timed at 1
thread (``num_threads = 1``; a schedule's split_m x split_n tasks then run in turn): the schedules of
a problem are timed round-robin in 5 rounds (2 warm-up calls each first), about ``--seconds`` of
calls each, and the figure is the median call of ``model.run(feeds)``, allocation of the result
included.

The prediction is ``gemm_cost(problem, [schedule], one_core)``, where ``one_core`` is the host target
with ``cores=1`` and ``peak_flops`` its one-core peak (the model assumes ``target.cores`` threads).
Reported per problem and overall: the Spearman rank correlation between predicted and measured times
(overall: the mean of the problems'), the mean |log(predicted / measured)| (overall: over all the
schedules), the geometric mean of predicted / measured (the bias), and the regret: the measured time
of the schedule the model ranks first among those measured over the best measured, minus 1.

Then a fit: a coordinate-wise grid search over the named constants of kernel_cost (FITTED; each is
set as a module attribute, every other one left as it is; grids of 1/32 to 32 times the current value
in steps of sqrt(2), fractions for MEMORY_EXPOSED) minimizing mean |log ratio| + log(1 + mean regret)
+ PRIOR per grid step away from the current value (so that a constant the data do not pin down stays
put), a few passes until nothing moves. A constant that ends at the end of its grid is flagged. The
fitted model's pick among all the enumerated schedules of each problem is then compiled and timed
with the best measured one (round-robin again), as an out-of-sample check. kernel_cost.py is not
edited: the suggested values are printed.

OPENBLAS_NUM_THREADS=1 is set before numpy loads (numpy only checks results here). On a shared
machine, figures taken under a load above the core count are noise: the header gives the load average
at the start and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gemm import describe

from tensoregg.benchmark import RTOL, max_rel_err

if TYPE_CHECKING:
    import numpy as np

    from tensoregg.ir.schedules import GemmProblem, GemmSchedule
    from tensoregg.targets import Target

PROBLEMS: dict[str, tuple[int, int, int, bool]] = {
    # name: (M, K, N, A constant)
    "square256": (256, 256, 256, False),
    "square512": (512, 512, 512, False),
    "square1024": (1024, 1024, 1024, False),
    "ffn128x768x3072": (128, 768, 3072, False),
    "conv64x576x3136": (64, 576, 3136, True),
    "conv512x4608x49": (512, 4608, 49, True),
    "conv256x2304x196": (256, 2304, 196, True),
    "conv2048x512x49": (2048, 512, 49, True),
}
QUICK = ("square256", "conv256x2304x196", "conv2048x512x49")
FITTED = ("CALL_SLOTS", "C_SLOTS_PER_VECTOR", "PACK_SLOTS_PER_VECTOR", "L2_BANDWIDTH_FACTOR",
          "L3_BANDWIDTH_FACTOR", "MEMORY_EXPOSED", "TILED_SETUP_S")
"""The constants the fit varies."""
FACTORS = tuple(2.0 ** (i / 2) for i in range(-10, 11))
"""Grid of each constant, as multiples of its current value (1/32 .. 32)."""
ABSOLUTE_GRIDS = {"MEMORY_EXPOSED": (0.0, 0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0)}
"""Constants whose grid is given outright (a fraction)."""
PRIOR = 1e-3
"""Objective added per grid step a constant moves: constants the data do not pin down stay put."""
ROUNDS = 5
PASSES = 4


@dataclass
class Measured:
    """One problem's measured schedules."""

    name: str
    problem: GemmProblem
    schedules: list[GemmSchedule]
    seconds: np.ndarray
    errors: list[float]


def build(name: str) -> tuple[Any, GemmProblem, dict[str, np.ndarray], np.ndarray]:
    """(graph, the problem its MatMul lowers to, feeds, numpy's product) of problem ``name``."""
    import numpy as np

    from tensoregg.ir import Graph, Node, TensorType
    from tensoregg.ir.schedules import GemmProblem

    m, k, n, constant_a = PROBLEMS[name]
    f32 = np.dtype(np.float32)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    if constant_a:
        graph = Graph({"x": TensorType(f32, (k, n))}, {"w": a}, [Node("MatMul", ("w", "x"), ("y",))], ["y"])
        feeds = {"x": b}
    else:
        graph = Graph({"a": TensorType(f32, (m, k)), "b": TensorType(f32, (k, n))}, {},
                      [Node("MatMul", ("a", "b"), ("y",))], ["y"])
        feeds = {"a": a, "b": b}
    return graph, GemmProblem(1, m, n, k, pack_a=not constant_a), feeds, a @ b


def one_core(target: Target) -> Target:
    """``target`` on one core: the model of a run with num_threads = 1."""
    return dataclasses.replace(target, cores=1, peak_flops=target.core_flops)


def pick_schedules(problem: GemmProblem, target: Target, count: int, seed: int) -> list[GemmSchedule]:
    """The predicted best and worst tiled schedules and up to ``count - 2`` random ones between them,
    one from each stratum of the predicted ranking (on one core), the strata's bounds in geometric
    progression so that the top of the ranking, which decides the pick, is sampled densely; best first."""
    import numpy as np

    from tensoregg.extraction.kernel_cost import gemm_cost
    from tensoregg.ir.schedules import GemmSchedule
    from tensoregg.targets.llvm.gemm_schedules import gemm_schedules

    tiled = [s for s in gemm_schedules(problem, target) if isinstance(s, GemmSchedule)]
    order = np.argsort(gemm_cost(problem, tiled, one_core(target)), kind="stable")
    if len(order) <= count:
        return [tiled[i] for i in order]
    rng = np.random.default_rng(seed)
    bounds = np.geomspace(1, len(order) - 1, count - 1).astype(int)
    ranks = sorted({int(rng.integers(lo, max(lo + 1, hi))) for lo, hi in itertools.pairwise(bounds)})
    return [tiled[order[r]] for r in (0, *ranks, len(order) - 1)]


def time_models(runs: Sequence[Callable[[], object]], seconds: float) -> list[float]:
    """Median seconds per call of each of ``runs``, timed round-robin: 2 warm-up calls each, then
    ROUNDS rounds of about ``seconds / ROUNDS`` of calls of each."""
    clock = time.perf_counter
    per_call = []
    for run in runs:
        run()
        start = clock()
        run()
        per_call.append(clock() - start)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(ROUNDS):
        for run, estimate, out in zip(runs, per_call, times):
            for _ in range(max(1, round(seconds / ROUNDS / max(estimate, 1e-6)))):
                start = clock()
                run()
                out.append(clock() - start)
    return [statistics.median(t) for t in times]


def compile_runs(graph: Any, problem: GemmProblem, schedules: Sequence[GemmSchedule],
                 feeds: Mapping[str, np.ndarray], want: np.ndarray) -> tuple[list[Callable[[], object]],
                                                                             list[float]]:
    """One-thread runs of ``graph`` compiled under each schedule, and each result's error."""
    from tensoregg.targets.llvm import NativeModel

    runs: list[Callable[[], object]] = []
    errors = []
    for schedule in schedules:
        def choose(p: GemmProblem, s: GemmSchedule = schedule) -> GemmSchedule:
            if p != problem:
                raise ValueError(f"the MatMul lowered to {p}, expected {problem}")
            return s

        model = NativeModel(graph, choose=choose)
        model.num_threads = 1
        errors.append(max_rel_err(model.run(feeds), [want]))
        runs.append(functools.partial(model.run, feeds))
    return runs, errors


def measure(name: str, target: Target, count: int, seconds: float, seed: int) -> Measured:
    """Problem ``name``'s schedules (``pick_schedules``), compiled, checked and timed at 1 thread."""
    import numpy as np

    graph, problem, feeds, want = build(name)
    schedules = pick_schedules(problem, target, count, seed)
    runs, errors = compile_runs(graph, problem, schedules, feeds, want)
    return Measured(name, problem, schedules, np.array(time_models(runs, seconds)), errors)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (no ties assumed)."""
    import numpy as np

    if len(x) < 2:
        return math.nan
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass(frozen=True)
class Scores:
    """How well the model predicts one problem's measured times (or all problems')."""

    spearman: float
    mean_abs_log: float
    bias: float
    """Geometric mean of predicted / measured."""
    regret: float
    """Measured time of the model's first pick over the best measured, minus 1 (mean over problems)."""

    @property
    def objective(self) -> float:
        return self.mean_abs_log + math.log1p(self.regret)


def score(m: Measured, target: Target) -> tuple[Scores, np.ndarray]:
    """The scores of one problem and the predicted seconds, under kernel_cost's current constants."""
    import numpy as np

    from tensoregg.extraction.kernel_cost import gemm_cost

    predicted = gemm_cost(m.problem, m.schedules, one_core(target))
    logs = np.log(predicted / m.seconds)
    regret = float(m.seconds[np.argmin(predicted)] / m.seconds.min() - 1)
    return Scores(spearman(predicted, m.seconds), float(np.mean(np.abs(logs))), float(np.exp(logs.mean())),
                  regret), predicted


def overall(measured: Sequence[Measured], target: Target) -> Scores:
    """Mean Spearman and regret over the problems, mean |log ratio| and bias over all schedules."""
    import numpy as np

    each = [score(m, target) for m in measured]
    logs = np.concatenate([np.log(p / m.seconds) for m, (_, p) in zip(measured, each)])
    return Scores(float(np.nanmean([s.spearman for s, _ in each])), float(np.mean(np.abs(logs))),
                  float(np.exp(logs.mean())), float(np.mean([s.regret for s, _ in each])))


@contextlib.contextmanager
def constants(values: Mapping[str, float]) -> Iterator[None]:
    """kernel_cost's module constants set to ``values`` inside the block."""
    from tensoregg.extraction import kernel_cost

    saved = {name: getattr(kernel_cost, name) for name in values}
    try:
        for name, value in values.items():
            setattr(kernel_cost, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(kernel_cost, name, value)


@dataclass(frozen=True)
class Fit:
    values: dict[str, float]
    at_edge: frozenset[str]
    """Constants that ended at an end of their grid (the fit would move them further)."""


def fit(measured: Sequence[Measured], target: Target) -> Fit:
    """Coordinate-wise grid search over FITTED minimizing ``Scores.objective`` plus PRIOR per grid step
    away from the current value (PASSES passes at most, fewer when nothing moves)."""
    from tensoregg.extraction import kernel_cost

    start = {name: float(getattr(kernel_cost, name)) for name in FITTED}
    grids = {name: sorted({*ABSOLUTE_GRIDS.get(name, (start[name] * f for f in FACTORS)), start[name]})
             for name in FITTED}
    origin = {name: grids[name].index(start[name]) for name in FITTED}

    def objective(at: Mapping[str, int]) -> float:
        with constants({name: grids[name][i] for name, i in at.items()}):
            fitted = overall(measured, target).objective
        return fitted + PRIOR * sum(abs(i - origin[name]) for name, i in at.items())

    best = dict(origin)
    best_value = objective(best)
    for _ in range(PASSES):
        moved = False
        for name in FITTED:
            for i in range(len(grids[name])):
                value = objective({**best, name: i})
                if value < best_value - 1e-12:
                    best, best_value, moved = {**best, name: i}, value, True
        if not moved:
            break
    edges = {name for name, i in best.items() if i in (0, len(grids[name]) - 1) and i != origin[name]}
    return Fit({name: grids[name][i] for name, i in best.items()}, frozenset(edges))


def validate(measured: Sequence[Measured], target: Target, seconds: float) -> list[dict[str, Any]]:
    """Per problem: the current model's pick among all enumerated tiled schedules, timed round-robin
    with the best measured schedule."""
    import numpy as np

    from tensoregg.extraction.kernel_cost import gemm_cost
    from tensoregg.ir.schedules import GemmSchedule
    from tensoregg.targets.llvm.gemm_schedules import gemm_schedules

    rows = []
    for m in measured:
        tiled = [s for s in gemm_schedules(m.problem, target) if isinstance(s, GemmSchedule)]
        pick = tiled[int(np.argmin(gemm_cost(m.problem, tiled, one_core(target))))]
        best = m.schedules[int(np.argmin(m.seconds))]
        graph, problem, feeds, want = build(m.name)
        runs, errors = compile_runs(graph, problem, [pick, best], feeds, want)
        pick_s, best_s = time_models(runs, seconds)
        rows.append({"problem": m.name, "pick": describe(pick), "pick_ms": pick_s * 1e3,
                     "best": describe(best), "best_ms": best_s * 1e3, "regret": pick_s / best_s - 1,
                     "max_rel_err": max(errors)})
    return rows


def print_problem(m: Measured, target: Target, detail: bool) -> dict[str, Any]:
    """Print (with ``detail``: each schedule, then) one problem's scores; return them as a row."""
    s, predicted = score(m, target)
    if detail:
        p = m.problem
        print(f"{m.name}: M={p.m} N={p.n} K={p.k} A {'packed' if p.pack_a else 'constant'}, "
              f"{2 * p.m * p.n * p.k / 1e9:.2f} GFLOP")
        for sched, pred, got, err in zip(m.schedules, predicted, m.seconds, m.errors):
            flag = "" if err <= RTOL else f"  MISMATCH ({err:.1e})"
            print(f"    {describe(sched):44s} predicted {pred * 1e3:8.3f} ms  measured {got * 1e3:8.3f} ms  "
                  f"ratio {pred / got:5.2f}{flag}")
    print(f"  {m.name:18s} spearman {s.spearman:6.2f}  mean|log r| {s.mean_abs_log:5.2f}  "
          f"bias {s.bias:5.2f}  regret {s.regret:6.1%}")
    return {"problem": m.name, **dataclasses.asdict(s), "predicted_ms": [x * 1e3 for x in predicted]}


def print_overall(title: str, s: Scores) -> None:
    print(f"{title}: spearman (mean over problems) {s.spearman:.2f}, mean|log(predicted/measured)| "
          f"{s.mean_abs_log:.3f}, bias {s.bias:.2f}, mean regret {s.regret:.1%}, objective {s.objective:.3f}")


def main(argv: list[str] | None = None) -> int:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", help=f"comma-separated names (default all: {', '.join(PROBLEMS)})")
    parser.add_argument("--schedules", type=int, default=8, help="schedules per problem (default 8)")
    parser.add_argument("--seconds", type=float, default=0.4, help="timed calls per schedule, in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {', '.join(QUICK)}, 4 schedules each, 0.1 s")
    parser.add_argument("--json", help="also write the measurements and the fit to this file")
    args = parser.parse_args(argv)
    names = list(QUICK) if args.quick else args.problems.split(",") if args.problems else list(PROBLEMS)
    count, seconds = (4, 0.1) if args.quick else (args.schedules, args.seconds)
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown or count < 2:
        parser.error(f"unknown problems {unknown}; known: {', '.join(PROBLEMS)}" if unknown
                     else "--schedules must be at least 2")

    from tensoregg.extraction import kernel_cost
    from tensoregg.targets.llvm.host import host_target

    target = host_target()
    load = os.getloadavg()
    print(f"machine: {target.cpu}, one-core FMA peak {target.core_flops / 1e9:.1f} GFLOP/s, "
          f"caches {dict(target.caches)}; load average {' '.join(f'{x:.2f}' for x in load)}")
    print(f"{len(names)} problems x {count} schedules, 1 thread, {seconds} s per schedule", flush=True)
    measured = []
    for k, name in enumerate(names):
        measured.append(measure(name, target, count, seconds, args.seed + k))
        print(f"  measured {name}", flush=True)

    print("\nwith the current constants:")
    before_rows = [print_problem(m, target, detail=True) for m in measured]
    before = overall(measured, target)
    print_overall("overall, current", before)

    fitted = fit(measured, target)
    with constants(fitted.values):
        print("\nwith the fitted constants:")
        after_rows = [print_problem(m, target, detail=False) for m in measured]
        after = overall(measured, target)
        checks = validate(measured, target, seconds)
    print_overall("overall, current", before)
    print_overall("overall, fitted ", after)
    print("\nthe fitted model's pick among all enumerated schedules, timed against the best measured:")
    for row in checks:
        flag = "" if row["max_rel_err"] <= RTOL else "  MISMATCH"
        print(f"  {row['problem']:18s} {row['pick']:44s} {row['pick_ms']:8.3f} ms  vs "
              f"{row['best_ms']:8.3f} ms ({row['best']})  regret {row['regret']:6.1%}{flag}")
    print("\nsuggested constants (tensoregg/extraction/kernel_cost.py):")
    for name in FITTED:
        old = getattr(kernel_cost, name)
        value = fitted.values[name]
        mark = "" if math.isclose(value, old) else f"   (was {old:.4g})"
        edge = "; the end of its grid" if name in fitted.at_edge else ""
        print(f"  {name} = {value:.4g}{mark}{edge}")
    load_end = os.getloadavg()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in load_end)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"cpu": target.cpu, "core_flops": target.core_flops, "load_average": load,
                                   "load_average_end": load_end},
                       "measured": [{"problem": m.name, "schedules": [describe(s) for s in m.schedules],
                                     "measured_ms": [x * 1e3 for x in m.seconds], "max_rel_err": m.errors}
                                    for m in measured],
                       "current": {"overall": dataclasses.asdict(before), "problems": before_rows},
                       "fitted": {"constants": fitted.values, "at_edge": sorted(fitted.at_edge),
                                  "overall": dataclasses.asdict(after), "problems": after_rows,
                                  "validation": checks}}, f, indent=1)
    errors = [e for m in measured for e in m.errors] + [r["max_rel_err"] for r in checks]
    return 1 if max(errors) > RTOL else 0


if __name__ == "__main__":
    sys.exit(main())
