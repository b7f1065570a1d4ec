"""Schedules as e-class alternatives: each contraction e-node becomes one e-node per schedule the
target's templates give for it, priced by the target's cost model, so the extraction that picks the
program also picks how each of its kernels is tiled (and Winograd versus a direct Conv is decided
with the costs of both forms' schedules).

A contraction e-node (an op whose compute definition is a GEMM-shaped reduction, found as the
lowering finds it: ``tensoregg.ir.lower.contraction_problem``) is re-priced as ``Untiled`` and gets
siblings in its e-class, one per tiled schedule: same op, inputs and attributes, a ``schedule`` and
that schedule's predicted seconds. Siblings differ only in their own cost, so any extractor takes the
cheapest of them; only the ``KEEP`` cheapest tiled ones enter the view (the ILP stays small), and
``Kernel`` records how many the templates gave. A ``Reprice`` hook (auto-tuning's records,
``tensoregg.tuning``) may replace a kernel's predicted prices with measured ones before that.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from tensoregg.extraction.greedy import constant_classes
from tensoregg.extraction.kernel_spec import KernelSpec
from tensoregg.extraction.view import EGraphView
from tensoregg.ir.graph import Node
from tensoregg.ir.lower import contraction_problem
from tensoregg.ir.schedules import GemmProblem, Pricer, Schedule, Untiled
from tensoregg.ir.target import Target
from tensoregg.ir.terms import CONSTRUCTORS, ENode
from tensoregg.ir.types import TensorType

KEEP = 4
"""Tiled alternatives per contraction e-node in the extraction's view (the cheapest)."""

Reprice = Callable[[KernelSpec, Sequence[tuple[Schedule, float]]], Sequence[tuple[Schedule, float]]]
"""Given a kernel and its schedules as the target's pricer priced them, the schedules to offer with
their seconds (``Untiled`` among them): measured ones where there are records, else the same."""


@dataclass(frozen=True)
class Kernel:
    """A contraction e-node and its schedule alternatives: (e-node id, schedule, seconds), the
    untiled one (the e-node itself) first, then the tiled ones cheapest first."""

    eclass: str
    spec: KernelSpec
    alternatives: tuple[tuple[str, Schedule, float], ...]
    enumerated: int
    """Schedules the target's templates gave (Untiled included)."""

    @property
    def op(self) -> str:
        return self.spec.op

    @property
    def problem(self) -> GemmProblem:
        return self.spec.problem


def add_schedules(view: EGraphView, costs: dict[str, float], target: Target, pricer: Pricer,
                  reprice: Reprice | None = None) -> dict[str, Kernel]:
    """Add the schedule alternatives of every contraction e-node of ``view`` (and their ``costs``),
    priced by ``pricer`` and then ``reprice``; returns the kernels by base e-node id. Nodes over
    constants only (folded, cost 0) and nodes that cannot be built (infinite cost) are left as they
    are."""
    types = {cid: ts[0] for cid, ts in view.types.items() if len(ts) == 1}
    specs: dict[tuple[object, ...], KernelSpec | None] = {}
    constant = constant_classes(view)
    found: list[tuple[str, ENode, KernelSpec]] = []
    for cid, nodes in view.classes.items():
        for node in nodes:
            if (node.op in CONSTRUCTORS and not CONSTRUCTORS[node.op].multi
                    and 0 < costs.get(node.id, 0.0) < float("inf")):
                spec = _spec(node, types, view, constant, specs)
                if spec is not None:
                    found.append((cid, node, spec))
    kernels: dict[str, Kernel] = {}
    split: dict[int, tuple[object, tuple[Schedule, float], list[tuple[Schedule, float]]]] = {}
    for (cid, node, spec), priced in zip(found, pricer([s.problem for _, _, s in found], target)):
        if reprice is not None:
            priced = reprice(spec, priced)
        held = split.get(id(priced))
        if held is None or held[0] is not priced:  # e-nodes of one problem share the pricer's list
            held = split[id(priced)] = (priced, next((s, c) for s, c in priced if not _tiled(s)),
                                        [(s, c) for s, c in priced if _tiled(s)][:KEEP])
        _, untiled, cheapest = held
        node.schedule, costs[node.id] = untiled
        alternatives = [(node.id, *untiled)]
        for k, (schedule, cost) in enumerate(cheapest):
            sibling = replace(node, id=f"{node.id}@{k}", schedule=schedule)
            view.classes[cid].append(sibling)
            costs[sibling.id] = cost
            alternatives.append((sibling.id, schedule, cost))
        kernels[node.id] = Kernel(cid, spec, tuple(alternatives), len(priced))
    return kernels


def _tiled(schedule: Schedule) -> bool:
    return not isinstance(schedule, Untiled)


def _spec(node: ENode, types: Mapping[str, TensorType], view: EGraphView, constant: Collection[str],
          memo: dict[tuple[object, ...], KernelSpec | None]) -> KernelSpec | None:
    """The node as a kernel, None if it is no GEMM (memoized by op, attributes, input types and
    constness: ``constant`` holds the e-classes computable at compile time)."""
    if any(c and c not in types for c in node.inputs):
        return None
    ctor = CONSTRUCTORS[node.op]
    key = (node.op, repr(sorted(node.attrs.items())), tuple(str(types.get(c)) for c in node.inputs),
           tuple(c in constant for c in node.inputs))
    if key not in memo:
        attrs = {a: (view.enc.consts[v] if ctor.opdef.attrs[a].kind == "tensor" and v else v)
                 for a, v in node.attrs.items()}
        as_node = Node(node.op, tuple(node.inputs), (node.eclass,), attrs, node.id, ctor.opdef.domain)
        try:
            problem = contraction_problem(ctor.opdef, as_node, types, constant)  # type: ignore[arg-type]
        except Exception:  # a definition that needs its constant inputs' values (Pad's pads,
            problem = None  # Gather's indices...) is no GEMM: nothing to price
        memo[key] = None if problem is None else KernelSpec(
            node.op, ctor.opdef.domain, attrs, tuple(types[c] if c else None for c in node.inputs),
            tuple(bool(c) and c in constant for c in node.inputs), problem)
    return memo[key]


def cheapest_schedules(kernels: Mapping[str, Kernel], choice: Mapping[str, str],
                       costs: Mapping[str, float]) -> dict[str, str]:
    """``choice`` with every chosen contraction e-node replaced by its cheapest alternative."""
    out = dict(choice)
    for cid, node_id in choice.items():
        kernel = kernels.get(node_id)
        if kernel is not None:
            out[cid] = min(kernel.alternatives, key=lambda a: costs[a[0]])[0]
    return out


def chosen_kernels(kernels: Mapping[str, Kernel], choice: Mapping[str, str],
                   used: Collection[str]) -> list[tuple[Kernel, str]]:
    """The kernels whose e-node (or a sibling) ``choice`` took in the e-classes ``used`` (those the
    program reaches), with the chosen alternative's id."""
    chosen = {choice[c] for c in used if c in choice}
    return [(k, node_id) for k in kernels.values() for node_id, _, _ in k.alternatives if node_id in chosen]


def format_kernels(picked: Sequence[tuple[Kernel, str]], labels: Mapping[str, str]) -> list[str]:
    """One block per chosen kernel: its problem, then each alternative with its cost, ``*`` on the
    chosen one (``labels``: e-class -> the value name it became)."""
    lines = []
    for kernel, chosen in picked:
        p = kernel.problem
        name = labels.get(kernel.eclass, kernel.eclass)
        lines.append(f"{kernel.op} %{name}: GEMM {p.batch}x{p.m}x{p.n}x{p.k} "
                     f"({kernel.enumerated} schedules, {len(kernel.alternatives)} kept)")
        for node_id, schedule, cost in sorted(kernel.alternatives, key=lambda a: a[2]):
            mark = "*" if node_id == chosen else " "
            lines.append(f"  {mark} {cost * 1e6:10.1f} us  {schedule}")
    return lines
