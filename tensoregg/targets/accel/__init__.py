"""The ``accel`` targets: an int8 deep-learning accelerator in the style of VTA (``docs/accelerator.md``).
A GEMM core multiplies an int8 BATCH x BLOCK_IN tile by an int8 BLOCK_IN x BLOCK_OUT weight tile into
int32 accumulators each cycle; scratchpads, 2-D strided DMA with padding, a vector ALU with
onnxruntime's requantization, and load / compute / store queues synchronised by dependency tokens.
Its configurations (``machines``) are one registration each: ``accel`` (1x16x16, VTA's sizes) and
``accel-small`` (1x8x8). Programs (``isa``: 128-bit instructions, assembler and disassembler;
``program``: the file the runtime loads) run in the simulator (``simulator``, numpy).

``lower`` compiles int8 matrix products and convolutions (MatMulInteger, QLinearMatMul, ConvInteger,
QLinearConv) to programs tiled onto the GEMM core (``tensorize``: matrix products; ``conv``: 2-D
convolutions directly). ``placement`` chooses, by extraction over both devices' costs and the
transfers between them, which nodes run there and which on the CPU beside it (every other op, and
what is cheaper there); ``mixed`` runs the placed Graph: CPU segments compiled by ``llvm`` (or run
by ``ref``), accelerator segments in the simulator behind a ``driver``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from tensoregg.ir.target import RULE_FAMILIES
from tensoregg.targets import Program, Target, register_target
from tensoregg.targets.accel.machines import CONFIGS, Accel

if TYPE_CHECKING:
    from tensoregg.ir import Graph
    from tensoregg.targets.accel.mixed import MixedProgram


def description(accel: Accel) -> Target:
    """The target description the graph cost model reads: the GEMM core's peak (two operations per
    MAC), the DMA bus's bandwidth, one scratchpad as the cache; the quantization rules first (QDQ
    products become the integer kernels the GEMM core runs)."""
    return Target(accel.name, peak_flops=2 * accel.macs_per_cycle * accel.clock_hz,
                  mem_bandwidth=accel.bus_bytes * accel.clock_hz,
                  kernel_overhead_s=accel.dma_latency / accel.clock_hz,
                  vector_bits=8 * accel.block_in,
                  caches=(("L1", accel.inp_entries * accel.tile_bytes("inp")),),
                  rule_families=("quantization", *RULE_FAMILIES))


def _build(graph: Graph, target: Target) -> Program:
    from tensoregg.targets.accel.mixed import MixedProgram

    return MixedProgram(graph, CONFIGS[target.name])


def _plan(graph: Graph, target: Target) -> MixedProgram:
    """The placement of ``graph`` with its accelerator kernels built (not its CPU segments)."""
    from tensoregg.targets.accel.mixed import MixedProgram

    return MixedProgram(graph, CONFIGS[target.name], build_cpu=False)


def register_accel(accel: Accel, *, replace: bool = False) -> None:
    """Make configuration ``accel`` a target of its name (another GEMM core, scratchpads, link or
    host CPU: ``dataclasses.replace(VTA, name=..., ...)``)."""
    shape = f"{accel.batch}x{accel.block_in}x{accel.block_out}"
    beside = f"beside a CPU ({', '.join(accel.cpu_targets)})" if accel.cpu_targets else "alone (no CPU)"
    register_target(accel.name, summary=f"int8 accelerator {shape} (VTA-like ISA), run in its "
                    f"cycle-counting simulator, {beside}", describe=functools.partial(description, accel),
                    build=_build, plan=_plan, replace=replace)
    CONFIGS[accel.name] = accel


for _accel in list(CONFIGS.values()):
    register_accel(_accel)
    # the same accelerator with no CPU beside it: every node on the accelerator, or refused
    register_accel(dataclasses.replace(_accel, name=f"{_accel.name}-alone", cpu_targets=()))

__all__ = ["CONFIGS", "Accel", "description", "register_accel"]
