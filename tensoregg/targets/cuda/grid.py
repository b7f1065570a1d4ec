"""A Graph's loop program for a GPU with every stage bound to a grid: contractions as the schedule
extraction chose (or the cost model's cheapest), row reductions a warp per element where the cost
model prices that below a thread per element (``rows``), every other stage a thread per element
(``schedule``). What ``CudaProgram`` writes as CUDA C, and what ``explain -t cuda`` shows
(``GridPlan``: each row reduction's two prices)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tensoregg.ir.graph import Graph
from tensoregg.ir.loops import For, Stmt
from tensoregg.ir.program import LoopProgram, lower_graph
from tensoregg.targets.cuda.cost import price, rows_seconds
from tensoregg.targets.cuda.machines import Gpu
from tensoregg.targets.cuda.rows import lower, row_stage
from tensoregg.targets.cuda.schedule import bind_threads


@dataclass
class RowChoice:
    """A row reduction stage of node ``node`` (its ``op``, computing ``value``; ``outputs`` elements
    of ``terms`` terms): the seconds the cost model gives a thread and a warp per element, and
    whether the warp template runs it."""

    node: int
    op: str
    value: str
    outputs: int
    terms: int
    thread_s: float
    warp_s: float
    warp: bool

    def __str__(self) -> str:
        marks = ("*", " ") if not self.warp else (" ", "*")
        return (f"{self.op} %{self.value}: a row reduction, {self.outputs} elements of {self.terms} terms\n"
                f"  {marks[0]} {self.thread_s * 1e6:10.1f} us  a thread per element\n"
                f"  {marks[1]} {self.warp_s * 1e6:10.1f} us  gpu warp shuffles, a warp per element")


@dataclass
class GridPlan:
    """The row reductions of a program, each with both templates' prices (``explain``)."""

    rows: list[RowChoice]

    def __str__(self) -> str:
        head = "row reductions (predicted time of each template, * chosen):"
        return "\n".join([head, *map(str, self.rows)]) if self.rows else "row reductions: none"

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [vars(r) for r in self.rows]}


def grid_program(graph: Graph, gpu: Gpu) -> tuple[LoopProgram, list[RowChoice]]:
    """``graph`` lowered for ``gpu`` with every kernel's statements block loops (module docstring),
    and the choice made for each row reduction."""
    program = lower_graph(graph, target="cuda", grid=True,
                          choose=lambda problem: price([problem], gpu)[0][0][0])
    rows: list[RowChoice] = []
    for k, low in enumerate(program.lowered):
        if k not in program.skipped:
            node = graph.nodes[k]
            where = (k, node.op, node.outputs[0])
            low.kernel.body = [_bind(where, s, gpu, rows) for s in low.kernel.body]
    return program, rows


def _bind(node: tuple[int, str, str], stage: Stmt, gpu: Gpu, rows: list[RowChoice]) -> For:
    if isinstance(stage, For) and stage.kind == "block":
        return stage
    row = row_stage(stage)
    if row is not None:
        thread_s, warp_s = (rows_seconds(row, gpu, warp=w) for w in (False, True))
        warp = lower(row) if warp_s < thread_s else None
        rows.append(RowChoice(*node, row.outputs, row.terms, thread_s, warp_s, warp is not None))
        if warp is not None:
            return warp
    return bind_threads(stage)
