"""The saturation scheduler: rulesets run in phases, one iteration at a time, within limits.

egglog has no node or time limit of its own, so each phase drives single iterations from Python and
stops on the first of: saturation, its iteration limit, its e-node limit, its time limit. It also
stops *before* an iteration that the last iteration's growth says would cross the node or time
limit, since one iteration can multiply the e-graph (see notes/egglog.md). The e-graph always still
holds the program it started from, so extraction after any stop yields a correct program.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from egglog import EGraph, Ruleset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """One phase of saturation and its limits."""

    name: str
    ruleset: Ruleset
    max_iterations: int = 16
    max_nodes: int = 200_000
    max_seconds: float = 5.0


@dataclass
class PhaseReport:
    name: str
    stopped_by: str
    """``saturated``, ``iterations``, ``nodes``, ``time``, or ``nodes (projected)``/``time (projected)``."""
    iterations: int = 0
    nodes_before: int = 0
    nodes_after: int = 0
    seconds: float = 0.0
    fired: dict[str, int] = field(default_factory=dict)
    """Matches per rule name, summed over iterations."""
    limits: dict[str, float] = field(default_factory=dict)
    """The phase's ``iterations``, ``nodes`` and ``seconds`` limits."""

    def __str__(self) -> str:
        top = ", ".join(f"{k} x{v}" for k, v in sorted(self.fired.items(), key=lambda kv: -kv[1])[:8] if v)
        limits = "/".join(f"{v:g} {k}" for k, v in self.limits.items())
        return (f"phase {self.name}: {self.iterations} iterations, stopped by {self.stopped_by}"
                + (f" (limits {limits})" if limits else "") + ", "
                f"table rows {self.nodes_before} -> {self.nodes_after}, {self.seconds * 1e3:.1f} ms"
                + (f"; fired {top}" if top else ""))


def node_count(egraph: EGraph) -> int:
    """Rows in all function tables: the e-graph's size as egglog stores it."""
    return sum(n for _, n in egraph.all_function_sizes())


def run_phase(egraph: EGraph, phase: Phase) -> PhaseReport:
    nodes = node_count(egraph)
    report = PhaseReport(phase.name, "iterations", nodes_before=nodes, nodes_after=nodes,
                         limits={"iterations": phase.max_iterations, "nodes": phase.max_nodes,
                                 "seconds": phase.max_seconds})
    start = time.perf_counter()
    growth, last_seconds = 1.0, 0.0
    while report.iterations < phase.max_iterations:
        elapsed = time.perf_counter() - start
        if nodes * growth > phase.max_nodes:
            report.stopped_by = "nodes" if nodes > phase.max_nodes else "nodes (projected)"
            break
        if elapsed + last_seconds * growth > phase.max_seconds:
            report.stopped_by = "time" if elapsed > phase.max_seconds else "time (projected)"
            break
        t0 = time.perf_counter()
        run = egraph.run(phase.ruleset)
        last_seconds = time.perf_counter() - t0
        report.iterations += 1
        for decl, matches in run.num_matches_per_rule.items():
            name = getattr(decl, "name", None) or str(decl)[:60]
            report.fired[name] = report.fired.get(name, 0) + matches
        after = node_count(egraph)
        growth, nodes = max(1.0, after / max(nodes, 1)), after
        if not run.updated:
            report.stopped_by = "saturated"
            break
    report.nodes_after = nodes
    report.seconds = time.perf_counter() - start
    log.info("%s", report)
    return report


def saturate(egraph: EGraph, phases: list[Phase]) -> list[PhaseReport]:
    """Run ``phases`` in order; returns one report per phase."""
    return [run_phase(egraph, phase) for phase in phases]
