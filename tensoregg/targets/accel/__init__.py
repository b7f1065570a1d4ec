"""The ``accel`` targets: an int8 deep-learning accelerator in the style of VTA (``docs/accelerator.md``).
A GEMM core multiplies an int8 BATCH x BLOCK_IN tile by an int8 BLOCK_IN x BLOCK_OUT weight tile into
int32 accumulators each cycle; scratchpads, 2-D strided DMA with padding, a vector ALU with
onnxruntime's requantization, and load / compute / store queues synchronised by dependency tokens.
Its configurations (``machines``) are one registration each: ``accel`` (1x16x16, VTA's sizes) and
``accel-small`` (1x8x8). Programs (``isa``: 128-bit instructions, assembler and disassembler;
``program``: the file the runtime loads) run in the simulator (``simulator``, numpy).

``lower`` compiles int8 matrix products and convolutions (MatMulInteger, QLinearMatMul, ConvInteger,
QLinearConv) to programs tiled onto the GEMM core (``tensorize``: matrix products; ``conv``: 2-D
convolutions directly); any other op raises ``UnsupportedOperator`` (no CPU fallback yet).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from tensoregg.targets import Program, Target, register_target
from tensoregg.targets.accel.machines import CONFIGS, Accel

if TYPE_CHECKING:
    from tensoregg.ir import Graph


def description(accel: Accel) -> Target:
    """The target description the graph cost model reads: the GEMM core's peak (two operations per
    MAC), the DMA bus's bandwidth, one scratchpad as the cache."""
    return Target(accel.name, peak_flops=2 * accel.macs_per_cycle * accel.clock_hz,
                  mem_bandwidth=accel.bus_bytes * accel.clock_hz,
                  kernel_overhead_s=accel.dma_latency / accel.clock_hz,
                  vector_bits=8 * accel.block_in,
                  caches=(("L1", accel.inp_entries * accel.tile_bytes("inp")),))


def _build(graph: Graph, target: Target) -> Program:
    from tensoregg.targets.accel.lower import lower

    return lower(graph, CONFIGS[target.name])


for _accel in CONFIGS.values():
    _shape = f"{_accel.batch}x{_accel.block_in}x{_accel.block_out}"
    register_target(_accel.name, summary=f"int8 accelerator {_shape} (VTA-like ISA), run in its "
                    "cycle-counting simulator", describe=functools.partial(description, _accel),
                    build=_build)

__all__ = ["CONFIGS", "Accel", "description"]
