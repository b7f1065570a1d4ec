"""A typed view of a serialized e-graph: the candidate e-nodes of each e-class and the type of
every e-class, inferred with the operators' own shape rules (shapes keep one definition, and
classes that rules create get types too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensoregg.errors import ShapeError
from tensoregg.ir.registry import InferCtx
from tensoregg.ir.terms import CONSTRUCTORS, GET, Encoding, ENode, parse, root_classes
from tensoregg.ir.types import TensorType


@dataclass
class EGraphView:
    js: Mapping[str, Any]
    enc: Encoding
    classes: dict[str, list[ENode]]
    types: dict[str, list[TensorType]]
    """A tensor e-class's type as a one-element list; an Outputs e-class's output types."""
    consts: dict[str, np.ndarray]
    """Tensor e-classes that are constants, with their values."""
    roots: list[str]


def build_view(js: Mapping[str, Any], enc: Encoding) -> EGraphView:
    """Parse ``js`` and type every e-class that a typed e-node reaches."""
    view = EGraphView(js, enc, parse(js), {}, {}, root_classes(js, len(enc.output_names)))
    n_outputs: dict[str, int] = {}
    for nodes in view.classes.values():
        for n in nodes:
            if n.op == GET:
                n_outputs[n.inputs[0]] = max(n_outputs.get(n.inputs[0], 0), n.index + 1)
    changed = True
    while changed:
        changed = False
        for cid, nodes in view.classes.items():
            if cid in view.types:
                continue
            for node in nodes:
                types = _node_types(node, view, n_outputs.get(cid, 1))
                if types is not None:
                    view.types[cid] = types
                    changed = True
                    break
    return view


def _node_types(node: ENode, view: EGraphView, n_outputs: int) -> list[TensorType] | None:
    enc = view.enc
    if node.op == "Tensor.input":
        return [enc.inputs[node.attrs["name"]]]
    if node.op == "Tensor.const":
        view.consts[node.eclass] = enc.consts[node.attrs["name"]]
        return [TensorType.of(view.consts[node.eclass])]
    if node.op == "Tensor.none":
        return []
    if node.op == GET:
        outs = view.types.get(node.inputs[0])
        return None if outs is None or node.index >= len(outs) else [outs[node.index]]
    if any(c and c not in view.types for c in node.inputs):
        return None
    ctor = CONSTRUCTORS[node.op]
    in_types = [view.types[c][0] if c else None for c in node.inputs]
    values = [view.consts.get(c) if c else None for c in node.inputs]
    attrs = {a: (enc.consts[v] if ctor.opdef.attrs[a].kind == "tensor" and v else v)
             for a, v in node.attrs.items()}
    try:
        return ctor.opdef.infer_types(InferCtx(node.op, node.id, in_types, values, attrs,
                                               n_outputs if ctor.multi else 1))
    except ShapeError:
        return None
