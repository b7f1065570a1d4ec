"""Exact DAG extraction as a 0-1 integer program, solved by HiGHS (``scipy.optimize.milp``).

Variables: a binary ``x_n`` per candidate e-node and ``y_c`` per e-class. Constraints: every root
class is chosen (``y_c = 1``); a chosen class picks exactly one of its e-nodes (``y_c = sum x_n``);
a chosen e-node needs each of its input classes (``x_n <= y_c'``). The objective ``sum cost_n x_n``
pays each chosen e-node once, so a subterm shared by several users is paid once (the DAG cost).

Acyclicity uses order variables, restricted to where cycles can occur. A cycle of chosen e-nodes
lies inside one strongly connected component (SCC) of the class graph (class -> input class of
any candidate e-node), and after pruning most SCCs are single classes. Only classes in an SCC of
``k >= 2`` classes get a continuous level ``l_c`` in ``[0, k-1]``, and only e-nodes whose input
lies in their own SCC get ``l_c' + 1 <= l_c + k (1 - x_n)``. One solve then suffices and every
feasible point HiGHS finds, including one it returns at the time limit, is an acyclic program.
Lazy cycle cuts fit HiGHS worse: a cycle is a "free" program (it needs nothing below it), so the
unconstrained optimum picks cycles all over the e-graph and the loop re-solves once per round
(12 to 49 rounds, 3-36x slower than this on light models and a QKV-like graph with a stress
family); a time-limited round may stop on a cyclic incumbent, and scipy's wrapper cannot seed a
round with the last solution. Order variables on *every* class (the textbook form, big-M = number
of classes) were 4-50x slower than the SCC-restricted ones on the same e-graphs.

Pruning before the model: e-nodes with infinite cost (untyped classes), e-nodes that take their
own class as input (never acyclic), e-nodes over classes with no acyclic derivation at all, and
classes the roots cannot reach through what is left.

The result is never worse than greedy: the greedy choice (or ``warm_start``) is the fallback when
HiGHS has no solution, the comparison for the one it returns, and an upper bound on the
objective that lets HiGHS prune from the start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp
from scipy.sparse import coo_array

from tensoregg.errors import CompileError
from tensoregg.extraction.greedy import dag_cost, extract_greedy
from tensoregg.extraction.view import EGraphView
from tensoregg.ir.terms import ENode

OPTIMAL, TIME_LIMIT_FEASIBLE, FALLBACK_GREEDY = "optimal", "time-limit-feasible", "fallback-greedy"


@dataclass
class ILPReport:
    """How an ILP extraction went."""

    status: str
    """``optimal`` (HiGHS proved that nothing is cheaper than the returned choice: its own, or
    greedy's when that costs as much), ``time-limit-feasible`` (HiGHS stopped at the time limit with
    a solution cheaper than greedy's, returned) or ``fallback-greedy`` (it stopped with no solution
    or none cheaper: greedy's was returned)."""
    objective: float
    """DAG cost of the returned choice."""
    greedy_objective: float
    """DAG cost of the greedy choice (of ``warm_start`` when one was given)."""
    bound: float
    """HiGHS's lower bound on the optimum (``-inf`` when it has none)."""
    variables: int
    constraints: int
    seconds: float
    message: str
    """HiGHS's own status message."""

    def __str__(self) -> str:
        return (f"ilp {self.status}: cost {self.objective:.6g} (greedy {self.greedy_objective:.6g}, "
                f"bound {self.bound:.6g}); {self.variables} variables, {self.constraints} constraints, "
                f"{self.seconds:.3f} s; HiGHS: {self.message}")


def extract_ilp(view: EGraphView, costs: dict[str, float], *, time_limit: float = 10.0,
                warm_start: Mapping[str, str] | None = None) -> tuple[dict[str, str], ILPReport]:
    """The cheapest acyclic choice (e-class -> e-node id) under DAG cost, within ``time_limit``
    seconds of HiGHS; ``warm_start`` is a known acyclic choice (greedy's by default)."""
    start = time.perf_counter()
    baseline = dict(warm_start) if warm_start is not None else extract_greedy(view, costs)
    baseline_cost = dag_cost(view, baseline, costs)
    model = _Model(_candidates(view, costs), costs, view.roots, baseline_cost)
    res = model.solve(time_limit)
    choice, status = baseline, FALLBACK_GREEDY
    if res.x is not None and res.status in (0, 1):  # optimal, or stopped by the time limit
        found = model.choice(res.x, view.roots)
        better = dag_cost(view, found, costs) < baseline_cost  # on a tie keep the known program
        choice = found if better else baseline
        status = OPTIMAL if res.status == 0 else TIME_LIMIT_FEASIBLE if better else FALLBACK_GREEDY
    bound = res.mip_dual_bound
    report = ILPReport(status, dag_cost(view, choice, costs), baseline_cost,
                       -math.inf if bound is None else bound / model.scale, model.n_vars,
                       model.n_rows, time.perf_counter() - start, str(res.message))
    return choice, report


def _candidates(view: EGraphView, costs: dict[str, float]) -> dict[str, list[ENode]]:
    """Reachable e-classes -> their e-nodes that can be part of an acyclic program."""
    usable = {cid: [n for n in nodes if math.isfinite(costs[n.id]) and cid not in n.inputs]
              for cid, nodes in view.classes.items()}
    grounded = _grounded(usable)
    missing = [r for r in view.roots if r not in grounded]
    if missing:
        raise CompileError(f"e-classes {missing} of the program's outputs have no acyclic, typed e-node")
    kept: dict[str, list[ENode]] = {}
    stack = list(view.roots)
    while stack:
        cid = stack.pop()
        if cid in kept:
            continue
        kept[cid] = [n for n in usable[cid] if all(not c or c in grounded for c in n.inputs)]
        stack += [c for n in kept[cid] for c in n.inputs if c and c not in kept]
    return kept


def _grounded(usable: Mapping[str, list[ENode]]) -> set[str]:
    """Classes with an acyclic derivation: bottom-up from the leaves, each e-node counting down the
    inputs not yet derived."""
    waiting = {n.id: len({c for c in n.inputs if c}) for nodes in usable.values() for n in nodes}
    users: dict[str, list[ENode]] = {}
    for nodes in usable.values():
        for n in nodes:
            for c in {c for c in n.inputs if c}:
                users.setdefault(c, []).append(n)
    ready = [n.eclass for nodes in usable.values() for n in nodes if not waiting[n.id]]
    grounded: set[str] = set()
    while ready:
        cid = ready.pop()
        if cid in grounded:
            continue
        grounded.add(cid)
        for user in users.get(cid, []):
            waiting[user.id] -= 1
            if not waiting[user.id]:
                ready.append(user.eclass)
    return grounded


def _cyclic_components(cands: Mapping[str, list[ENode]]) -> list[list[str]]:
    """Strongly connected components of at least two classes in the class graph (Tarjan's
    algorithm, iterative: e-graphs of deep networks overflow Python's recursion limit)."""
    edges = {cid: sorted({c for n in nodes for c in n.inputs if c}) for cid, nodes in cands.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            cid, i = work.pop()
            if i == 0:
                index[cid] = low[cid] = len(index)
                stack.append(cid)
                on_stack.add(cid)
            if i < len(edges[cid]):
                work.append((cid, i + 1))
                child = edges[cid][i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[cid] = min(low[cid], index[child])
                continue
            if low[cid] == index[cid]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == cid:
                        break
                if len(component) > 1:
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[cid])
    return components


class _Model:
    """The integer program over the candidates: columns are x (e-nodes), y (classes), then the
    levels of classes in cyclic components; each row is (coefficients by column, lower, upper). The
    objective is bounded by ``cutoff``, the cost of a known solution."""

    def __init__(self, cands: Mapping[str, list[ENode]], costs: dict[str, float], roots: list[str],
                 cutoff: float) -> None:
        self.nodes = [n for nodes in cands.values() for n in nodes]
        self.x = {n.id: k for k, n in enumerate(self.nodes)}
        self.y = {cid: len(self.nodes) + k for k, cid in enumerate(cands)}
        positive = [costs[n.id] for n in self.nodes if costs[n.id] > 0]
        # the cheapest e-node costs 1 (the largest at most 1e6): HiGHS's absolute tolerances stay meaningful
        self.scale = 1.0 / max(min(positive), max(positive) * 1e-6) if positive else 1.0
        self.rows: list[tuple[dict[int, float], float, float]] = []
        for cid, nodes in cands.items():
            self.rows.append(({self.y[cid]: 1.0, **{self.x[n.id]: -1.0 for n in nodes}}, 0.0, 0.0))
            for n in nodes:
                for child in {c for c in n.inputs if c}:
                    self.rows.append(({self.x[n.id]: 1.0, self.y[child]: -1.0}, -np.inf, 0.0))
        self.level_bounds: list[float] = []
        for component in _cyclic_components(cands):
            self._order(component, cands)
        self.n_vars = len(self.nodes) + len(self.y) + len(self.level_bounds)
        self.cost = np.zeros(self.n_vars)
        self.cost[:len(self.nodes)] = [costs[n.id] * self.scale for n in self.nodes]
        self.lower = np.zeros(self.n_vars)
        self.lower[[self.y[r] for r in roots]] = 1.0
        objective = {k: c for k, c in enumerate(self.cost[:len(self.nodes)]) if c}
        self.rows.append((objective, -np.inf, cutoff * self.scale * (1 + 1e-9)))
        self.n_rows = len(self.rows)

    def _order(self, component: list[str], cands: Mapping[str, list[ENode]]) -> None:
        """Levels for one cyclic component: an e-node chosen in class p over class c of the same
        component forces level(c) + 1 <= level(p)."""
        k = len(component)
        base = len(self.nodes) + len(self.y) + len(self.level_bounds)
        level = {cid: base + i for i, cid in enumerate(component)}
        self.level_bounds += [k - 1.0] * k
        for cid in component:
            for n in cands[cid]:
                for child in {c for c in n.inputs if c in level}:
                    self.rows.append(({level[cid]: 1.0, level[child]: -1.0, self.x[n.id]: -float(k)},
                                      1.0 - k, np.inf))

    def solve(self, time_limit: float) -> OptimizeResult:
        """Run HiGHS for at most ``time_limit`` seconds."""
        n_binary = len(self.nodes) + len(self.y)
        r, c, v = zip(*[(i, col, val) for i, (coeffs, _, _) in enumerate(self.rows)
                        for col, val in coeffs.items()])
        matrix = coo_array((v, (r, c)), shape=(self.n_rows, self.n_vars)).tocsr()
        constraints = LinearConstraint(matrix, [lo for _, lo, _ in self.rows], [hi for _, _, hi in self.rows])
        upper = np.concatenate([np.ones(n_binary), self.level_bounds])
        integrality = np.concatenate([np.ones(n_binary), np.zeros(len(self.level_bounds))])
        return milp(self.cost, integrality=integrality, bounds=Bounds(self.lower, upper),
                    constraints=constraints, options={"time_limit": max(time_limit, 0.0), "mip_rel_gap": 0.0})

    def choice(self, x: np.ndarray, roots: list[str]) -> dict[str, str]:
        """The chosen e-node of every class reachable from ``roots`` through chosen e-nodes."""
        picked = {n.eclass: n for n in self.nodes if x[self.x[n.id]] > 0.5}
        choice: dict[str, str] = {}
        stack = list(roots)
        while stack:
            cid = stack.pop()
            if cid and cid not in choice:
                choice[cid] = picked[cid].id
                stack += picked[cid].inputs
        return choice
