"""The IR facade: operator registry, typed Graph, reference interpreter, printer.

Import IR names from here, not from the submodules.
"""

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.interpreter import run_graph, run_node
from tensoregg.ir.printer import format_graph
from tensoregg.ir.registry import OPS, REQUIRED, Attr, InferCtx, OpDef, Upgrade, get_op, op
from tensoregg.ir.types import TensorType, dtype_name

__all__ = ["OPS", "REQUIRED", "Attr", "Graph", "InferCtx", "Node", "OpDef", "TensorType", "Upgrade",
           "dtype_name", "format_graph", "get_op", "op", "run_graph", "run_node"]

# last, so op modules may import the names above from this facade
from tensoregg.ir import ops  # noqa: F401  (registers every operator in OPS)
