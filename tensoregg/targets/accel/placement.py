"""Placement by extraction: which nodes of an optimized Graph run on the accelerator and which on
the CPU beside it, at the least estimated total time (``docs/accelerator.md``, "Placement").

Every value ``v`` gets one e-class per device, ``v@cpu`` and ``v@accel``, and every node one per
device that can run it, ``#i@cpu`` and ``#i@accel``. A value's class holds its producer on that
device (a node class) and a transfer from the other device's class; a node's class holds the node
reading its inputs from that device's classes. The program's outputs are roots on the CPU, its
inputs leaves there, constants leaves on both (weights are packed once, offline). Costs, in seconds:
a node on the accelerator its kernel's static estimate (``estimate``: the blocking ``tensorize.plan``
picks, GEMM-core cycles against DMA bytes over the bus, at the clock), on the CPU the analytic
roofline (``tensoregg.extraction.cost.analytic_cost``) over the host CPU's description
(``host_description``: the Accel's ``host_*`` facts), and a transfer ``Accel.transfer_seconds`` of
the value's bytes. The transfers make the choice a DAG, not a tree: the exact ILP extractor
(``tensoregg.extraction.ilp``) pays each chosen class once, so a value moved once and read by
several nodes pays once. A node may come out on both devices where computing it twice is cheaper
than moving its result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from tensoregg.errors import CompileError, UnsupportedOperator
from tensoregg.extraction.cost import analytic_cost
from tensoregg.extraction.ilp import extract_ilp
from tensoregg.extraction.view import EGraphView
from tensoregg.ir import Graph
from tensoregg.ir.compute.expr import compute_of
from tensoregg.ir.graph import Node
from tensoregg.ir.ops.nn import conv_window
from tensoregg.ir.registry import get_op
from tensoregg.ir.terms import ENode
from tensoregg.targets import Target
from tensoregg.targets.accel.conv import direct_plan
from tensoregg.targets.accel.lower import conv_geometry, lowerable
from tensoregg.targets.accel.machines import Accel
from tensoregg.targets.accel.tensorize import plan

ACCEL, CPU = "accel", "cpu"
ILP_SECONDS = 3.0
"""HiGHS's time limit for a placement (at the limit its best placement, or greedy's, is used)."""


@dataclass(frozen=True)
class Estimate:
    """A node's kernel on the accelerator as placement prices it, before anything runs."""

    cycles: float
    dma_bytes: int
    """Bytes the DMA moves: inputs, weights (each as often as the blocking reloads them), outputs."""


@dataclass(frozen=True)
class Transfer:
    """A value moved between the devices: its name, where to (``accel`` or ``cpu``), its bytes and
    the estimated seconds."""

    value: str
    to: str
    nbytes: int
    seconds: float


@dataclass
class Placement:
    """Where each node of a Graph runs (in the Graph's node order: the devices, usually one, and for
    the CPU which target runs it), the values moved between the devices, the estimated costs."""

    devices: list[tuple[str, ...]]
    engines: list[str]
    """The CPU target of each node (the first of ``Accel.cpu_targets`` that runs it; "" if none)."""
    transfers: list[Transfer]
    costs: list[dict[str, float]]
    """Each node's estimated seconds on each device that can run it."""
    estimates: dict[int, Estimate] = field(default_factory=dict)
    """The accelerator kernel of each node the accelerator can run, by node position."""
    seconds: float = 0.0
    """The estimated total: the chosen nodes' and the transfers'."""
    extractor: str = ""
    """How the ILP extraction ended (``tensoregg.extraction.ilp.ILPReport.status``)."""


def host_description(config: Accel) -> Target:
    """The CPU beside the accelerator, as the analytic cost model reads it."""
    return Target(f"{config.name}-host", peak_flops=config.host_flops, mem_bandwidth=config.host_bandwidth,
                  kernel_overhead_s=config.host_overhead_s)


def estimate(node: Node, graph: Graph, config: Accel) -> Estimate | None:
    """The accelerator kernel of ``node`` priced statically, as ``lower`` will build it: a 2-D
    convolution directly (``conv.direct_plan``), anything else as one matrix product (``tensorize.plan``)
    per group or per batch index of B, of the rows the host makes of its input; None if it cannot
    run there."""
    if not lowerable(node, graph):
        return None
    x, w, y = _shapes(node, graph)
    out = config.tile_bytes("out") * graph.types[node.outputs[0]].dtype.itemsize
    if "Conv" in node.op:
        groups = int(node.attrs.get("group", 1))
        window = conv_window(dict(node.attrs), x[2:], w[2:])
        geometry = conv_geometry(window, (x[0], x[1] // groups, *x[2:]))
        direct = None if geometry is None else direct_plan(config, geometry, w[0] // groups, bias=True)
        if direct is not None:
            return Estimate(x[0] * groups * direct.cycles, x[0] * groups * direct.dma_bytes)
        products, m, k, n = groups, y[0] * math.prod(y[2:]), math.prod(w[1:]), w[0] // groups
    else:
        products = math.prod(y[:-2]) if len(w) > 2 else 1
        m, k, n = (x[-2] if len(w) > 2 else math.prod(x[:-1])), x[-1], y[-1]
    kb, nb = -(-k // config.block_in), -(-n // config.block_out)
    try:
        chosen = plan(config, m, kb, nb, bias=True)
    except CompileError:
        return None
    # the blocking loads the inputs once per column of chunks and the weights once per row of them
    moved = (m * kb * config.tile_bytes("inp") * -(-nb // chosen.tn)
             + kb * nb * config.tile_bytes("wgt") * -(-m // chosen.tm) + m * nb * out)
    return Estimate(products * chosen.cycles, products * moved)


def _shapes(node: Node, graph: Graph) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The shapes of the node's data input, weights and output."""
    w = 1 if "Integer" in node.op else 3
    return (graph.types[node.inputs[0]].shape, graph.types[node.inputs[w]].shape,
            graph.types[node.outputs[0]].shape)


def cpu_target(node: Node, targets: Sequence[str]) -> str:
    """The first of ``targets`` that runs ``node`` on the CPU ("" if none does)."""
    defined = compute_of(get_op(node.op, node.domain, node=node.label)) is not None
    return next((t for t in targets if t == "ref" or defined), "")


def cpu_cost(node: Node, graph: Graph, host: Target) -> float:
    """Seconds ``node`` takes on the CPU ``host``: the analytic roofline of one kernel."""
    enode = ENode(node.label, node.op, node.outputs[0], list(node.inputs), dict(node.attrs))
    return analytic_cost(enode, [graph.types[i] if i else None for i in node.inputs],
                         [graph.types[o] for o in node.outputs if o], host)


def place(graph: Graph, config: Accel, *, host: Target | None = None) -> Placement:
    """The placement of ``graph``'s nodes of least estimated total time (see the module docstring);
    ``host``: the CPU's description (default ``host_description(config)``). UnsupportedOperator
    naming the node if one runs on neither device."""
    host = host or host_description(config)
    engines = [cpu_target(node, config.cpu_targets) for node in graph.nodes]
    kernels = [estimate(node, graph, config) for node in graph.nodes]
    estimates = {i: e for i, e in enumerate(kernels) if e is not None}
    node_costs: list[dict[str, float]] = []
    for i, node in enumerate(graph.nodes):
        priced = {CPU: cpu_cost(node, graph, host)} if engines[i] else {}
        if i in estimates:
            priced[ACCEL] = estimates[i].cycles / config.clock_hz
        if not priced:
            cpus = ", ".join(config.cpu_targets) or "none"
            raise UnsupportedOperator(node.op, node=node.label, target=config.name,
                                      detail=f"neither the accelerator nor a CPU target ({cpus}) runs it")
        node_costs.append(priced)
    view, costs = _view(graph, config, node_costs)
    choice, report = extract_ilp(view, costs, time_limit=ILP_SECONDS)
    chosen = _reached(view, choice)
    devices = [tuple(d for d in (ACCEL, CPU) if f"#{i}@{d}" in chosen) for i in range(len(graph.nodes))]
    transfers = [Transfer(name, device, t.size * t.dtype.itemsize, costs[f"to-{device}:{name}"])
                 for name, t in graph.types.items() for device in (ACCEL, CPU)
                 if f"to-{device}:{name}" in chosen]
    return Placement(devices, engines, transfers, node_costs, estimates, report.objective, str(report.status))


def _view(graph: Graph, config: Accel, node_costs: list[dict[str, float]],
          ) -> tuple[EGraphView, dict[str, float]]:
    """The placement's e-graph (see the module docstring) and the cost of each of its e-nodes;
    ``node_costs``: each node's seconds on each device that runs it."""
    classes: dict[str, list[ENode]] = {}
    costs: dict[str, float] = {}

    def add(cid: str, node_id: str, op: str, inputs: list[str], cost: float) -> None:
        classes.setdefault(cid, []).append(ENode(node_id, op, cid, inputs))
        costs[node_id] = cost

    for name in graph.inputs:
        add(f"{name}@{CPU}", f"in:{name}", "Tensor.input", [], 0.0)
    for name in graph.initializers:
        for device in (CPU, ACCEL):
            add(f"{name}@{device}", f"const:{name}@{device}", "Tensor.const", [], 0.0)
    for i, (node, priced) in enumerate(zip(graph.nodes, node_costs)):
        for device, cost in priced.items():
            inputs = [f"{v}@{device}" for v in node.inputs if v]
            add(f"#{i}@{device}", f"#{i}@{device}", node.op, inputs, cost)
            for out in node.outputs:
                if out:
                    add(f"{out}@{device}", f"get:{out}@{device}", "get", [f"#{i}@{device}"], 0.0)
    for name, t in graph.types.items():
        if name not in graph.initializers:
            seconds = config.transfer_seconds(t.size * t.dtype.itemsize)
            for device, other in ((ACCEL, CPU), (CPU, ACCEL)):
                add(f"{name}@{device}", f"to-{device}:{name}", "transfer", [f"{name}@{other}"], seconds)
    roots = [f"{name}@{CPU}" for name in graph.outputs]
    return EGraphView({}, cast(Any, None), classes, {}, {}, roots), costs


def _reached(view: EGraphView, choice: dict[str, str]) -> set[str]:
    """The e-nodes ``choice`` takes in the classes its roots reach (greedy's choice covers all)."""
    by_id = {n.id: n for nodes in view.classes.values() for n in nodes}
    reached: set[str] = set()
    stack = list(view.roots)
    while stack:
        node = by_id[choice[stack.pop()]]
        if node.id not in reached:
            reached.add(node.id)
            stack += node.inputs
    return reached
