"""The ``llvm`` target's save hook: a NativeModel as the code of an artifact
(``tensoregg.runtime.artifact``), loaded back by ``tensoregg.runtime.native.load_native``.

Parts: the shared library (``NativeModel.write_shared_library``: the model, the thread team's
functions, the C API), its header ``tensoregg.h``, the packed weights as a 1-D uint8 ``weights.npy``
(what ``tegg_create`` reads), and ``outputs/<k>.npy`` for each output that is a constant. The
manifest's ``code`` object is described by ``tensoregg.runtime.native.CODE_FIELDS``.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

from tensoregg.extraction.cost import flops
from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.ops.fused import fused_ops
from tensoregg.runtime.artifact import TargetCode, npy
from tensoregg.targets.llvm.capi import HEADER
from tensoregg.targets.llvm.model import NativeModel

LIBRARY = "libtensoregg_model.so"
WEIGHTS = "weights.npy"


def save_native(model: NativeModel) -> TargetCode:
    """The code of ``model`` for an artifact (see the module docstring)."""
    ex, plan, g = model.executor, model.plan, model.graph
    with tempfile.TemporaryDirectory() as tmp:
        library = model.write_shared_library(Path(tmp) / LIBRARY).read_bytes()
    parts = {LIBRARY: library, "tensoregg.h": HEADER.encode(), WEIGHTS: npy(ex.weights)}
    constants = {}
    for k, name in enumerate(g.outputs):
        if name in ex.constants and name not in constants:
            constants[name] = f"outputs/{k}.npy"
            parts[constants[name]] = npy(ex.constants[name])
    values: dict[str, Any] = {n: [p.kind, p.at, p.nbytes] for n, p in plan.places.items()}
    manifest = {"library": LIBRARY, "weights": WEIGHTS, "machine": platform.machine(),
                "cpu": model.target.cpu, "features": model.target.features,
                "weights_nbytes": int(ex.weights.nbytes), "workspace_nbytes": int(ex.work_size),
                "parallel": ex.parallel, "slots": ex.slots, "constants": constants,
                "memory_plan": {"workspace_nbytes": int(ex.work_size), "values": values},
                "kernels": kernel_table(model), "core_peak_flops": model.target.core_flops}
    return TargetCode(manifest, parts)


def node_flops(graph: Graph, node: Node) -> float:
    """``node``'s arithmetic work (``tensoregg.extraction.cost.flops``)."""
    types = graph.types
    return flops(node, [types[n] if n else None for n in node.inputs],  # type: ignore[arg-type]
                 [types[n] for n in node.outputs if n])


def kernel_table(model: NativeModel) -> list[dict[str, Any]]:
    """Each node's kernel, for the manifest: its function, node, whether it runs (a view, or a
    producer its consumer's kernel computes, does not), its params' places (kind, offset or slot),
    the ops it computes (the producers fused into it first), its output shape, its arithmetic work
    and its schedule."""
    g, plan = model.graph, model.plan
    producer = {out: node for node in g.nodes for out in node.outputs if out}
    table = []
    for k, (fn, node, low) in enumerate(zip(model.kernel_names, g.nodes, model.lowered)):
        inlined = [producer[n] for n in low.fused if n in producer]
        out = g.types[node.outputs[0]]
        table.append({"function": fn, "node": f"{node.op} {node.label}", "runs": k not in model.views,
                      "params": [[p.kind, p.at] for p in plan.param_places(low)],
                      "ops": [op for n in [*inlined, node] for op in fused_ops(n)], "shape": list(out.shape),
                      "flops": sum(node_flops(g, n) for n in [*inlined, node]),
                      "schedule": str(node.schedule) if node.schedule is not None else ""})
    return table
