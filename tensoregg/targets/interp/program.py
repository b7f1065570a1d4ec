"""A Graph run as its loop program: every kernel executed by the interpreter, on the memory plan.

Graph inputs and outputs live in their own arrays, constants in the plan's weights blob, every other
value (and each node's scratch) at its offset in one workspace byte array, as the native code has
them: a value written in place over its input, or sharing bytes with a dead one, is computed from
those very bytes, so the interpreter checks the memory plan as well as the kernels. The workspace
starts filled with 0xFF bytes (NaN for floats), so that reading what no kernel wrote shows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tensoregg.errors import CompileError
from tensoregg.ir.compute import Buffer
from tensoregg.ir.graph import Graph
from tensoregg.ir.lower import Chooser
from tensoregg.ir.memory_plan import POISON, Place
from tensoregg.ir.program import LoopProgram, collect_outputs, lower_graph
from tensoregg.ir.target import Target
from tensoregg.targets.interp.executor import KernelExecutor

CONSTANT_PLACES = ("input", "weights")
"""Where what no kernel may write lives."""


class InterpProgram:
    """``graph`` lowered to its loop program (``lower_graph``: a contraction tiled as its node's
    schedule says, as another target's extraction chose it, else as ``choose`` picks, else untiled)
    and run by the interpreter (see the module docstring); or ``program``, a loop program of
    ``graph`` that another target lowered and scheduled (a GPU's, to emulate it)."""

    def __init__(self, graph: Graph, target: Target | None = None, *, choose: Chooser | None = None,
                 program: LoopProgram | None = None) -> None:
        self.graph, self.target = graph, target
        self.program = program or lower_graph(graph, target="interp", choose=choose, concats=True)
        plan = self.program.plan
        self.kernels: list[KernelExecutor | None] = []
        for k, (node, low) in enumerate(zip(graph.nodes, self.program.lowered)):
            if k in self.program.skipped:
                self.kernels.append(None)
                continue
            places = plan.param_places(low)
            memory = {id(b): (p.kind, p.at) for b, p in zip(low.kernel.params, places)}
            readonly = {id(b) for b, p in zip(low.kernel.params, places) if p.kind in CONSTANT_PLACES}
            where = f"kernel {low.kernel.name} ({node.op} node {node.label!r})"
            self.kernels.append(KernelExecutor(low.kernel, where, memory, readonly))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on ``feeds`` (already checked against the graph's input types)."""
        g, plan = self.graph, self.program.plan
        inputs = [_bytes(np.ascontiguousarray(feeds[n])) for n in g.inputs]
        produced = {n: np.empty(g.types[n].shape, g.types[n].dtype) for n, p in plan.places.items()
                    if p.kind == "output"}
        outputs = [_bytes(produced[n]) if n in produced else None for n in g.outputs]
        memory = {"input": inputs, "output": outputs, "weights": plan.weights_blob[plan.weights_base:],
                  "work": np.full(plan.work_size, POISON, np.uint8)}
        for low, kernel in zip(self.program.lowered, self.kernels):
            if kernel is not None:
                places = plan.param_places(low)
                kernel.run([_view(memory, p, b, kernel.where) for p, b in zip(places, low.kernel.params)])
        return collect_outputs(self.graph, produced, feeds)


def _bytes(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view(np.uint8)


def _view(memory: Mapping[str, object], place: Place, buf: Buffer, where: str) -> np.ndarray:
    """The flat elements of ``buf`` at ``place`` (read-only for inputs and constants)."""
    area = memory[place.kind]
    raw = area[place.at] if isinstance(area, list) else area[place.at:place.at + place.nbytes]  # type: ignore[index]
    if raw is None or raw.size < buf.nbytes or place.nbytes < buf.nbytes:
        raise CompileError(f"{where}: the memory plan gives {buf.name} ({buf.nbytes} bytes) {place}")
    view = raw[:buf.nbytes].view(buf.dtype)
    if place.kind in CONSTANT_PLACES:
        view = view.view()
        view.flags.writeable = False
    return view
