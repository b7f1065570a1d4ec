"""The tuning loop: find a set of models' kernels, measure their best candidates, store the records.

Each model is optimized for the target as ``compile`` does (with the records so far), and the
contraction kernels of the extracted programs are collected, deduplicated by signature (a kernel two
models share is tuned once). Kernels are tuned in order of their predicted time, longest first,
each given an equal share of the time left. A pass that ends with time left is followed by another
over the kernels the extraction picks with the new records that this run has not tuned yet
(measured times can change which form of a kernel wins), until there are none.

A kernel's candidates are its schedules as the target's cost model ranks them: the model's pick
(what an untuned compile chooses; measured first, the baseline), Untiled, the next ``TOP`` of the
ranking, then the others in the order a learned cost model (``tensoregg.tuning.learned``, trained
from the records at the start of the run where ``lightgbm`` is installed and the records hold at
least ``LEARN_MIN_KERNELS`` kernels) predicts, else in seeded random order, at most ``trials`` in
all. A candidate already in the records is not measured again. Each measurement is stored as it
ends (on a cluster, as its group ends), so a run cut short keeps what it measured.

Candidates are measured in a local worker process, one at a time, or with ``cluster=ADDRESS`` on the
workers of a Ray cluster (``tensoregg.tuning.cluster``), as many at a time as it has workers: the
untuned choice first, then the others in groups of that many.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from tensoregg.extraction.kernel_spec import KernelSpec
from tensoregg.ir.graph import Graph
from tensoregg.ir.schedules import Schedule, Untiled
from tensoregg.optimize import optimize
from tensoregg.progress import active, shown
from tensoregg.runtime.threads import available_cpus
from tensoregg.targets import Registration, Target
from tensoregg.tuning.learned import LearnedCostModel, samples
from tensoregg.tuning.measure import Backend, Candidate, ModelCheck, Result, Worker, measure, time_model
from tensoregg.tuning.records import Records, encode_schedule, measured_pricing

TOP = 4
"""Candidates taken in the cost model's order before sampling the rest."""
LEARN_MIN_KERNELS = 8
"""Kernels with records the learned model needs before it ranks candidates."""
SLOWER_SLACK = 0.03
"""A tuned model timed more than this fraction above its untuned self is reported as slower (the
whole-model check's medians move by a percent or two between runs on a quiet machine)."""
MODEL_CHECK_TIMEOUT = 900.0
"""Seconds the whole-model check of one model may take (two compiles and the timing)."""


@dataclass
class KernelTuning:
    """What tuning found for one kernel (seconds: measured medians; None: not measured)."""

    kernel: str
    signature: str
    untuned: str
    untuned_seconds: float | None
    best: str = ""
    best_seconds: float | None = None
    measured: int = 0
    failed: int = 0
    candidates: int = 0
    """Schedules the target's templates give for it."""

    @property
    def speedup(self) -> float | None:
        if self.untuned_seconds is None or self.best_seconds is None:
            return None
        return self.untuned_seconds / self.best_seconds


@dataclass
class TuneReport:
    """A tuning run: the kernels, the measurements made (``failed``: crashed, hung, wrong) and the
    wall time."""

    target: str
    records: str
    kernels: list[KernelTuning] = field(default_factory=list)
    measurements: int = 0
    failed: int = 0
    seconds: float = 0.0
    learned: bool = False
    """Whether a learned cost model ranked the sampled candidates."""
    workers: dict[str, int] = field(default_factory=dict)
    """Measurements per worker (``local``, or a cluster machine's address and worker)."""
    models: list[dict[str, Any]] = field(default_factory=list)
    """Each model timed whole untuned and tuned (``check_models``): name, untuned_ms, tuned_ms,
    threads; or name and error."""
    load: list[float] = field(default_factory=list)
    """This machine's load average (1 minute) at the start and at the end; see ``busy``."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup_geomean": self.speedup_geomean}

    @property
    def speedup_geomean(self) -> float | None:
        """Geometric mean over the kernels of untuned / best measured seconds."""
        ratios = [k.speedup for k in self.kernels if k.speedup is not None]
        return math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else None

    def __str__(self) -> str:
        lines = [f"tuned {len(self.kernels)} kernels for target {self.target} in {self.seconds:.1f} s: "
                 f"{self.measurements} measurements ({self.failed} failed); records in {self.records}"
                 + ("; candidates ranked by the learned cost model" if self.learned else "")
                 + ("; load average " + " -> ".join(f"{x:.1f}" for x in self.load) if self.load else "")]
        for k in self.kernels:
            untuned = "-" if k.untuned_seconds is None else f"{k.untuned_seconds * 1e3:.4f}"
            best = "-" if k.best_seconds is None else f"{k.best_seconds * 1e3:.4f}"
            lines.append(f"  {k.kernel:34s} untuned {untuned:>9s} ms  best {best:>9s} ms  "
                         f"({k.measured} of {k.candidates} schedules)  {k.best}")
        if self.speedup_geomean is not None:
            lines.append("kernel speedup over the untuned choices (geometric mean): "
                         f"{self.speedup_geomean:.2f}x")
        for m in self.models:
            lines.append(f"model {m['name']}: " + (
                f"not timed: {m['error']}" if "error" in m else
                f"untuned {m['untuned_ms']:.3f} ms, tuned {m['tuned_ms']:.3f} ms on {m['threads']} threads"
                f" ({m['untuned_ms'] / m['tuned_ms']:.2f}x)" + (" SLOWER" if m in self.slower() else "")))
        return "\n".join(lines)

    def slower(self) -> list[dict[str, Any]]:
        """The models the records made slower than untuned, by more than ``SLOWER_SLACK``."""
        return [m for m in self.models
                if "error" not in m and m["tuned_ms"] > m["untuned_ms"] * (1 + SLOWER_SLACK)]


def model_kernels(graphs: Sequence[Graph], entry: Registration, target: Target,
                  records: Records) -> list[KernelSpec]:
    """The distinct kernels (by signature) of the programs the target's extraction picks for
    ``graphs``, with ``records`` applied."""
    reprice = measured_pricing(records.measured(target))
    kernels: dict[str, KernelSpec] = {}
    for graph in graphs:
        _, report = optimize(graph, target, schedules=entry.schedules, reprice=reprice)
        for spec, _ in report.chosen:
            kernels.setdefault(spec.signature, spec)
    return list(kernels.values())


Rank = Callable[[Sequence[Schedule]], np.ndarray]
"""Predicted relative cost of each of a kernel's schedules (lower first)."""


def candidates(priced: Sequence[tuple[Schedule, float]], trials: int, seed: int,
               rank: Rank | None = None) -> list[Schedule]:
    """The order in which a kernel's schedules are measured (see the module docstring)."""
    ranked = [s for s, _ in priced]
    head = list(dict.fromkeys([ranked[0], Untiled(), *ranked[1:TOP]]))
    rest = [s for s in ranked if s not in head]
    order = (np.argsort(rank(rest), kind="stable") if rank is not None and rest
             else np.random.default_rng(seed).permutation(len(rest)))
    return [*head, *(rest[i] for i in order)][:max(trials, 1)]


def learned_model(records: Records, target: Target, seed: int) -> LearnedCostModel | None:
    """A learned cost model trained from ``records``, or None: ``lightgbm`` is not installed or the
    records hold fewer than ``LEARN_MIN_KERNELS`` kernels."""
    try:
        import lightgbm  # noqa: F401  (only whether it is there)
    except ImportError:
        return None
    train = samples(records, target)
    if len({s.signature for s in train}) < LEARN_MIN_KERNELS:
        return None
    return LearnedCostModel.fit(train, target, seed)


Measure = Callable[[Candidate], Result]


def tune_graphs(graphs: Sequence[Graph], entry: Registration, target: Target, records: Records, *,
                minutes: float, trials: int = 32, seconds: float = 0.2, timeout: float = 60.0,
                seed: int = 0, progress: bool | None = None, measure_fn: Measure = measure,
                cluster: str | None = None, check_models: bool = True) -> TuneReport:
    """Tune the kernels of ``graphs`` for ``target`` (compiled by ``entry``) for about ``minutes``,
    storing each measurement in ``records``; ``trials``: candidates per kernel at most; ``seconds``:
    timed calls per candidate; ``timeout``: a candidate's limit (compile and calls); ``cluster``: the
    address of a Ray cluster to measure on (``tensoregg.tuning.cluster``), else a local worker.
    With ``check_models``, a run that measured something on the local worker then times each model
    whole, untuned and tuned (``check_graphs``, after the ``minutes``), and warns of any that the
    records made slower: a kernel's time alone does not always carry over into its model."""
    if entry.schedules is None:
        raise ValueError(f"target {entry.name!r} has no schedule templates to tune")
    start = time.monotonic()
    deadline = start + minutes * 60.0
    report = TuneReport(entry.name, str(records.path))
    learned = learned_model(records, target, seed)
    report.learned = learned is not None
    report.load.append(busy(cluster))
    tuned: set[str] = set()
    backend: Backend
    if cluster is None:
        backend = Worker()
    else:
        from tensoregg.tuning.cluster import RayCluster

        backend = RayCluster(cluster, entry, target)
    with closing(backend) as worker, _bars(minutes * 60.0, progress) as show:
        while time.monotonic() < deadline:  # a pass; the next one tunes what the records changed
            specs = [s for s in model_kernels(graphs, entry, target, records) if s.signature not in tuned]
            prices = entry.schedules([s.problem for s in specs], target)
            priced = dict(zip((s.signature for s in specs), prices))
            specs = sorted((s for s in specs if len(priced[s.signature]) > 1),  # else nothing to choose
                           key=lambda s: -priced[s.signature][0][1])
            if not specs:
                break
            known = records.measured(target)
            for n, spec in enumerate(specs):
                if time.monotonic() >= deadline:
                    break
                share = (deadline - time.monotonic()) / (len(specs) - n)
                rank = None if learned is None else partial(learned.predict, spec.problem)
                total = len(tuned) + len(specs) - n
                kernel = _tune_kernel(spec, priced[spec.signature], known.get(spec.signature, {}), worker,
                                      entry, target, records, min(deadline, time.monotonic() + share),
                                      trials, seconds, timeout, seed, rank, measure_fn,
                                      lambda k: show(len(tuned), total, k, time.monotonic() - start))
                tuned.add(spec.signature)
                report.kernels.append(kernel)
                report.measurements += kernel.measured
                report.failed += kernel.failed
                show(len(tuned), total, kernel, time.monotonic() - start)
        report.workers = dict(worker.used)
    report.seconds = time.monotonic() - start
    if check_models and cluster is None and report.measurements:
        report.models = check_graphs(graphs, target, records)
        for m in report.slower():
            warnings.warn(f"the tuning records make model {m['name']!r} slower: {m['tuned_ms']:.3f} ms "
                          f"against {m['untuned_ms']:.3f} ms untuned on {m['threads']} threads",
                          RuntimeWarning, stacklevel=3)
    report.load.append(busy(cluster))
    return report


def check_graphs(graphs: Sequence[Graph], target: Target, records: Records) -> list[dict[str, Any]]:
    """Each of ``graphs`` timed whole, untuned and with ``records``, in a worker process
    (``measure.time_model``, under ``MODEL_CHECK_TIMEOUT``): ``TuneReport.models``' entries."""
    out: list[dict[str, Any]] = []
    with Worker() as worker:
        for graph in graphs:
            status, value = worker.run(time_model, ModelCheck(target, graph, str(records.path)),
                                       MODEL_CHECK_TIMEOUT)
            out.append({"name": graph.name, "untuned_ms": value[0] * 1e3, "tuned_ms": value[1] * 1e3,
                        "threads": max(1, target.cores)} if status == "ok" else
                       {"name": graph.name, "error": value})
    return out


def busy(cluster: str | None) -> float:
    """This machine's load average over the last minute; with a local worker, a ``RuntimeWarning``
    when it is above the CPUs this process may use. The tuning process itself counts for up to one
    (it has just optimized the models), so above the CPUs means that other work takes at least all
    the others: the candidates' times then rank schedules partly by that work's noise (measured: a
    tuning under load 3-8 on 2 cores gave records that made models slower), and the records keep
    them. A cluster's workers measure on their own machines: not checked here."""
    load = os.getloadavg()[0]
    cpus = len(available_cpus())
    if cluster is None and load > cpus:
        warnings.warn(f"tuning on a busy machine (load average {load:.1f} on {cpus} CPUs): the measured "
                      "times include other work's noise, and the records keep them; tune on a quiet "
                      "machine", RuntimeWarning, stacklevel=4)
    return load


def _tune_kernel(spec: KernelSpec, priced: Sequence[tuple[Schedule, float]],
                 known: dict[Schedule, float | None], worker: Backend, entry: Registration, target: Target,
                 records: Records, until: float, trials: int, seconds: float, timeout: float, seed: int,
                 rank: Rank | None, measure_fn: Measure, show: Callable[[KernelTuning], None],
                 ) -> KernelTuning:
    """Measure ``spec``'s candidates until ``until`` (the untuned choice at least), ``worker.slots``
    at a time after the untuned one."""
    order = [s for s in candidates(priced, trials, seed, rank) if encode_schedule(s) is not None]
    result = KernelTuning(str(spec), spec.signature, str(order[0]), None, candidates=len(priced))
    k = 0
    while k < len(order) and (k == 0 or time.monotonic() < until):
        group = _group(order, k, known, 1 if k == 0 else worker.slots)
        fresh = [s for s in group if s not in known]
        outcomes = worker.run_many(measure_fn, [Candidate(entry.name, target, spec, s, seconds, order[0])
                                                for s in fresh], timeout)
        found = dict(known)
        for schedule, (status, value) in zip(fresh, outcomes):
            outcome = value if status == "ok" else Result(None, error=value)
            records.record(target, spec, schedule, outcome.seconds, outcome.repeats, outcome.error)
            found[schedule] = outcome.seconds
            result.measured += 1
            result.failed += outcome.seconds is None
        for schedule in group:
            took = found[schedule]
            if k == 0:
                result.untuned_seconds = took
            if took is not None and (result.best_seconds is None or took < result.best_seconds):
                result.best, result.best_seconds = str(schedule), took
            k += 1
        show(result)
    return result


def _group(order: Sequence[Schedule], k: int, known: Mapping[Schedule, float | None],
           slots: int) -> list[Schedule]:
    """The schedules of ``order`` from the ``k``-th on up to the ``slots``-th not ``known`` one."""
    group: list[Schedule] = []
    for schedule in order[k:]:
        if schedule not in known and sum(s not in known for s in group) == slots:
            break
        group.append(schedule)
    return group


@contextmanager
def _bars(budget: float, enabled: bool | None) -> Iterator[Callable[[int, int, KernelTuning, float], None]]:
    """Progress bars on stderr (``tensoregg.progress``: by default on a terminal, not under CI):
    kernels done with the current kernel's best against its untuned time, and the time left."""
    with shown(enabled):
        bars = active()
        if bars is None:
            yield lambda done, total, kernel, elapsed: None
            return
        done_task = bars.add_task("kernels", total=None)
        time_task = bars.add_task(f"time left {budget:.0f} s", total=budget)

        def show(done: int, total: int, kernel: KernelTuning, elapsed: float) -> None:
            untuned = "-" if kernel.untuned_seconds is None else f"{kernel.untuned_seconds * 1e3:.3f} ms"
            best = "-" if kernel.best_seconds is None else f"{kernel.best_seconds * 1e3:.3f} ms"
            bars.update(done_task, completed=done, total=total, description=f"kernels {done}/{total} "
                        f"({kernel.kernel}: best {best}, untuned {untuned})")
            bars.update(time_task, completed=min(elapsed, budget),
                        description=f"time left {max(budget - elapsed, 0.0):.0f} s")

        try:
            yield show
        finally:
            bars.remove_task(done_task)
            bars.remove_task(time_task)
