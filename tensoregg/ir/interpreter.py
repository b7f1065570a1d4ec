"""The reference interpreter: runs a Graph on numpy arrays with each op's reference semantics.

It is the oracle of every equivalence test, so it checks as it goes: each output must have
exactly the dtype and shape the op's shape rule promised. Outputs beyond the memory limit
(``tensoregg.ir.limits``) are refused before running the node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tensoregg.errors import CompileError, IndexOutOfRange, ResourceError, TensoreggError
from tensoregg.ir.bounds import check_within, is_bounded
from tensoregg.ir.graph import Graph, Node, infer_node
from tensoregg.ir.limits import check_memory
from tensoregg.ir.registry import OpDef, get_op
from tensoregg.ir.types import TensorType


def run_node(opdef: OpDef, node: Node, args: list[np.ndarray | None],
             types: Sequence[TensorType | None] | None = None) -> list[np.ndarray]:
    """Apply one node's reference semantics; check results against ``types`` when given."""
    if not (opdef.inputs and opdef.inputs[-1].variadic):
        args = list(args) + [None] * (len(opdef.inputs) - len(args))  # omitted trailing optionals
    where = f"{node.op} node {node.label!r}"
    if types is not None:
        check_memory(sum(t.nbytes for t in types if t is not None),
                     f"{where} (outputs {', '.join(str(t) for t in types if t is not None)})")
    try:
        result = opdef.reference(node.attrs, *args)
    except ResourceError as e:
        raise ResourceError(f"{where}: {e}") from e
    except MemoryError as e:  # numpy could not allocate a temporary
        shapes = ", ".join(str(TensorType.of(a)) for a in args if a is not None)
        raise ResourceError(f"{where} (inputs {shapes}): out of memory: {e}") from e
    except TensoreggError:
        raise
    except IndexError as e:  # numpy's indexing: a gathered or scattered index out of range
        raise IndexOutOfRange(f"{where}: {e}") from e
    except Exception as e:  # a reference bug or an input the op cannot take
        raise CompileError(f"{where} failed in the reference "
                           f"interpreter: {type(e).__name__}: {e}") from e
    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    outs = [np.asarray(o) for o in outs]
    if types is not None:
        for k, (out, t) in enumerate(zip(outs, types)):
            if t is not None and (out.dtype != t.dtype or out.shape != t.shape):
                raise CompileError(f"{node.op} node {node.label!r} output {k}: reference gave "
                                   f"{TensorType.of(out)}, shape rule said {t}")
    return outs


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``graph`` on ``feeds`` (one array per graph input) and return its outputs in order.

    A bounded node's outputs (``tensoregg.ir.bounds``) must fit their planned upper bounds; the
    nodes computing from them are typed again for the actual shapes."""
    env: dict[str, np.ndarray] = dict(graph.initializers)
    env.update(feeds)
    actual: dict[str, TensorType] = {}  # values smaller than their planned upper bound
    for node in graph.nodes:
        opdef = get_op(node.op, node.domain, node=node.label)
        args = [env[n] if n else None for n in node.inputs]
        types: list[TensorType | None] = [graph.types.get(n) if n else None for n in node.outputs]
        if any(n in actual for n in node.inputs):
            types = list(infer_node(opdef, node, {**graph.types, **actual}, graph.initializers))
        bounded = is_bounded(opdef, node, graph.initializers)
        outs = run_node(opdef, node, args, None if bounded else types)
        if bounded:
            check_within(node, outs, types)
        for out, value in zip(node.outputs, outs):
            if out:
                env[out] = value
                if value.shape != graph.types[out].shape:
                    actual[out] = TensorType.of(value)
    return [env[name] for name in graph.outputs]
