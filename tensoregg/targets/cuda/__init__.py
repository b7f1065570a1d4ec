"""The ``cuda`` target: NVIDIA GPUs. Each stage of the loop program runs as a grid of blocks and
threads (``schedule``: element-wise stages 16 bytes per thread where contiguous; contractions in
shared-memory tiles, ``gemm``, float16 and bfloat16 ones on the tensor cores, ``mma``, float32 ones
too with ``TENSOREGG_CUDA_TF32=1``, their tiles filled by ``copies``, double-buffered with
``cp.async`` or not; priced by ``cost`` and chosen by the model's extraction), written as CUDA C
(``codegen``), compiled at build time by NVRTC (``nvrtc``: no GPU needed) for the GPU's
architecture. With ``TENSOREGG_CUDA_EMULATE=1`` a module
runs its kernel programs in the ``interp`` target's emulation, so the GPU path is checked on any
machine. The GPU is described in ``machines``: ``TENSOREGG_CUDA_ARCH``'s (``sm_80``: the A100), else
the device's, else the H100. On a device, ``tensoregg.runtime.cuda`` runs the program (the driver API).

Importing this package loads neither NVRTC nor the code generator.
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from tensoregg.errors import CompileError
from tensoregg.targets import Program, Target, register_target
from tensoregg.targets.cuda.machines import GPUS, Gpu, description, scaled

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tensoregg.ir import Graph
    from tensoregg.ir.schedules import GemmProblem, Schedule
    from tensoregg.runtime.artifact import TargetCode
    from tensoregg.targets.cuda.grid import GridPlan
    from tensoregg.targets.cuda.program import CudaProgram

ARCH = "TENSOREGG_CUDA_ARCH"
"""The architecture to compile for (``sm_80``, ``sm_90``: the GPUs of ``machines.GPUS``)."""
TF32 = "TENSOREGG_CUDA_TF32"
"""Set to 1: float32 contractions may run on the tensor cores in tf32 (``Gpu.tf32``; off by default,
as in PyTorch and onnxruntime: tf32 keeps 10 mantissa bits of each input)."""


def chosen_gpu() -> Gpu:
    """The GPU the target compiles for: ``TENSOREGG_CUDA_ARCH``'s, else device 0's (its counts read
    through the driver), else the H100; with tf32 where ``TENSOREGG_CUDA_TF32=1``."""
    arch = os.environ.get(ARCH)
    gpu = _device() if arch is None else None
    if gpu is None:
        arch = arch or "sm_90"
        if arch not in GPUS:
            raise CompileError(f"{ARCH}={arch!r}: known architectures are {', '.join(sorted(GPUS))}")
        gpu = GPUS[arch]
    return replace(gpu, tf32=os.environ.get(TF32) == "1")


@functools.cache
def _device() -> Gpu | None:
    """Device 0 as a ``Gpu`` (its architecture's facts, its own SM count, clock, L2 and shared
    memory), when there is one of a known architecture."""
    from tensoregg.runtime.cuda import device_facts, device_missing

    if device_missing() is not None:
        return None
    facts = device_facts()
    if facts["arch"] not in GPUS:
        return None
    return scaled(GPUS[facts["arch"]], sms=facts["sms"], clock_hz=facts["clock_hz"],
                  l2_bytes=facts["l2_bytes"], shared_per_block_optin=facts["shared_per_block_optin"],
                  name=facts["name"])


def _build(graph: Graph, target: Target) -> CudaProgram:
    from tensoregg.targets.cuda.program import CudaProgram

    return CudaProgram(graph, target, chosen_gpu())


def _unavailable() -> str | None:
    from tensoregg.runtime.cuda import EMULATE, device_missing, emulating
    from tensoregg.targets.cuda.nvrtc import nvrtc_missing

    if emulating():
        return None
    missing = nvrtc_missing() or device_missing()
    return f"{missing}; {EMULATE}=1 runs the kernels emulated" if missing else None


def _save(program: Program) -> TargetCode:
    from tensoregg.targets.cuda.export import save_cuda

    return save_cuda(cast("CudaProgram", program))


def _plan(graph: Graph, target: Target) -> GridPlan:
    """Each row reduction of ``graph`` with both templates' prices (``explain -t cuda``)."""
    from tensoregg.targets.cuda.grid import GridPlan, grid_program

    return GridPlan(grid_program(graph, chosen_gpu())[1])


def _schedules(problems: Sequence[GemmProblem], target: Target) -> list[list[tuple[Schedule, float]]]:
    from tensoregg.targets.cuda.cost import price

    return price(problems, chosen_gpu())


register_target("cuda", summary="NVIDIA GPUs: CUDA C compiled by NVRTC, contractions in shared-memory "
                "tiles (float16/bfloat16 on tensor cores), long row reductions a warp per element "
                "(shuffles), other kernels a thread per element "
                "(TENSOREGG_CUDA_EMULATE=1: run in the emulator)",
                describe=lambda: description(chosen_gpu()), build=_build, unavailable=_unavailable,
                schedules=_schedules, save=_save, plan=_plan)

__all__ = ["ARCH", "GPUS", "TF32", "Gpu", "chosen_gpu"]
