"""Staged execution of a Graph with bounded nodes (``tensoregg.ir.bounds``: NonZero, Unique,
Compress, NonMaxSuppression over values known only at run time).

``compile`` cuts such a Graph into stages. Stage 0 holds every node that computes nothing from a
bounded output, compiled for the target as usual (its memory planned statically). Each bounded node
then runs on the host with its reference semantics (the ONNX operator's), and its result is checked
against the upper bound its shape rule planned, whose memory is checked against the limit
(``tensoregg.ir.limits``) at compile time. The nodes after it form segments compiled for the actual
shapes of what they read: lazily, on the first run with those shapes, and kept per shape in a
bounded LRU cache (each compile logged). Where the bounded outputs are the Graph's outputs (a
detector ending in NonMaxSuppression), nothing is compiled at run time.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np

from tensoregg.errors import ArtifactError, UnsupportedOperator
from tensoregg.ir import Graph, Node, TensorType
from tensoregg.ir.bounds import bounded_nodes, check_within
from tensoregg.ir.graph import infer_node
from tensoregg.ir.interpreter import run_node
from tensoregg.ir.limits import check_memory
from tensoregg.ir.registry import get_op
from tensoregg.runtime import Module

log = logging.getLogger(__name__)

CACHE_SIZE = 8
"""Compiled segments kept per segment, one per shape of what it reads (least recently used dropped)."""

Compiler = Callable[[Graph], Module]
"""Compiles a segment's Graph (``tensoregg.compile``): for the target with the model's options, or
for the reference interpreter."""


@dataclass
class Stage:
    """Consecutive nodes (the Graph's) run one way: ``host`` (one bounded node, its reference
    semantics) or compiled; ``inputs`` what they read from earlier stages, the model's inputs or
    constants (these in ``constants``), ``outputs`` what later stages or the model's outputs read."""

    host: bool
    nodes: list[Node]
    inputs: list[str]
    constants: dict[str, np.ndarray]
    outputs: list[str]
    compiled: OrderedDict[tuple[tuple[int, ...], ...], Module] = field(default_factory=OrderedDict)


class StagedProgram:
    """A Graph with bounded nodes run in stages (see the module docstring); ``compile_graph`` compiles
    a stage, at once for stage 0 and on first use of a shape for the later ones. A later stage of
    empty values (nothing selected) that the target declines (an llvm Gather from an empty axis) is
    compiled by ``interpret`` instead."""

    def __init__(self, graph: Graph, compile_graph: Compiler, interpret: Compiler,
                 cache_size: int = CACHE_SIZE) -> None:
        self.graph, self.compile_graph, self.interpret = graph, compile_graph, interpret
        self.cache_size = cache_size
        bounded = bounded_nodes(graph)
        for i in bounded:
            node = graph.nodes[i]
            types = [graph.types[o] for o in node.outputs if o]
            check_memory(sum(t.nbytes for t in types), f"{node.op} node {node.label!r} (upper bound of its "
                         f"outputs {', '.join(map(str, types))})")
        self.bounded = [graph.nodes[i] for i in bounded]
        self.stages = _stages(graph, set(bounded))
        self.compiles = 0
        """Segments compiled at run time so far."""
        first = self.stages[0]
        self.first = (None if first.host else
                      self._compiled(first, tuple(graph.types[n].shape for n in first.inputs), at_run=False))

    @property
    def report(self) -> object:
        """Stage 0's optimization report (None where it has none)."""
        return None if self.first is None else self.first.report

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        env: dict[str, np.ndarray] = {**self.graph.initializers, **feeds}
        for stage in self.stages:
            args = [env[n] for n in stage.inputs]
            if stage.host:
                node = stage.nodes[0]
                opdef = get_op(node.op, node.domain, node=node.label)
                types = {n: TensorType.of(env[n]) for n in node.inputs if n}
                bounds = infer_node(opdef, node, types, stage.constants)
                outs = run_node(opdef, node, [env[n] if n else None for n in node.inputs])
                check_within(node, outs, bounds)
                env.update((o, v) for o, v in zip(node.outputs, outs) if o)
                continue
            module = self._compiled(stage, tuple(a.shape for a in args))
            env.update(zip(stage.outputs, module.run(*args)))
        return [env[n] for n in self.graph.outputs]

    def _compiled(self, stage: Stage, shapes: tuple[tuple[int, ...], ...], at_run: bool = True) -> Module:
        """The stage compiled for inputs of ``shapes`` (from the cache, or compiled now: logged and
        counted ``at_run``)."""
        module = stage.compiled.get(shapes)
        if module is not None:
            stage.compiled.move_to_end(shapes)
            return module
        inputs = {n: TensorType(self.graph.types[n].dtype, s) for n, s in zip(stage.inputs, shapes)}
        sub = Graph(inputs, stage.constants, stage.nodes, stage.outputs, f"{self.graph.name}.stage")
        if at_run:
            self.compiles += 1
            log.info("staging: compiling %d nodes after a data-dependent op for inputs %s",
                     len(stage.nodes), ", ".join(f"{n}: {t}" for n, t in inputs.items()))
        try:
            module = self.compile_graph(sub)
        except UnsupportedOperator as e:
            if not at_run or all(math.prod(s) for s in shapes):
                raise
            log.info("staging: %s; these empty values run in the reference interpreter", e)
            module = self.interpret(sub)
        stage.compiled[shapes] = module
        if len(stage.compiled) > self.cache_size:
            stage.compiled.popitem(last=False)
        return module

    def export(self) -> NoReturn:
        """Saving is refused: the stages after a data-dependent op compile at run time, for shapes
        an artifact cannot know."""
        labels = ", ".join(f"{n.op} node {n.label!r}" for n in self.bounded)
        raise ArtifactError(f"a model with data-dependent output shapes ({labels}) compiles its later "
                            "stages at run time and cannot be saved as an artifact")


def _stages(graph: Graph, bounded: set[int]) -> list[Stage]:
    """Stage 0 (the nodes computing nothing from a bounded output), then the rest in phases: every
    bounded node whose inputs are ready runs on the host, then every other node that can run
    before the next bounded one is one compiled stage (as few stages, and compiles per run, as the
    dependences allow)."""
    dependent: set[str] = set()
    first: list[int] = []
    rest: list[int] = []
    for i, node in enumerate(graph.nodes):
        if i in bounded or any(n in dependent for n in node.inputs if n):
            dependent.update(o for o in node.outputs if o)
            rest.append(i)
        else:
            first.append(i)
    runs: list[tuple[bool, list[int]]] = [(False, first)] if first else []
    producer = {o: i for i in rest for o in graph.nodes[i].outputs if o}
    pending = set(rest)

    def ready(i: int) -> bool:
        return all(producer.get(n) not in pending for n in graph.nodes[i].inputs if n)

    while pending:
        on_host = [i for i in rest if i in pending and i in bounded and ready(i)]
        runs += [(True, [i]) for i in on_host]
        pending -= set(on_host)
        segment: list[int] = []
        while more := [i for i in rest if i in pending and i not in bounded and ready(i)]:
            segment += more
            pending -= set(more)
        if segment:
            runs.append((False, segment))
    stages = []
    for k, (host, positions) in enumerate(runs):
        nodes = [graph.nodes[i] for i in positions]
        made = {o for node in nodes for o in node.outputs if o}
        read = list(dict.fromkeys(n for node in nodes for n in node.inputs if n))
        later = {n for _, after in runs[k + 1:] for i in after for n in graph.nodes[i].inputs}
        later |= set(graph.outputs)
        stages.append(Stage(host, nodes, [n for n in read if n not in made and n not in graph.initializers],
                            {n: graph.initializers[n] for n in read if n in graph.initializers},
                            [o for node in nodes for o in node.outputs if o and o in later]))
    return stages
