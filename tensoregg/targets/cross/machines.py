"""The machines the cross targets compile for: what LLVM needs (triple, CPU, features, ABI), the
Debian tools that link and run the code (cross gcc, qemu-user), and the hardware facts their
``Target`` description gives the cost model.

No figure here is measured: code for these machines runs under emulation, whose speed says nothing
about the hardware. Peak rates and caches come from the cores' published specifications (cited at
each machine); the share of the peak each GEMM micro-kernel reaches is one fixed assumption,
``ASSUMED_EFFICIENCY``. Importing this module loads no llvmlite (``description`` does, when called).
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass

from tensoregg.targets import Target

ASSUMED_EFFICIENCY = 0.9
"""The share of the core's FMA peak every micro-kernel is assumed to reach (the ``llvm`` target
measures it per tile; under qemu a measurement would time the emulator). 0.9 is what the fixed x86
descriptions assume where unmeasured (``targets/llvm/machines.py``); every tile gets the same, so the
cost model ranks tiles by their edge waste and packing traffic alone."""
KERNEL_OVERHEAD_S = 2e-7
"""Fixed cost of calling one kernel, as the ``llvm`` target assumes (a function call on one thread)."""


@dataclass(frozen=True)
class CrossMachine:
    """A CPU the cross targets compile for (see the module docstring); the target's name is ``name``."""

    name: str
    summary: str
    triple: str
    """LLVM's target triple."""
    cpu: str
    """LLVM's CPU name (its scheduling model)."""
    features: str
    """LLVM's feature string."""
    abiname: str
    """The ABI LLVM compiles for where the architecture has several (matching the Debian toolchain)."""
    vector_bits: int
    vector_registers: int
    tools: str
    """The Debian triplet of the toolchain: ``<tools>-gcc`` links, ``qemu-<arch>`` runs."""
    qemu_cpu: str
    """qemu's ``-cpu`` option; ``{vlen}`` stands for the description's vector bits."""
    clock_hz: float
    fma_per_cycle: int
    """Full-width vector FMAs the core issues per cycle."""
    bandwidth: float
    """Bytes per second of main-memory traffic (read + written) one core sustains."""
    caches: tuple[tuple[str, int], ...]

    @property
    def gcc(self) -> str:
        return f"{self.tools}-gcc"

    @property
    def qemu(self) -> str:
        return f"qemu-{self.triple.split('-')[0]}"

    @property
    def core_flops(self) -> float:
        """fp32 FLOP/s of one core: vector FMAs per cycle x lanes x 2."""
        return self.clock_hz * self.fma_per_cycle * (self.vector_bits // 32) * 2


AARCH64 = CrossMachine(
    "aarch64", "AArch64 NEON code (Cortex-A72) through llvmlite, linked by aarch64-linux-gnu-gcc, "
    "run under qemu-aarch64, one thread",
    triple="aarch64-unknown-linux-gnu", cpu="cortex-a72", features="+neon", abiname="",
    vector_bits=128, vector_registers=32, tools="aarch64-linux-gnu", qemu_cpu="cortex-a72",
    clock_hz=1.5e9, fma_per_cycle=2, bandwidth=6.4e9,
    caches=(("L1", 32 << 10), ("L2", 1 << 20)))
"""A Cortex-A72 as in the Raspberry Pi 4 (BCM2711: 1.5 GHz, 32 KiB L1d per core, 1 MiB shared L2,
no L3). Two 128-bit ASIMD pipes, each issuing an FMLA per cycle (Arm's Cortex-A72 Software
Optimization Guide): 24 GFLOP/s. Bandwidth: half of its LPDDR4-3200 x32's 12.8 GB/s, an assumed
sustained share, not a measurement."""


def rvv(vlen: int) -> CrossMachine:
    """A 64-bit RISC-V core with the vector extension 1.0 and ``vlen``-bit vector registers.

    LLVM lowers the fixed-width vectors of the generated code (``<vlen/32 x float>``) to RVV only as
    well as it knows the minimum VLEN: ``+v`` alone promises 128 bits (Zvl128b), so 256-bit vectors
    take register pairs (LMUL 2) and the micro-kernels' accumulators spill. ``+zvl<vlen>b`` states
    the VLEN, one vector per register, as ``-riscv-v-vector-bits-min`` would, but per target machine
    rather than for the whole process. qemu runs it with the same VLEN (``qemu_cpu``).

    ``+zfhmin`` (float16 loads, stores and conversions to and from float) gives float16 values
    hardware conversions; without it LLVM calls libgcc's ``__truncsfhf2``, which Debian 12's cross
    libgcc (GCC 12) lacks. qemu 7.2 spells its option ``Zfhmin``."""
    return CrossMachine(
        "riscv64", f"RISC-V RV64GCV code (RVV 1.0, VLEN {vlen}) through llvmlite, linked by "
        "riscv64-linux-gnu-gcc, run under qemu-riscv64, one thread",
        triple="riscv64-unknown-linux-gnu", cpu="generic-rv64",
        features=f"+m,+a,+f,+d,+c,+v,+zvl{vlen}b,+zfhmin",
        abiname="lp64d", vector_bits=vlen, vector_registers=32, tools="riscv64-linux-gnu",
        qemu_cpu="rv64,v=true,vlen={vlen},vext_spec=v1.0,Zfhmin=true",
        clock_hz=1.6e9, fma_per_cycle=1, bandwidth=6.4e9,
        caches=(("L1", 32 << 10), ("L2", 512 << 10)))


RISCV64 = rvv(256)
"""VLEN 256 as in the SpacemiT X60 (K1 SoC, Banana Pi BPI-F3: RVV 1.0, VLEN 256, Zfh, 1.6 GHz, 32 KiB L1d,
512 KiB L2 per cluster of four; we count one cluster's L2 for one core). One VLEN-wide FMA per
cycle assumed: 25.6 GFLOP/s. Bandwidth: an assumption of the same order as the A72's."""

MACHINES = {m.name: m for m in (AARCH64, RISCV64)}


@functools.cache
def description(machine: CrossMachine) -> Target:
    """``machine`` as a Target: one core, its vector width and registers, the micro-kernels they fit
    (each at ``ASSUMED_EFFICIENCY``) and the ``llvm`` target's rule families (the same lowering and
    code generator)."""
    import dataclasses

    from tensoregg.targets.llvm.host import RULE_FAMILIES
    from tensoregg.targets.llvm.ukernels import microkernels_for

    tiles = tuple(dataclasses.replace(u, efficiency=ASSUMED_EFFICIENCY)
                  for u in microkernels_for(machine.vector_bits, machine.vector_registers))
    return Target(machine.name, peak_flops=machine.core_flops, mem_bandwidth=machine.bandwidth,
                  kernel_overhead_s=KERNEL_OVERHEAD_S, cpu=machine.cpu, features=machine.features,
                  vector_bits=machine.vector_bits, cores=1, caches=machine.caches,
                  vector_registers=machine.vector_registers, microkernels=tiles, rule_families=RULE_FAMILIES)


def missing_tools(machine: CrossMachine) -> str | None:
    """Why ``machine``'s code cannot be linked or run here (the tools not on PATH and the Debian
    packages that have them), or None."""
    packages = {machine.gcc: f"gcc-{machine.tools}", machine.qemu: "qemu-user"}
    missing = [tool for tool in packages if shutil.which(tool) is None]
    if not missing:
        return None
    return (f"{' and '.join(missing)} not found (Debian: apt-get install "
            f"{' '.join(packages[t] for t in missing)})")
