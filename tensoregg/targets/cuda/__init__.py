"""The ``cuda`` target: NVIDIA GPUs. Each stage of the loop program runs as a grid of blocks and
threads (``schedule``; contractions in shared-memory tiles, ``gemm``, priced by ``cost`` and
chosen by the model's extraction), written as CUDA C (``codegen``), compiled at build time by NVRTC
(``nvrtc``: no GPU needed) for the GPU's architecture. With ``TENSOREGG_CUDA_EMULATE=1`` a module
runs its kernel programs in the ``interp`` target's emulation, so the GPU path is checked on any
machine. The GPU is described in ``machines`` (the H100 unless ``TENSOREGG_CUDA_ARCH`` names
another architecture).

Importing this package loads neither NVRTC nor the code generator.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tensoregg.errors import CompileError
from tensoregg.targets import Target, register_target
from tensoregg.targets.cuda.machines import GPUS, Gpu, description

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tensoregg.ir import Graph
    from tensoregg.ir.schedules import GemmProblem, Schedule
    from tensoregg.targets.cuda.program import CudaProgram

ARCH = "TENSOREGG_CUDA_ARCH"
"""The architecture to compile for (``sm_80``, ``sm_90``: the GPUs of ``machines.GPUS``)."""


def chosen_gpu() -> Gpu:
    """The GPU the target compiles for: ``TENSOREGG_CUDA_ARCH``'s, else the H100."""
    arch = os.environ.get(ARCH, "sm_90")
    if arch not in GPUS:
        raise CompileError(f"{ARCH}={arch!r}: known architectures are {', '.join(sorted(GPUS))}")
    return GPUS[arch]


def _build(graph: Graph, target: Target) -> CudaProgram:
    from tensoregg.targets.cuda.program import CudaProgram

    return CudaProgram(graph, target, chosen_gpu())


def _unavailable() -> str | None:
    from tensoregg.targets.cuda.nvrtc import nvrtc_missing
    from tensoregg.targets.cuda.program import EMULATE, emulating

    if emulating():
        return None
    return nvrtc_missing() or f"no CUDA device runtime yet; {EMULATE}=1 runs the kernels emulated"


def _schedules(problems: Sequence[GemmProblem], target: Target) -> list[list[tuple[Schedule, float]]]:
    from tensoregg.targets.cuda.cost import price

    return price(problems, target, chosen_gpu())


register_target("cuda", summary="NVIDIA GPUs: CUDA C compiled by NVRTC, contractions in shared-memory "
                "tiles, other kernels a thread per element (TENSOREGG_CUDA_EMULATE=1: run in the emulator)",
                describe=lambda: description(chosen_gpu()), build=_build, unavailable=_unavailable,
                schedules=_schedules)

__all__ = ["ARCH", "GPUS", "Gpu", "chosen_gpu"]
