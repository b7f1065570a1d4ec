"""The optimization step of ``compile``: encode -> saturate in phases -> extract -> decode."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tensoregg.errors import CompileError, ValidationError
from tensoregg.ir.fold import fold_constants
from tensoregg.ir.graph import Graph
from tensoregg.progress import stage
from tensoregg.targets import Target

if TYPE_CHECKING:
    from tensoregg.extraction.alternatives import Reprice
    from tensoregg.extraction.kernel_spec import KernelSpec
    from tensoregg.extraction.view import EGraphView
    from tensoregg.ir.equivalence import Difference
    from tensoregg.ir.schedules import Pricer, Schedule
    from tensoregg.rules import Family

log = logging.getLogger(__name__)

ILP_MAX_ENODES = 20_000
"""Above this many e-nodes extraction is greedy only (the ILP grows with the e-graph)."""
ILP_SECONDS = 3.0
"""HiGHS's time limit; at the limit its best solution (or greedy's, if cheaper) is used."""
VALIDATION_DRAWS = 3
"""Random inputs translation validation runs both programs on."""
NARROWING_RUNS = 12
"""Most optimizations translation validation reruns (on subsets of the rules that fired) to narrow
down the rules behind a difference."""


@dataclass
class OptimizeReport:
    """What one optimization did: per-phase reports, e-graph size, estimated cost, timings."""

    phases: list = field(default_factory=list)
    eclasses: int = 0
    enodes: int = 0
    cost_before: float = 0.0
    cost_after: float = 0.0
    kept_original: bool = False
    extractor: str = "greedy"
    """``greedy``, or ``ilp <status>`` (see ``tensoregg.extraction.ilp.ILPReport``)."""
    seconds: dict[str, float] = field(default_factory=dict)
    kernels: list[str] = field(default_factory=list)
    """Per contraction of the extracted program: its schedule alternatives with their predicted
    cost, the chosen one marked ``*`` (``tensoregg.extraction.alternatives.format_kernels``)."""
    chosen: list[tuple[KernelSpec, Schedule]] = field(default_factory=list)
    """The same kernels as objects, each with its chosen schedule (what auto-tuning measures)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for ``tensoregg explain --json``)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "chosen"}
        return {**fields, "phases": [dataclasses.asdict(p) for p in self.phases]}

    def __str__(self) -> str:
        lines = [str(p) for p in self.phases]
        lines.append(f"e-graph: {self.eclasses} e-classes, {self.enodes} e-nodes; {self.extractor} "
                     f"extraction, estimated cost {self.cost_before * 1e3:.3f} ms -> "
                     f"{self.cost_after * 1e3:.3f} ms"
                     + (" (kept the original program)" if self.kept_original else ""))
        lines.append("time: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in self.seconds.items()))
        if self.kernels:
            lines += ["schedules (predicted time of each alternative, * chosen):", *self.kernels]
        return "\n".join(lines)


def resolve_families(families: Sequence[str | Family]) -> list[Family]:
    """Rule families by name (``tensoregg.rules.RULESETS``) or given directly (a user's own Family)."""
    from tensoregg.rules import RULESETS, Family

    unknown = [f for f in families if not isinstance(f, Family) and f not in RULESETS]
    if unknown:
        raise CompileError(f"unknown rule families {unknown}; known: {sorted(RULESETS)}")
    return [f if isinstance(f, Family) else RULESETS[f] for f in families]


def optimize(graph: Graph, target: Target, families: Sequence[str | Family] | None = None, *,
             schedules: Pricer | None = None, reprice: Reprice | None = None) -> tuple[Graph, OptimizeReport]:
    """Saturate ``graph`` with the target's rule families (or ``families``: names or Family objects)
    and extract the cheapest program; with ``schedules`` (the target's priced schedule templates),
    every contraction's schedule is an alternative in its e-class, so extraction also picks how each
    kernel is tiled (the result's contraction nodes carry their ``schedule``); ``reprice`` replaces
    the predicted prices of the kernels it has measurements of (``tensoregg.tuning``).

    The result is never estimated costlier than the input: if extraction finds nothing better, the
    input comes back (its contractions scheduled). An extracted program whose outputs are typed
    differently from the input's means an unsound rule and raises CompileError.
    """
    from tensoregg.ir.terms import scratch_egraph

    chosen = resolve_families(families if families is not None else target.rule_families)
    with scratch_egraph([family.ruleset for family in chosen]) as egraph:
        return _optimize(egraph, graph, target, chosen, schedules, reprice)


def _optimize(egraph: Any, graph: Graph, target: Target, chosen: list[Family], schedules: Pricer | None,
              reprice: Reprice | None) -> tuple[Graph, OptimizeReport]:
    """``optimize`` in ``egraph``, an empty e-graph, with the rule families ``chosen``."""
    from tensoregg.extraction.alternatives import (
        Kernel,
        add_schedules,
        cheapest_schedules,
        chosen_kernels,
        format_kernels,
    )
    from tensoregg.extraction.cost import analytic_cost
    from tensoregg.extraction.greedy import dag_cost, extract_greedy, node_costs
    from tensoregg.extraction.ilp import extract_ilp
    from tensoregg.extraction.view import build_view
    from tensoregg.ir.terms import decode, encode, first_choice, serialize
    from tensoregg.rules import Phase, saturate

    report = OptimizeReport()
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.seconds[name] = now - clock
        clock = now

    def priced(view: EGraphView) -> tuple[dict[str, float], dict[str, Kernel]]:
        costs = node_costs(view, analytic_cost, target)
        return costs, add_schedules(view, costs, target, schedules, reprice) if schedules is not None else {}

    enc = encode(graph, egraph)
    js0 = serialize(enc.egraph)
    view0 = build_view(js0, enc)
    costs0, kernels0 = priced(view0)
    original = cheapest_schedules(kernels0, first_choice(js0), costs0)
    report.cost_before = dag_cost(view0, original, costs0)
    lap("encode")
    with stage("saturate", total=len(chosen)) as advance:
        for family in chosen:
            report.phases += saturate(enc.egraph, [Phase(family.name, family.ruleset)])
            advance()
    lap("saturate")
    with stage("extract"):
        js = serialize(enc.egraph)
        view = build_view(js, enc)
        costs, kernels = priced(view)
        choice = extract_greedy(view, costs)
        report.eclasses, report.enodes = len(view.classes), sum(len(v) for v in view.classes.values())
        if report.enodes <= ILP_MAX_ENODES:
            choice, ilp = extract_ilp(view, costs, time_limit=ILP_SECONDS, warm_start=choice)
            report.extractor = f"ilp {ilp.status}"
        report.cost_after = dag_cost(view, choice, costs)
        if report.cost_after >= report.cost_before * (1 - 1e-9):  # equal up to summation order
            report.kept_original, report.cost_after = True, report.cost_before
            js, view, choice, kernels = js0, view0, original, kernels0
            if not kernels:
                lap("extract")
                return fold_constants(graph), report
        names: dict[str, str] = {}
        result = fold_constants(decode(js, choice, enc, view.classes, names))
        picked = chosen_kernels(kernels, choice, names)
        report.kernels = format_kernels(picked, names)
        report.chosen = [(k.spec, next(s for i, s, _ in k.alternatives if i == node_id))
                         for k, node_id in picked]
        lap("extract")
    before = [graph.types[o] for o in graph.outputs]
    after = [result.types[o] for o in result.outputs]
    if before != after:
        raise CompileError(f"optimized program's outputs are {after}, the input's {before}: "
                           "a rule is unsound")
    log.info("%s", report)
    return result, report


def fired_rules(report: OptimizeReport) -> list[str]:
    """The rules that matched at least once in ``report``'s saturation, in the order they first did."""
    return list(dict.fromkeys(name for phase in report.phases for name, n in phase.fired.items() if n))


def validate(original: Graph, optimized: Graph, report: OptimizeReport, target: Target,
             families: Sequence[str | Family] | None = None, *, schedules: Pricer | None = None,
             seed: int = 0) -> None:
    """Translation validation: run ``optimized`` (what ``optimize`` extracted from ``original`` with
    these families) and ``original`` with the reference interpreter on seeded random inputs, and raise
    ValidationError, naming the output, the error and the rules involved, if an output differs
    beyond its dtype's tolerance. The rules are those that fired, narrowed by optimizing again with
    halves of them (``NARROWING_RUNS`` at most) while a half alone still yields a difference."""
    from tensoregg.ir.equivalence import compare

    with stage("validate"):
        difference = compare(original, optimized, seed=seed, draws=VALIDATION_DRAWS)
    if difference is None:
        return
    fired = fired_rules(report)
    with stage("narrow"):
        culprits, difference = _narrow(original, target, families, schedules, fired, difference, seed)
    which = ("the rules that fired" if culprits == fired
             else f"narrowed to {len(culprits)} of the {len(fired)} that fired")
    raise ValidationError(f"the optimized program differs from the imported one: {difference}; "
                          f"{which}: {', '.join(culprits) or '(none fired)'}",
                          output=difference.output, error=difference.error, rules=culprits)


def _narrow(original: Graph, target: Target, families: Sequence[str | Family] | None,
            schedules: Pricer | None, rules: list[str], difference: Difference,
            seed: int) -> tuple[list[str], Difference]:
    """A subset of ``rules`` whose rules alone still make the optimized program differ (halving while
    one half does), and that difference."""
    from tensoregg.ir.equivalence import compare
    from tensoregg.rules import Family

    chosen = resolve_families(families if families is not None else target.rule_families)
    runs = 0

    def differs(subset: list[str]) -> Difference | None:
        nonlocal runs
        runs += 1
        keep = set(subset)
        # a Family subclass (layout's) adds rules of its own: narrowing keeps its class
        parts = [type(f)(f.name, f.doc, [r for r in f.rules if r.name in keep]) for f in chosen]
        graph, _ = optimize(original, target, [f for f in parts if isinstance(f, Family)],
                            schedules=schedules)
        return compare(original, graph, seed=seed, draws=VALIDATION_DRAWS)

    while len(rules) > 1 and runs + 2 <= NARROWING_RUNS:
        half = len(rules) // 2
        for part in (rules[:half], rules[half:]):
            found = differs(part)
            if found is not None:
                rules, difference = part, found
                break
        else:
            break
    return rules, difference
