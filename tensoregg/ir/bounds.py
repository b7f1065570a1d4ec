"""Data-dependent output shapes: a node of an op with ``bounded_inputs`` (NonZero, Unique, Compress,
NonMaxSuppression) whose shape-deciding inputs are not all compile-time constants is *bounded*: its
outputs are typed with an upper bound of their shapes (the shape planned at compile time), and a
run gives arrays no larger on any axis. Everything computed from a bounded output is typed at that
bound too, until the actual shapes are known at run time (``tensoregg.staging`` compiles what
follows for them; the reference interpreter retypes as it goes).
"""

from __future__ import annotations

from collections.abc import Container, Sequence

import numpy as np

from tensoregg.errors import CompileError
from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.registry import OpDef, get_op
from tensoregg.ir.types import TensorType


def is_bounded(opdef: OpDef, node: Node, constants: Container[str]) -> bool:
    """Whether ``node``'s output shapes are upper bounds: an input deciding them is given and is
    not among the compile-time ``constants``."""
    return any(i < len(node.inputs) and node.inputs[i] and node.inputs[i] not in constants
               for i in opdef.bounded_inputs)


def bounded_nodes(graph: Graph) -> list[int]:
    """The positions of the Graph's bounded nodes."""
    return [i for i, node in enumerate(graph.nodes)
            if is_bounded(get_op(node.op, node.domain, node=node.label), node, graph.initializers)]


def check_within(node: Node, outputs: Sequence[np.ndarray], bounds: Sequence[TensorType | None]) -> None:
    """CompileError unless each output has its bound's dtype and rank and no axis beyond it."""
    for k, (out, bound) in enumerate(zip(outputs, bounds)):
        if bound is not None and (out.dtype != bound.dtype or out.ndim != bound.rank
                                  or any(a > b for a, b in zip(out.shape, bound.shape))):
            raise CompileError(f"{node.op} node {node.label!r} output {k}: gave {TensorType.of(out)}, "
                               f"beyond the upper bound {bound} its shape rule planned")


def reads_bounded(opdef: OpDef, node: Node, constants: Container[str], bounded: set[str]) -> bool:
    """For an importer: whether ``node`` is bounded or reads a value typed at a bound (``bounded``,
    to which its outputs are then added). Such a node is not folded: a Shape of a bound is no
    constant."""
    if is_bounded(opdef, node, constants) or any(n in bounded for n in node.inputs if n):
        bounded.update(o for o in node.outputs if o)
        return True
    return False
