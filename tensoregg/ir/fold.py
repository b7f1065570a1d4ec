"""Constant folding: nodes whose values are known at compile time become constants."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.interpreter import run_node
from tensoregg.ir.limits import FOLD_BYTES
from tensoregg.ir.registry import OpDef, get_op
from tensoregg.ir.types import TensorType


def fold_args(opdef: OpDef, node: Node, types: Mapping[str, TensorType],
              consts: Mapping[str, np.ndarray]) -> list[np.ndarray | None] | None:
    """The arguments to evaluate ``node`` at compile time, or None if it must run at run time.

    A deterministic node over constants folds, unless its outputs would take more than
    ``FOLD_BYTES`` and its inputs' bytes (it then runs at run time); Shape/Size-like ops
    (``folds_on_types``) fold on their input types alone, fed zero-memory placeholders.
    """
    if opdef.folds_on_types:
        return [np.broadcast_to(np.zeros((), types[n].dtype), types[n].shape) if n else None
                for n in node.inputs]
    if opdef.deterministic and all(n in consts for n in node.inputs if n):
        made = sum(types[n].nbytes for n in node.outputs if n in types)
        if made > max(FOLD_BYTES, sum(consts[n].nbytes for n in node.inputs if n)):
            return None
        return [consts[n] if n else None for n in node.inputs]
    return None


def live_nodes(nodes: list[Node], outputs: list[str]) -> list[Node]:
    """The nodes some output depends on, in their original order."""
    needed = set(outputs)
    keep = []
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs if o):
            keep.append(node)
            needed.update(n for n in node.inputs if n)
    return keep[::-1]


def fold_constants(graph: Graph) -> Graph:
    """``graph`` with every foldable node replaced by its value, dead nodes and constants dropped."""
    consts = dict(graph.initializers)
    nodes = []
    for node in graph.nodes:
        opdef = get_op(node.op, node.domain, node=node.label)
        args = fold_args(opdef, node, graph.types, consts)
        if args is None:
            nodes.append(node)
            continue
        types = [graph.types.get(o) if o else None for o in node.outputs]
        for out, value in zip(node.outputs, run_node(opdef, node, args, types)):
            if out:
                consts[out] = value
    if len(nodes) == len(graph.nodes):
        return graph
    nodes = live_nodes(nodes, graph.outputs)
    used = {n for node in nodes for n in node.inputs} | set(graph.outputs)
    kept = {k: v for k, v in consts.items() if k in used and k not in graph.inputs}
    return Graph(graph.inputs, kept, nodes, graph.outputs, graph.name)
