"""The typed dataflow Graph: inputs, initializers, nodes, outputs; validated on construction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.ir.registry import InferCtx, OpDef, get_op
from tensoregg.ir.schedules import Schedule
from tensoregg.ir.types import TensorType


@dataclass(frozen=True)
class Node:
    """One operator application. An omitted optional input or unused output is ``""``."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    schedule: Schedule | None = None
    """How a contraction node's loops are tiled, as the target's extraction chose it (None: not
    chosen; the lowering then picks by the target's cost model)."""

    @property
    def label(self) -> str:
        return self.name or (self.outputs[0] if self.outputs else self.op)


class Graph:
    """A validated dataflow graph with static types.

    On construction every value must be defined exactly once (graph input, initializer or node
    output), every used value defined, the nodes acyclic; nodes are put in topological order,
    attributes checked and defaulted, and every value typed by the operators' shape rules.
    ``types`` maps each value name to its :class:`TensorType`.
    """

    def __init__(self, inputs: Mapping[str, TensorType], initializers: Mapping[str, np.ndarray],
                 nodes: Iterable[Node], outputs: Sequence[str], name: str = "graph") -> None:
        self.name = name
        self.inputs: dict[str, TensorType] = dict(inputs)
        self.initializers: dict[str, np.ndarray] = dict(initializers)
        self.outputs: list[str] = list(outputs)
        defined: dict[str, str] = {}
        for n in self.inputs:
            _define(defined, n, "graph input")
        for n in self.initializers:
            _define(defined, n, "initializer")
        nodes = list(nodes)
        for node in nodes:
            for out in node.outputs:
                if out:
                    _define(defined, out, f"output of {node.op} node {node.label!r}")
        self.nodes: list[Node] = []
        self.types: dict[str, TensorType] = dict(self.inputs)
        self.types.update({k: TensorType.of(v) for k, v in self.initializers.items()})
        for node in toposort(nodes, defined):
            opdef = get_op(node.op, node.domain, node=node.label)
            node = Node(node.op, node.inputs, node.outputs, opdef.check_attrs(node.attrs, node.label),
                        node.name, node.domain, node.schedule)
            for t, out in zip(infer_node(opdef, node, self.types, self.initializers), node.outputs):
                if out:
                    self.types[out] = t
            self.nodes.append(node)
        for out in self.outputs:
            if out not in defined:
                raise InvalidModel(f"graph output {out!r} is not defined by any node, input or initializer")
        if not self.outputs:
            raise InvalidModel("graph has no outputs")

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    out.setdefault(name, []).append(node)
        return out

    def __str__(self) -> str:
        from tensoregg.ir.printer import format_graph

        return format_graph(self)


def infer_node(opdef: OpDef, node: Node, types: Mapping[str, TensorType],
               values: Mapping[str, np.ndarray]) -> list[TensorType]:
    """Check a node's arity and required inputs, then run its shape rule.

    ``types`` must hold every input's type and ``values`` the inputs known at compile time.
    """
    params = _slots(opdef, max(len(node.inputs), len(opdef.inputs)))
    for i, param in enumerate(params):
        given = i < len(node.inputs) and node.inputs[i]
        if not given and not param.optional and not param.variadic:
            raise InvalidModel(f"{node.op} node {node.label!r}: required input {i} "
                               f"({param.name}) is missing")
    n_out_ok = len(node.outputs) <= len(opdef.outputs) or (opdef.outputs and opdef.outputs[-1].variadic)
    if not opdef.arity_ok(len(node.inputs)) or not n_out_ok:
        raise InvalidModel(f"{node.op} node {node.label!r}: {len(node.inputs)} inputs and "
                           f"{len(node.outputs)} outputs do not fit its signature "
                           f"({' '.join(p.name for p in opdef.inputs)} -> "
                           f"{' '.join(p.name for p in opdef.outputs)})")
    ctx = InferCtx(node.op, node.label, [types[n] if n else None for n in node.inputs],
                   [values.get(n) if n else None for n in node.inputs], node.attrs, len(node.outputs))
    return opdef.infer_types(ctx)


def _slots(opdef: OpDef, n: int) -> list:
    params = list(opdef.inputs)
    if params and params[-1].variadic:
        params += [params[-1]] * max(0, n - len(params))
    return params[:n]


def _define(defined: dict[str, str], name: str, what: str) -> None:
    if name in defined:
        raise InvalidModel(f"value {name!r} is defined twice: as {defined[name]} and as {what}")
    defined[name] = what


def toposort(nodes: list[Node], defined: Mapping[str, str]) -> list[Node]:
    """Kahn's algorithm; names the dangling input or the nodes on a cycle."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.outputs if out}
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.inputs:
            if not name:
                continue
            if name not in defined:
                raise InvalidModel(f"{node.op} node {node.label!r} uses {name!r}, which nothing defines")
            if name in producer:
                waiting[i] += 1
                users.setdefault(producer[name], []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order: list[Node] = []
    while ready:
        i = ready.pop(0)
        order.append(nodes[i])
        for j in users.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) != len(nodes):
        stuck = [f"{n.op} {n.label!r}" for i, n in enumerate(nodes) if waiting[i] > 0]
        raise InvalidModel(f"graph has a cycle through {', '.join(stuck[:6])}")
    return order
