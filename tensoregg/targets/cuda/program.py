"""A Graph as a CUDA program: its loop program (``lower_graph(grid=True)``: contractions in the
shared-memory tiles extraction chose, ``gemm``) with every other stage bound to a grid of blocks and
threads (``schedule``; row reductions a warp per element where the cost model prefers it, ``rows``),
written as CUDA C (``codegen``) and compiled by
NVRTC for the GPU's architecture. ``run`` executes the kernel programs in the ``interp`` target's
emulation when ``TENSOREGG_CUDA_EMULATE=1`` is set (on any machine), on the device otherwise
(``tensoregg.runtime.cuda``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tensoregg.errors import CompileError
from tensoregg.ir.graph import Graph
from tensoregg.ir.loops import For, Kernel, Stmt
from tensoregg.ir.program import lower_graph
from tensoregg.ir.target import Target
from tensoregg.runtime.cuda import emulating
from tensoregg.targets.cuda.codegen import PRELUDE, kernel_source, used_params
from tensoregg.targets.cuda.cost import price, rows_seconds
from tensoregg.targets.cuda.machines import Gpu
from tensoregg.targets.cuda.nvrtc import Cubin, compile_source, nvrtc_missing
from tensoregg.targets.cuda.rows import lower, row_stage
from tensoregg.targets.cuda.schedule import Launch, bind_threads, launches


@dataclass
class KernelLaunch:
    """One launch of the program: the ``__global__`` function, its grid, and the params it takes (by
    their index in the node kernel's params)."""

    node: int
    launch: Launch
    params: list[int]


@dataclass
class RowChoice:
    """A row reduction stage of node ``node`` (``outputs`` elements of ``terms`` terms): the seconds
    the cost model gives a thread and a warp per element, and whether the warp template runs it."""

    node: int
    outputs: int
    terms: int
    thread_s: float
    warp_s: float
    warp: bool

    def __str__(self) -> str:
        marks = ("*", " ") if not self.warp else (" ", "*")
        return (f"node {self.node}: row reduction, {self.outputs} elements of {self.terms} terms\n"
                f"  {marks[0]} {self.thread_s * 1e6:10.1f} us  a thread per element\n"
                f"  {marks[1]} {self.warp_s * 1e6:10.1f} us  gpu warp shuffles, a warp per element")


class CudaProgram:
    """``graph`` for ``gpu`` (see the module docstring). ``source`` is the CUDA C of every kernel,
    ``cubins`` the compiled module per architecture (empty where NVRTC is absent and the program only
    runs emulated)."""

    def __init__(self, graph: Graph, target: Target, gpu: Gpu) -> None:
        self.graph, self.target, self.gpu = graph, target, gpu
        self.program = lower_graph(graph, target="cuda", grid=True,
                                   choose=lambda problem: price([problem], gpu)[0][0][0])
        self.launches: list[KernelLaunch] = []
        self.rows: list[RowChoice] = []
        parts = [PRELUDE.strip()]
        for k, low in enumerate(self.program.lowered):
            if k in self.program.skipped:
                continue
            low.kernel.body = [self._bind(k, s) for s in low.kernel.body]
            parts += self._kernels(k, low.kernel)
        self.source = "\n\n".join(parts) + "\n"
        self.cubins: dict[str, Cubin] = {}
        if nvrtc_missing() is None:
            self.cubins[gpu.arch] = compile_source(self.source, gpu.arch)
        elif not emulating():
            raise CompileError(nvrtc_missing() or "")
        self._runner: object | None = None

    def _bind(self, node: int, stage: Stmt) -> For:
        """``stage`` as a grid: a block loop as it is; a row reduction a warp per element where the cost
        model prices that below a thread per element (``rows``; recorded in ``rows``); else a thread
        per element."""
        if isinstance(stage, For) and stage.kind == "block":
            return stage
        row = row_stage(stage)
        if row is not None:
            costs = [rows_seconds(row, self.gpu, warp=w) for w in (False, True)]
            warp = lower(row) if costs[1] < costs[0] else None
            self.rows.append(RowChoice(node, row.outputs, row.terms, costs[0], costs[1], warp is not None))
            if warp is not None:
                return warp
        return bind_threads(stage)

    def _kernels(self, node: int, kernel: Kernel) -> list[str]:
        written = {id(b) for b in kernel.outputs}
        index = {id(b): i for i, b in enumerate(kernel.params)}
        sources = []
        for launch in launches(kernel):
            params = used_params(launch, kernel.params)
            self.launches.append(KernelLaunch(node, launch, [index[id(b)] for b in params]))
            sources.append(kernel_source(launch, params, written))
        return sources

    def compile_for(self, arch: str) -> Cubin:
        """The program's module compiled for another architecture (checks; an artifact for several)."""
        if arch not in self.cubins:
            self.cubins[arch] = compile_source(self.source, arch)
        return self.cubins[arch]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """On the device; with ``TENSOREGG_CUDA_EMULATE=1``, the kernel programs in the emulation."""
        if self._runner is None:
            if emulating():
                from tensoregg.targets.interp.program import InterpProgram

                self._runner = InterpProgram(self.graph, self.target, program=self.program)
            else:
                from tensoregg.runtime.cuda import CudaExecutor
                from tensoregg.targets.cuda.export import cuda_code

                self._runner = CudaExecutor(cuda_code(self))
        return self._runner.run(feeds)  # type: ignore[attr-defined]
