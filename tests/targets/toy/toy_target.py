"""A toy target in one file outside the package: a description (its facts and rule families), a code
generator (the optimized Graph as Python source, one statement per node) and an executor (that source
compiled and run). Registering it is all it takes for ``tensoregg.compile``, ``explain`` and the
``tensoregg targets`` command to know it."""

from __future__ import annotations

import numpy as np

from tensoregg.ir import Graph
from tensoregg.ir.interpreter import run_node
from tensoregg.ir.registry import get_op
from tensoregg.targets import Target, register_target

TOY = Target("toy", peak_flops=1e9, mem_bandwidth=1e9, kernel_overhead_s=1e-6, rule_families=("algebra",))


class PythonProgram:
    """The Graph as the body of one Python function: ``v<k> = ...`` per value, nodes in order."""

    def __init__(self, graph: Graph, target: Target) -> None:
        names = {name: f"v{k}" for k, name in enumerate([*graph.inputs, *graph.initializers,
                                                          *(o for n in graph.nodes for o in n.outputs if o)])}
        lines = ["def model(feeds, weights, nodes):"]
        lines += [f"    {names[n]} = feeds[{n!r}]" for n in graph.inputs]
        lines += [f"    {names[n]} = weights[{n!r}]" for n in graph.initializers]
        for k, node in enumerate(graph.nodes):
            args = ", ".join(names[n] if n else "None" for n in node.inputs)
            outs = "".join(f"{names[o]}, " if o else "_, " for o in node.outputs)
            lines.append(f"    {outs}= run_node(*nodes[{k}], [{args}])[:{len(node.outputs)}]")
        lines.append(f"    return [{', '.join(names[o] for o in graph.outputs)}]")
        self.source = "\n".join(lines)
        namespace: dict = {"run_node": run_node}
        exec(compile(self.source, f"<toy:{target.name}>", "exec"), namespace)
        self._model = namespace["model"]
        self._weights = dict(graph.initializers)
        self._nodes = [(get_op(n.op, n.domain), n) for n in graph.nodes]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._model(feeds, self._weights, self._nodes)


def register() -> None:
    register_target("toy", summary="a toy: the Graph as generated Python source", describe=lambda: TOY,
                    build=PythonProgram, replace=True)
