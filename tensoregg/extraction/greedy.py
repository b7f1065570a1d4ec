"""DAG-aware greedy extraction: each e-class keeps the cheapest *set* of e-classes it needs, so a
subterm shared by several users is paid for once (the "faster greedy DAG" extractor of
extraction-gym). Not optimal in general (see ``ilp``), linear-ish in practice."""

from __future__ import annotations

from collections import deque

from tensoregg.extraction.cost import CostModel
from tensoregg.extraction.view import EGraphView
from tensoregg.ir.target import Target
from tensoregg.ir.terms import GET, LEAVES, ENode


def constant_classes(view: EGraphView) -> set[str]:
    """E-classes computable at compile time: constants, and nodes over constants only (a worklist:
    a class is looked at again only when one of its users' inputs became constant)."""
    users = _users(view)
    const = set(view.consts)
    work = deque(const)
    while work:
        for n in users.get(work.popleft(), ()):
            if n.eclass not in const and _over_constants(n, const):
                const.add(n.eclass)
                work.append(n.eclass)
    return const


def _over_constants(node: ENode, const: set[str]) -> bool:
    return node.op not in LEAVES and bool(node.inputs) and all(c in const for c in node.inputs if c)


def _users(view: EGraphView) -> dict[str, list[ENode]]:
    """E-class -> the e-nodes that take it as an input."""
    users: dict[str, list[ENode]] = {}
    for nodes in view.classes.values():
        for n in nodes:
            for c in n.inputs:
                if c:
                    users.setdefault(c, []).append(n)
    return users


def node_costs(view: EGraphView, model: CostModel, target: Target) -> dict[str, float]:
    """The cost of every e-node: leaves, gets and nodes over constants only (folded at compile
    time) are free; a node of a type-less e-class can't be built."""
    const = constant_classes(view)
    costs: dict[str, float] = {}
    for cid, nodes in view.classes.items():
        for n in nodes:
            if cid not in view.types:
                costs[n.id] = float("inf")
            elif n.op in LEAVES or n.op == GET or _over_constants(n, const):
                costs[n.id] = 0.0
            else:
                inputs = [view.types[c][0] if c else None for c in n.inputs]
                costs[n.id] = model(n, inputs, view.types[cid], target)
    return costs


def extract_greedy(view: EGraphView, costs: dict[str, float]) -> dict[str, str]:
    """Choose one e-node per reachable e-class; returns e-class -> e-node id."""
    users = _users(view)
    best: dict[str, tuple[float, dict[str, float], str]] = {}
    queue = deque(cid for cid, nodes in view.classes.items() if any(not n.inputs for n in nodes))
    queued = set(queue)
    while queue:
        cid = queue.popleft()
        queued.discard(cid)
        improved = False
        for n in view.classes[cid]:
            if any(c and c not in best for c in n.inputs):
                continue
            deps = _merge([best[c][1] for c in n.inputs if c])
            if cid in deps:
                continue  # choosing n would make the program cyclic
            deps[cid] = costs[n.id]
            total = sum(deps.values())
            if cid not in best or total < best[cid][0]:
                best[cid] = (total, deps, n.id)
                improved = True
        if improved:
            for user in users.get(cid, []):
                if user.eclass not in queued:
                    queue.append(user.eclass)
                    queued.add(user.eclass)
    return {cid: node_id for cid, (_, _, node_id) in best.items()}


def _merge(sets: list[dict[str, float]]) -> dict[str, float]:
    if not sets:
        return {}
    sets = sorted(sets, key=len, reverse=True)
    merged = dict(sets[0])
    for s in sets[1:]:
        merged.update(s)
    return merged


def dag_cost(view: EGraphView, choice: dict[str, str], costs: dict[str, float]) -> float:
    """The cost of the program ``choice`` selects: each reachable e-class paid once."""
    by_id = {n.id: n for nodes in view.classes.values() for n in nodes}
    seen: set[str] = set()
    total = 0.0
    stack = list(view.roots)
    while stack:
        cid = stack.pop()
        if not cid or cid in seen:
            continue
        seen.add(cid)
        node = by_id[choice[cid]]
        total += costs[node.id]
        stack += node.inputs
    return total
