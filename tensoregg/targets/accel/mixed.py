"""The mixed program: a Graph placed on the accelerator and the CPU (``placement``) and run as
segments, maximal runs of consecutive nodes (in the Graph's order) on one device. An accelerator
segment is lowered as before (``lower``: one program per node) and run through a ``Driver`` (the
simulator's by default); a CPU segment is a subgraph built by its CPU target (``llvm``, or ``ref``
for the ops only the reference interpreter runs). Values cross between the host and the device's
memory as numpy arrays, copied where a segment reads a value the other side made (and the graph's
outputs back to the host); ``transfers`` lists those of the last run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensoregg.ir import Graph
from tensoregg.targets import Program, registration
from tensoregg.targets.accel.driver import Driver, SimulatorDriver
from tensoregg.targets.accel.lower import AcceleratorProgram, Built, DeferredKernel, SplitKernel, lower
from tensoregg.targets.accel.machines import Accel
from tensoregg.targets.accel.placement import ACCEL, Placement, Transfer, place
from tensoregg.targets.accel.program import AccelProgram
from tensoregg.targets.accel.simulator import Stats


@dataclass
class Segment:
    """Consecutive nodes (positions in the Graph) on one device: ``accel`` or a CPU target's name;
    ``graph`` is their subgraph (inputs: what they read from earlier segments or the model's inputs;
    outputs: what later segments or the model's outputs read), ``program`` what runs it."""

    device: str
    nodes: list[int]
    graph: Graph
    program: Program | None = None


class MixedProgram:
    """A Graph run on the accelerator and the CPU as ``placement`` says (see the module docstring).
    ``stats`` holds the Stats of each accelerator kernel of the last run, in ``kernels``' order.
    With ``build_cpu`` false the CPU segments are not compiled (``explain`` only reports)."""

    def __init__(self, graph: Graph, config: Accel, placement: Placement | None = None, *,
                 driver: Driver | None = None, build_cpu: bool = True) -> None:
        self.graph, self.config = graph, config
        self.placement = placement if placement is not None else place(graph, config)
        self.driver: Driver = driver if driver is not None else SimulatorDriver()
        self.segments = _segments(graph, self.placement)
        self.transfers: list[Transfer] = []
        for segment in self.segments:
            if segment.device == ACCEL:
                segment.program = lower(segment.graph, config)
            elif build_cpu:
                entry = registration(segment.device)
                segment.program = entry.build(segment.graph, entry.describe())

    @property
    def accelerated(self) -> list[AcceleratorProgram]:
        return [s.program for s in self.segments if isinstance(s.program, AcceleratorProgram)]

    @property
    def kernels(self) -> list[Built | DeferredKernel]:
        """The accelerator kernels, one per node placed there, in the Graph's order."""
        return [k for p in self.accelerated for k in p.kernels]

    @property
    def stats(self) -> list[Stats]:
        """Each accelerator kernel's Stats of the last run (empty before one)."""
        return [s for p in self.accelerated for s in p.stats]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        host: dict[str, np.ndarray] = {**self.graph.initializers, **feeds}
        self.driver.reset()
        self.transfers = []
        for segment in self.segments:
            inputs, outputs = list(segment.graph.inputs), segment.graph.outputs
            assert segment.program is not None, "CPU segments were not built"
            if segment.device == ACCEL:
                for name in inputs:
                    if not self.driver.holds(name):
                        self._move(name, ACCEL, host[name])
                self.driver.run(segment.program, inputs, outputs)
            else:
                for name in inputs:
                    if name not in host:
                        host[name] = self._move(name, "cpu")
                host.update(zip(outputs, segment.program.run({n: host[n] for n in inputs})))
        for name in self.graph.outputs:
            if name not in host:
                host[name] = self._move(name, "cpu")
        return [host[name] for name in self.graph.outputs]

    def _move(self, name: str, to: str, value: np.ndarray | None = None) -> np.ndarray:
        """Copy ``name`` to the device ``to`` (into the accelerator: ``value``) and record it."""
        if to == ACCEL:
            assert value is not None
            self.driver.copy_in(name, value)
        else:
            value = self.driver.copy_out(name)
        self.transfers.append(Transfer(name, to, value.nbytes, self.config.transfer_seconds(value.nbytes)))
        return value

    def to_dict(self) -> dict[str, Any]:
        """Each node's placement; for an accelerator kernel its instructions by kind (of its
        programs as built), the estimated cycles and DMA bytes and, after a run, the simulated ones
        and the GEMM core's utilization; the values moved (estimated, and in the last run)."""
        simulated = {k.output: s for k, s in zip(self.kernels, self.stats)}
        built = {k.output: k for k in self.kernels}
        nodes = []
        for i, node in enumerate(self.graph.nodes):
            p = self.placement
            entry: dict[str, Any] = {"node": node.label, "op": node.op, "output": node.outputs[0],
                                     "devices": [d if d == ACCEL else f"cpu ({p.engines[i]})"
                                                 for d in p.devices[i]],
                                     "estimated_seconds": p.costs[i]}
            if i in p.estimates and ACCEL in p.devices[i]:
                e, kernel = p.estimates[i], built.get(node.outputs[0])
                entry["estimated"] = {"cycles": e.cycles, "dma_bytes": e.dma_bytes}
                if kernel is not None:
                    entry["instructions"] = dict(Counter(insn.op for program in _programs(kernel)
                                                         for insn in program.instructions))
                stats = simulated.get(node.outputs[0])
                if stats is not None:
                    entry["simulated"] = {"cycles": stats.cycles, "utilization": stats.utilization,
                                          "dma_bytes": stats.dma_read + stats.dma_written}
            nodes.append(entry)
        return {"placement": nodes, "estimated_seconds": self.placement.seconds,
                "extractor": self.placement.extractor,
                "transfers": [vars(t) for t in self.placement.transfers],
                "transferred": [vars(t) for t in self.transfers]}

    def report(self) -> str:
        """``to_dict`` as text, a line per node and per value moved."""
        d = self.to_dict()
        lines = [f"placement (ilp {d['extractor']}; estimated {d['estimated_seconds'] * 1e6:.1f} us in all):"]
        for entry in d["placement"]:
            where = " + ".join(entry["devices"])
            line = f"  {entry['op']} %{entry['output']}: {where}"
            est = ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in entry["estimated_seconds"].items())
            line += f" (estimated on each device: {est})"
            if "estimated" in entry:
                e = entry["estimated"]
                line += f"; estimated {e['cycles']:.0f} cycles, {e['dma_bytes']} DMA bytes"
            if "simulated" in entry:
                s = entry["simulated"]
                line += (f"; simulated {s['cycles']} cycles, {s['dma_bytes']} DMA bytes, "
                         f"utilization {s['utilization']:.1%}")
            if "instructions" in entry:
                counts = sorted(entry["instructions"].items())
                line += "; instructions " + ", ".join(f"{k} {v}" for k, v in counts)
            lines.append(line)
        moved = d["transferred"] or d["transfers"]
        which = "moved in the last run" if d["transferred"] else "to move (estimated)"
        lines.append(f"values {which}: " + (", ".join(
            f"%{t['value']} -> {t['to']} {t['nbytes']} B ({t['seconds'] * 1e6:.1f} us)" for t in moved)
            or "none"))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _programs(kernel: Built | DeferredKernel) -> list[AccelProgram]:
    """The accelerator programs of a kernel (a deferred one's: those built so far)."""
    if isinstance(kernel, DeferredKernel):
        return [p for built in kernel.built.values() for p in _programs(built)]
    if isinstance(kernel, SplitKernel):
        return [p for _, part in kernel.parts for p in _programs(part)]
    return [kernel.program]


def _segments(graph: Graph, placement: Placement) -> list[Segment]:
    """The Graph cut into maximal runs of steps (a node on one device) on one device, in order."""
    steps = [(ACCEL if d == ACCEL else placement.engines[i], i)
             for i in range(len(graph.nodes)) for d in placement.devices[i]]
    runs: list[tuple[str, list[int]]] = []
    for device, i in steps:
        if runs and runs[-1][0] == device:
            runs[-1][1].append(i)
        else:
            runs.append((device, [i]))
    segments = []
    for k, (device, nodes) in enumerate(runs):
        made = {o for i in nodes for o in graph.nodes[i].outputs if o}
        read = list(dict.fromkeys(v for i in nodes for v in graph.nodes[i].inputs if v))
        later = {v for _, rest in runs[k + 1:] for i in rest for v in graph.nodes[i].inputs}
        later |= set(graph.outputs)
        outputs = [o for i in nodes for o in graph.nodes[i].outputs if o and o in later]
        inputs = {v: graph.types[v] for v in read if v not in made and v not in graph.initializers}
        constants = {v: graph.initializers[v] for v in read if v in graph.initializers}
        sub = Graph(inputs, constants, [graph.nodes[i] for i in nodes], outputs, f"{graph.name}.{k}.{device}")
        segments.append(Segment(device, nodes, sub))
    return segments
