"""A Graph as a CUDA program: its loop program with every stage bound to a grid of blocks and
threads (``grid``: contractions in the tiles extraction chose, row reductions a warp or a thread per
element, the rest a thread per element), written as CUDA C (``codegen``) and compiled by
NVRTC for the GPU's architecture. ``run`` executes the kernel programs in the ``interp`` target's
emulation when ``TENSOREGG_CUDA_EMULATE=1`` is set (on any machine), on the device otherwise
(``tensoregg.runtime.cuda``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensoregg.errors import CompileError
from tensoregg.ir.graph import Graph
from tensoregg.ir.loops import Kernel
from tensoregg.ir.target import Target
from tensoregg.runtime.cuda import emulating
from tensoregg.runtime.device_arrays import DeviceArray, DeviceView, host_view, same_kind
from tensoregg.targets.cuda.codegen import PRELUDE, kernel_source, used_params
from tensoregg.targets.cuda.grid import grid_program
from tensoregg.targets.cuda.machines import Gpu
from tensoregg.targets.cuda.nvrtc import Cubin, compile_source, nvrtc_missing
from tensoregg.targets.cuda.schedule import Launch, launches


@dataclass
class KernelLaunch:
    """One launch of the program: the ``__global__`` function, its grid, and the params it takes (by
    their index in the node kernel's params)."""

    node: int
    launch: Launch
    params: list[int]


class CudaProgram:
    """``graph`` for ``gpu`` (see the module docstring). ``source`` is the CUDA C of every kernel,
    ``cubins`` the compiled module per architecture (empty where NVRTC is absent and the program only
    runs emulated)."""

    def __init__(self, graph: Graph, target: Target, gpu: Gpu) -> None:
        self.graph, self.target, self.gpu = graph, target, gpu
        self.program, self.rows = grid_program(graph, gpu)
        self.launches: list[KernelLaunch] = []
        parts = [PRELUDE.strip()]
        for k, low in enumerate(self.program.lowered):
            if k not in self.program.skipped:
                parts += self._kernels(k, low.kernel)
        self.source = "\n\n".join(parts) + "\n"
        self.cubins: dict[str, Cubin] = {}
        if nvrtc_missing() is None:
            self.cubins[gpu.arch] = compile_source(self.source, gpu.arch)
        elif not emulating():
            raise CompileError(nvrtc_missing() or "")
        self._runner: object | None = None

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

    takes_device_arrays = True
    """Inputs may lie in device memory (``tensoregg.runtime.device_arrays``)."""

    def run(self, feeds: Mapping[str, np.ndarray | DeviceView]) -> list[Any]:
        """On the device; with ``TENSOREGG_CUDA_EMULATE=1``, the kernel programs in the emulation (an
        input in device memory then lies in this process's: read in place, the outputs returned in
        the same kind)."""
        if self._runner is None:
            if emulating():
                from tensoregg.targets.interp.program import InterpProgram

                self._runner = InterpProgram(self.graph, self.target, program=self.program)
            else:
                from tensoregg.runtime.cuda import CudaExecutor
                from tensoregg.targets.cuda.export import cuda_code

                self._runner = CudaExecutor(cuda_code(self))
        views = [v for v in feeds.values() if isinstance(v, DeviceView)]
        if not views or not emulating():
            return self._runner.run(feeds)  # type: ignore[attr-defined]
        host = {n: host_view(v) if isinstance(v, DeviceView) else v for n, v in feeds.items()}
        outputs = self._runner.run(host)  # type: ignore[attr-defined]
        return [same_kind(views[0].kind, DeviceArray.on_host(np.ascontiguousarray(a))) for a in outputs]
