"""``tensoregg.explain``: what the optimizer did to a model, for people and for tools."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tensoregg.ir.graph import Graph
from tensoregg.optimize import OptimizeReport
from tensoregg.progress import stage

if TYPE_CHECKING:
    from tensoregg.rules import Family
    from tensoregg.targets import Target


@dataclass
class Explanation:
    """The optimization of one model: phases, limits hit, e-graph size, rules fired, estimated cost
    before and after, and the graphs on both sides."""

    target: str
    report: OptimizeReport
    before: Graph
    after: Graph
    plan: Any = None
    """What the target decided about ``after`` before code generation (``Registration.plan``;
    ``accel``: each node's placement), or None."""

    def op_counts(self) -> dict[str, dict[str, int]]:
        return {"before": dict(Counter(n.op for n in self.before.nodes)),
                "after": dict(Counter(n.op for n in self.after.nodes))}

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, **self.report.to_dict(), "ops": self.op_counts(),
                "graph": str(self.after), **({"plan": self.plan.to_dict()} if self.plan is not None else {})}

    def __str__(self) -> str:
        counts = self.op_counts()
        changed = sorted(set(counts["before"]) | set(counts["after"]))
        delta = ", ".join(f"{op} {counts['before'].get(op, 0)}->{counts['after'].get(op, 0)}"
                          for op in changed if counts["before"].get(op, 0) != counts["after"].get(op, 0))
        return "\n".join([f"target {self.target}", str(self.report),
                          f"ops: {len(self.before.nodes)} -> {len(self.after.nodes)} nodes"
                          + (f" ({delta})" if delta else " (unchanged)"),
                          "extracted program:", str(self.after),
                          *([str(self.plan)] if self.plan is not None else [])])


def explain(model: Any, target: str | Target | None = None, *,
            input_shapes: Mapping[str, Sequence[int | str]] | None = None,
            rule_families: Sequence[str | Family] | None = None) -> Explanation:
    """Import ``model`` (as ``compile`` does), optimize it for ``target`` and explain the result."""
    from tensoregg.api import resolve_target, to_graph
    from tensoregg.optimize import optimize

    entry, description = resolve_target(target)
    with stage("import"):
        before = to_graph(model, input_shapes)
    after, report = optimize(before, description, rule_families, schedules=entry.schedules)
    with stage("plan"):
        plan = entry.plan(after, description) if entry.plan is not None else None
    return Explanation(entry.name, report, before, after, plan)
