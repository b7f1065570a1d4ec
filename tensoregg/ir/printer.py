"""A readable text form of a Graph, one line per node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tensoregg.ir.types import TensorType

if TYPE_CHECKING:
    from tensoregg.ir.graph import Graph


def _attr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"tensor<{value.dtype.name}{list(value.shape)}>"
    if isinstance(value, tuple):
        return "[" + ",".join(_attr(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_graph(graph: Graph) -> str:
    """``graph name(%x: f32[1,3]) { %y = Relu(%x) : f32[1,3] ... return %y }``."""
    t = graph.types
    lines = [f"graph {graph.name}(" + ", ".join(f"%{n}: {t[n]}" for n in graph.inputs) + ") {"]
    for name, value in graph.initializers.items():
        lines.append(f"  %{name} = const {TensorType.of(value)}")
    for node in graph.nodes:
        outs = ", ".join(f"%{o}" for o in node.outputs if o)
        args = ", ".join(f"%{i}" if i else "_" for i in node.inputs)
        attrs = ", ".join(f"{k}={_attr(v)}" for k, v in sorted(node.attrs.items()))
        types = ", ".join(str(t[o]) for o in node.outputs if o)
        scheduled = f"  @ {node.schedule}" if node.schedule is not None else ""
        lines.append(f"  {outs} = {node.op}({args})" + (f" {{{attrs}}}" if attrs else "") + f" : {types}"
                     + scheduled)
    lines.append("  return " + ", ".join(f"%{o}" for o in graph.outputs))
    lines.append("}")
    return "\n".join(lines)

