"""The accelerator configurations: a GEMM core of BATCH x BLOCK_IN by BLOCK_IN x BLOCK_OUT int8 MACs
per cycle, its scratchpads and its DMA bus (``docs/accelerator.md``). Imports the standard library
only: the simulator reads it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Accel:
    """One accelerator configuration. Scratchpad sizes count entries (tiles); the bytes per entry
    follow from the GEMM core's shape (``tile_bytes``)."""

    name: str
    batch: int
    """Rows of an input tile (and of an accumulator tile)."""
    block_in: int
    """The reduction length of one GEMM-core step."""
    block_out: int
    """Output channels of one GEMM-core step."""
    uop_entries: int
    """Micro-ops (32 bits each) the uop scratchpad holds."""
    inp_entries: int
    """Input tiles (batch x block_in int8)."""
    wgt_entries: int
    """Weight tiles (block_out x block_in int8)."""
    acc_entries: int
    """Accumulator tiles (batch x block_out int32)."""
    scale_entries: int
    """Requantization scale rows (block_out float32)."""
    bus_bytes: int = 8
    """Bytes the DMA moves per cycle (a 64-bit AXI bus)."""
    dma_latency: int = 64
    """Cycles from a DMA request to its first beat."""
    gemm_depth: int = 4
    """Pipeline depth of the GEMM core: cycles an instruction costs beyond one per micro-op."""
    alu_depth: int = 4
    """Pipeline depth of the vector ALU (which issues one micro-op every ``alu_ii`` cycles)."""
    alu_ii: int = 2
    clock_hz: float = 100e6
    """The clock (a Pynq-class FPGA build)."""

    @property
    def macs_per_cycle(self) -> int:
        """Multiply-accumulates the GEMM core performs per cycle."""
        return self.batch * self.block_in * self.block_out

    def tile_bytes(self, memory: str) -> int:
        """Bytes of one entry of scratchpad ``memory`` in main memory (``uop``, ``wgt``, ``inp``,
        ``acc``, ``out``, ``scale``)."""
        return {"uop": 4, "wgt": self.block_out * self.block_in, "inp": self.batch * self.block_in,
                "acc": 4 * self.batch * self.block_out, "out": self.batch * self.block_out,
                "scale": 4 * self.block_out}[memory]

    def entries(self, memory: str) -> int:
        """Entries of scratchpad ``memory`` (``out`` tiles are stored from the accumulator)."""
        return {"uop": self.uop_entries, "wgt": self.wgt_entries, "inp": self.inp_entries,
                "acc": self.acc_entries, "out": self.acc_entries, "scale": self.scale_entries}[memory]


VTA = Accel("accel", batch=1, block_in=16, block_out=16, uop_entries=8192, inp_entries=2048,
            wgt_entries=1024, acc_entries=2048, scale_entries=512)
"""VTA's default configuration (1x16x16, 256 MACs/cycle; 32 KiB uop, 32 KiB input, 256 KiB weight,
128 KiB accumulator scratchpads) plus a 32 KiB scale scratchpad."""

SMALL = Accel("accel-small", batch=1, block_in=8, block_out=8, uop_entries=2048, inp_entries=512,
              wgt_entries=256, acc_entries=512, scale_entries=128)
"""A smaller one: 1x8x8 (64 MACs/cycle); 8 KiB uop, 4 KiB input, 16 KiB weight, 16 KiB accumulator
and 4 KiB scale scratchpads."""

CONFIGS = {VTA.name: VTA, SMALL.name: SMALL}
"""The registered configurations by target name."""
