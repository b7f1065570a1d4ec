# mypy: disable-error-code="empty-body"
"""GEMM schedules as e-graph terms: one template with literal parameters, enumerated by one rule.

A kernel is the literal iteration domain of a :class:`GemmProblem` (``GemmKernel``); its schedule
e-class starts as ``Sched.untiled(kernel)`` (the default lowering, always there) and the rule
``tensorize-gemm`` unions into it every ``Sched.tiled(kernel, ukernel, mr, nr, mc, nc, kc, split_m,
split_n)`` (see ``tensoregg.ir.schedules``) whose parameters join the target's facts and pass the
premises. The facts are literal rows: the micro-kernels (``ukern``), the hardware sizes (``hw``) and
the kernel's banded tile and split candidates (``tile_m``, ``tile_n``, ``tile_k``, ``split``), as in
../shared/notes/schedules.md (representation (c)). The rule only matches ``Sched.untiled`` and
builds literal-argument terms, so it saturates in one iteration.

The premises are written once (``_premises``) over an integer division operator, so the same text
gives the rule's facts (egglog i64 terms) and the plain predicate :func:`premises_hold`. Each
schedule's cost is local to its node, so choosing one is costing every node of the class
(``tensoregg.extraction.kernel_cost``) and taking the argmin.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egglog import (
    Bool,
    BoolLike,
    EGraph,
    Expr,
    String,
    StringLike,
    eq,
    function,
    i64,
    i64Like,
    relation,
    rule,
    ruleset,
    set_,
    union,
    var,
)

from tensoregg.extraction.kernel_cost import F32, cache_bytes, gemm_cost, untiled_cost
from tensoregg.ir.intrinsics import MicroKernel
from tensoregg.ir.schedules import GemmProblem, GemmSchedule, Schedule, Untiled
from tensoregg.ir.terms import read_literal, serialize
from tensoregg.rules.saturation import Phase, run_phase
from tensoregg.targets import Target
from tensoregg.targets.llvm.cachefiles import cache_dir, read_json, write_json

MC_BAND = tuple(1 << e for e in range(4, 10))
"""mc candidates: the multiple of mr nearest each (16..512)."""
NC_BAND = tuple(1 << e for e in range(5, 12))
"""nc candidates: the multiple of nr nearest each (32..2048)."""
KC_BAND = tuple(1 << e for e in range(5, 10))
"""kc candidates (32..512), with K itself when K <= 512, else K split evenly into blocks <= 512."""
BLOCK_MAX = 1 << 20
"""The packed blocks live on the stack: each at most this many bytes, and at most L3 per core."""
MAX_NODES = 50_000
"""Node limit of the enumeration phase (one problem's space is a few thousand rows)."""


class GemmKernel(Expr):
    """The iteration domain of a :class:`GemmProblem`: batch, M, N, K and the packing flags."""

    def __init__(self, batch: i64Like, m: i64Like, n: i64Like, k: i64Like, pack_a: BoolLike,
                 pack_b: BoolLike) -> None: ...


class Sched(Expr):
    """A schedule of a kernel (the template of ``tensoregg.ir.schedules``)."""

    @classmethod
    def tiled(cls, kernel: GemmKernel, ukernel: StringLike, mr: i64Like, nr: i64Like, mc: i64Like,
              nc: i64Like, kc: i64Like, split_m: i64Like, split_n: i64Like) -> Sched: ...

    @classmethod
    def untiled(cls, kernel: GemmKernel) -> Sched: ...


@function
def hw(name: StringLike) -> i64:
    """A hardware size: ``lanes``, ``registers``, ``L1``, ``L2``, ``block`` (bytes)."""


ukern = relation("ukern", String, i64, i64)
"""ukern(name, mr, nr): a micro-kernel the target offers."""
tile_m = relation("tile_m", GemmKernel, i64, i64)
"""tile_m(kernel, mr, mc): an mc candidate for register tiles of mr rows."""
tile_n = relation("tile_n", GemmKernel, i64, i64)
"""tile_n(kernel, nr, nc): an nc candidate for register tiles of nr columns."""
tile_k = relation("tile_k", GemmKernel, i64)
"""tile_k(kernel, kc): a kc candidate."""
split = relation("split", GemmKernel, i64, i64)
"""split(kernel, split_m, split_n): a split of M x N into parallel tasks."""


def _premises(div: Callable[[Any, Any], Any], m: Any, n: Any, k: Any, mr: Any, nr: Any, mc: Any, nc: Any,
              kc: Any, sm: Any, sn: Any, hw_: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """The premises of a tiled schedule as pairs (a, b) meaning a <= b, over ints (``div`` = //) or
    egglog i64 terms (``div`` = /)."""
    lanes = hw_["lanes"]
    nv = div(nr, lanes)                                       # vectors across the register tile
    mt, nt = div(m + mr - 1, mr), div(n + nr - 1, nr)         # register tiles across M and N
    return [
        (nr % lanes, 0),                                      # whole vectors across the tile
        (mr * nv + nv + 1, hw_["registers"]),                 # accumulators, B vectors, the A broadcast
        ((mr + nr) * kc * F32, hw_["L1"]),                    # A and B micro-panels in L1
        (kc * nc * F32 * 2, hw_["L2"]),                       # the packed B block in half of L2
        (mc * kc * F32, hw_["block"]),                        # the packed blocks on the stack
        (kc * nc * F32, hw_["block"]),
        (mc % mr, 0),
        (nc % nr, 0),
        (mc, div(mt + sm - 1, sm) * mr),                      # no degenerate levels: mc <= a task's M,
        (nc, div(nt + sn - 1, sn) * nr),                      # nc <= a task's N (rounded up to mr, nr),
        (kc, k),                                              # kc <= K
        (sm, mt),                                             # every task gets rows
        (sn, nt),                                             # and columns
        ((mt - 1) * ((mt * mr - m) * 4 - m), 0),              # padding M to mr wastes <= 25%, or mt = 1
    ]


def hardware(target: Target) -> dict[str, int]:
    """The sizes the premises read: lanes, registers, L1, L2 and the packed block budget."""
    l3_per_core = cache_bytes(target, "L3") // max(target.cores, 1)
    return {"lanes": target.lanes, "registers": target.vector_registers, "L1": cache_bytes(target, "L1"),
            "L2": cache_bytes(target, "L2"), "block": min(l3_per_core, BLOCK_MAX)}


def premises_hold(problem: GemmProblem, schedule: Schedule, target: Target) -> bool:
    """Whether ``schedule`` passes the premises of ``tensorize-gemm`` (Untiled always does, another
    target's template never)."""
    if isinstance(schedule, Untiled):
        return True
    if not isinstance(schedule, GemmSchedule):
        return False
    s = schedule
    return all(a <= b for a, b in _premises(operator.floordiv, problem.m, problem.n, problem.k,
                                            s.ukernel.mr, s.ukernel.nr, s.mc, s.nc, s.kc, s.split_m,
                                            s.split_n, hardware(target)))


@dataclass(frozen=True)
class Candidates:
    """The banded candidates of one problem on one target (the rule's facts)."""

    ukernels: tuple[MicroKernel, ...]
    mc: Mapping[int, tuple[int, ...]]
    """By mr."""
    nc: Mapping[int, tuple[int, ...]]
    """By nr."""
    kc: tuple[int, ...]
    splits: tuple[tuple[int, int], ...]

    def combinations(self) -> list[GemmSchedule]:
        """Every combination of the candidates (premises not checked)."""
        return [GemmSchedule(u, mc, nc, kc, sm, sn) for u in self.ukernels for mc in self.mc[u.mr]
                for nc in self.nc[u.nr] for kc in self.kc for sm, sn in self.splits]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _band(extent: int, unit: int, band: tuple[int, ...], parts: set[int]) -> tuple[int, ...]:
    """Multiples of ``unit`` nearest each of ``band``, and ``extent`` split into each of ``parts``
    (in whole units, rounded up)."""
    near = {max(unit, round(p / unit) * unit) for p in band}
    per_task = {_ceil(_ceil(extent, unit), s) * unit for s in parts}
    return tuple(sorted(near | per_task))


def candidates(problem: GemmProblem, target: Target) -> Candidates:
    """Tile candidates banded per level, the target's micro-kernels of the problem's dtype and the
    splits of M x N into 1 or ``cores`` tasks."""
    cores = max(target.cores, 1)
    splits = tuple(sorted({(1, 1)} | {(d, cores // d) for d in range(1, cores + 1) if cores % d == 0}))
    sms, sns = {sm for sm, _ in splits}, {sn for _, sn in splits}
    ukernels = tuple(u for u in target.microkernels if u.dtype == problem.dtype)
    k = problem.k
    kc = {p for p in KC_BAND if p < k} | {k if k <= KC_BAND[-1] else _ceil(k, _ceil(k, KC_BAND[-1]))}
    return Candidates(ukernels, {u.mr: _band(problem.m, u.mr, MC_BAND, sms) for u in ukernels},
                      {u.nr: _band(problem.n, u.nr, NC_BAND, sns) for u in ukernels}, tuple(sorted(kc)),
                      splits)


def kernel_term(problem: GemmProblem) -> GemmKernel:
    """The kernel term of ``problem``."""
    p = problem
    return GemmKernel(p.batch, p.m, p.n, p.k, Bool(p.pack_a), Bool(p.pack_b))


def _tensorize_rule() -> Any:
    """tensorize-gemm: every joined candidate that passes the premises is a schedule of the kernel."""
    s, kern = var("s", Sched), var("kern", GemmKernel)
    batch, m, n, k, mr, nr, mc, nc, kc, sm, sn = (var(v, i64) for v in
                                                  "batch m n k mr nr mc nc kc sm sn".split())
    pack_a, pack_b, name = var("pack_a", Bool), var("pack_b", Bool), var("name", String)
    sizes = {key: var(f"hw_{key}", i64) for key in ("lanes", "registers", "L1", "L2", "block")}
    facts: list[Any] = [eq(s).to(Sched.untiled(kern)),
                        eq(kern).to(GemmKernel(batch, m, n, k, pack_a, pack_b)),
                        ukern(name, mr, nr), tile_m(kern, mr, mc), tile_n(kern, nr, nc), tile_k(kern, kc),
                        split(kern, sm, sn), *[eq(hw(key)).to(v) for key, v in sizes.items()]]
    premises = [a <= b for a, b in _premises(operator.truediv, m, n, k, mr, nr, mc, nc, kc, sm, sn, sizes)]
    return rule(*facts, *premises, name="tensorize-gemm").then(
        union(s).with_(Sched.tiled(kern, name, mr, nr, mc, nc, kc, sm, sn)))


TENSORIZE = ruleset(_tensorize_rule(), name="schedules")


def target_facts(target: Target, dtype: str) -> list[Any]:
    """The target's facts: its hardware sizes and its micro-kernels of ``dtype``."""
    return [*[set_(hw(key)).to(i64(v)) for key, v in hardware(target).items()],
            *[ukern(String(u.name), i64(u.mr), i64(u.nr)) for u in target.microkernels if u.dtype == dtype]]


def problem_facts(problem: GemmProblem, target: Target) -> list[Any]:
    """The problem's banded candidates, and its kernel's schedule class."""
    kern, cand = kernel_term(problem), candidates(problem, target)
    return [Sched.untiled(kern),
            *[tile_m(kern, i64(mr), i64(mc)) for mr, mcs in cand.mc.items() for mc in mcs],
            *[tile_n(kern, i64(nr), i64(nc)) for nr, ncs in cand.nc.items() for nc in ncs],
            *[tile_k(kern, i64(kc)) for kc in cand.kc],
            *[split(kern, i64(sm), i64(sn)) for sm, sn in cand.splits]]


ENUMERATED_MAX = 4096
"""Problems whose schedules stay memoized (per target) before the memo starts over."""
_ENUMERATED: dict[tuple[GemmProblem, Target], tuple[Schedule, ...]] = {}


def _kernel_key(p: GemmProblem) -> tuple[int, int, int, int, bool, bool]:
    """What a ``GemmKernel`` term holds of a problem."""
    return (p.batch, p.m, p.n, p.k, p.pack_a, p.pack_b)


def enumerate_schedules(problems: Sequence[GemmProblem], target: Target) -> list[tuple[Schedule, ...]]:
    """Untiled() and every tiled schedule ``tensorize-gemm`` derives, for each of ``problems``.
    Problems met before (in this process, or in an earlier one: ``_disk_cache``) are not derived
    again; the others share one e-graph per dtype (one saturation, one serialization: egglog's cost
    per e-graph dominates a single problem's enumeration)."""
    todo = [p for p in dict.fromkeys(problems) if (p, target) not in _ENUMERATED]
    if len(_ENUMERATED) + len(todo) > ENUMERATED_MAX:
        _ENUMERATED.clear()
    for dtype in sorted({p.dtype for p in todo}):
        group = [p for p in todo if p.dtype == dtype]
        disk = _disk_cache(target, dtype)
        fresh = [p for p in group if repr(_kernel_key(p)) not in disk]
        if fresh:
            disk.update((repr(key), rows) for key, rows in derive_schedules(fresh, target, dtype).items())
            _save(target, dtype, disk)
        by_name = {u.name: u for u in target.microkernels}
        for p in group:
            tiled = sorted((GemmSchedule(by_name[row[0]], *row[1:]) for row in disk[repr(_kernel_key(p))]),
                           key=lambda s: (s.ukernel.name, s.mc, s.nc, s.kc, s.split_m, s.split_n))
            _ENUMERATED[p, target] = (Untiled(), *tiled)  # ties in cost: the first of this order
    return [_ENUMERATED[p, target] for p in problems]


def derive_schedules(problems: Sequence[GemmProblem], target: Target,
                     dtype: str) -> dict[tuple[Any, ...], list[list[Any]]]:
    """Run ``tensorize-gemm`` over the problems' facts (of one ``dtype``), memoizing nothing: per
    kernel key, the tiled schedules as rows (micro-kernel name, mc, nc, kc, split_m, split_n)."""
    egraph = EGraph()
    egraph.register(*target_facts(target, dtype), *[f for p in problems for f in problem_facts(p, target)])
    run_phase(egraph, Phase("schedules", TENSORIZE, max_iterations=2, max_nodes=MAX_NODES * len(problems),
                            max_seconds=2.0 * len(problems)))
    js = serialize(egraph)
    literal = functools.cache(lambda node_id: read_literal(js, node_id))
    kernels = {node["eclass"]: tuple(literal(c) for c in node["children"])
               for node in js["nodes"].values() if node["op"] == "GemmKernel"}
    rows: dict[tuple[Any, ...], list[list[Any]]] = {_kernel_key(p): [] for p in problems}
    for node in js["nodes"].values():
        if node["op"] == "Sched.tiled":
            name, _, _, *sizes = (literal(c) for c in node["children"][1:])
            rows[kernels[js["nodes"][node["children"][0]]["eclass"]]].append([name, *sizes])
    return rows


@functools.cache
def _disk_cache(target: Target, dtype: str) -> dict[str, list[list[Any]]]:
    """The schedules derived for ``target``'s facts and micro-kernels of ``dtype`` in earlier runs
    (a JSON file beside the host measurement), keyed by kernel; empty when there is none or it does
    not read. The file's name hashes the facts, the micro-kernels and this module's source, so a
    change to any of them starts a new one."""
    data = read_json(_cache_path(target, dtype))
    names = {u.name for u in target.microkernels}
    ok = isinstance(data, dict) and all(isinstance(rows, list) and all(_plausible(r, names, target.cores)
                                                                       for r in rows)
                                        for rows in data.values())
    return data if ok else {}


def _plausible(row: object, names: set[str], cores: int) -> bool:
    """Whether a cached row (micro-kernel name, mc, nc, kc, split_m, split_n) is one the rules could
    derive: a micro-kernel of the target, positive ints, packed blocks within ``BLOCK_MAX`` (they
    live on the stack) and at most one task per core."""
    if not (isinstance(row, list) and len(row) == 6 and row[0] in names
            and all(type(v) is int and v > 0 for v in row[1:])):
        return False
    _, mc, nc, kc, split_m, split_n = row
    return max(mc, nc) * kc * F32 <= BLOCK_MAX and split_m * split_n <= max(cores, 1)


def _cache_path(target: Target, dtype: str) -> Path:
    facts = json.dumps([hardware(target), [(u.name, u.mr, u.nr, u.dtype) for u in target.microkernels],
                        target.cores, dtype, Path(__file__).read_text()])
    return cache_dir() / f"schedules-{hashlib.sha256(facts.encode()).hexdigest()[:16]}.json"


def _save(target: Target, dtype: str, data: Mapping[str, list[list[Any]]]) -> None:
    """Write the cache (atomically, never through a symlink: ``cachefiles.write_json``)."""
    write_json(_cache_path(target, dtype), data)


def gemm_schedules(problem: GemmProblem, target: Target) -> list[Schedule]:
    """The schedules of ``problem`` on ``target``: Untiled() and every tiled schedule the rule
    enumerates."""
    return list(enumerate_schedules([problem], target)[0])


TINY_FLOPS = 2 * 32**3
"""Problems below this many flops stay untiled without enumerating (the cost model picks Untiled up
to a 32^3 GEMM on the hosts measured; the enumeration alone costs ~30 ms)."""


def priced_schedules(problems: Sequence[GemmProblem], target: Target,
                     ) -> list[tuple[tuple[Schedule, float], ...]]:
    """The llvm target's schedule templates for each of ``problems``, each schedule with the seconds
    its cost model predicts, cheapest first: Untiled and every tiled schedule ``tensorize-gemm``
    enumerates (below ``TINY_FLOPS``, Untiled alone). The model's extraction chooses among them
    (``tensoregg.extraction.alternatives``)."""
    enumerate_schedules([p for p in dict.fromkeys(problems) if p.flops >= TINY_FLOPS], target)  # batched
    return [_priced(p, target) for p in problems]


@functools.lru_cache(maxsize=4096)
def _priced(problem: GemmProblem, target: Target) -> tuple[tuple[Schedule, float], ...]:
    """One problem's ``priced_schedules`` (memoized: a model prices each problem for its encoded and
    its saturated e-graph, and many e-nodes share one problem)."""
    enumerated = enumerate_schedules([problem], target)[0] if problem.flops >= TINY_FLOPS else ()
    tiled = [s for s in enumerated if isinstance(s, GemmSchedule)]
    costs = [float(c) for c in gemm_cost(problem, tiled, target)] if tiled else []
    untiled: tuple[Schedule, float] = (Untiled(), float(untiled_cost(problem, target)))
    priced: list[tuple[Schedule, float]] = [*zip(tiled, costs), untiled]  # a tie: the first tiled one
    return tuple(sorted(priced, key=lambda pair: pair[1]))


@functools.lru_cache(maxsize=4096)
def choose_gemm_schedule(problem: GemmProblem, target: Target) -> Schedule:
    """The cheapest of ``priced_schedules``: how a contraction is tiled when no extraction chose
    (a graph compiled with ``optimize=False``, or lowered directly)."""
    return priced_schedules([problem], target)[0][0][0]
