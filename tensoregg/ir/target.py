"""A target's description: the facts of the machine it compiles for (vector width, registers,
caches, cores, peak rates, the intrinsics it offers) and the rule families it saturates. Cost models
and lowerings read only this; ``tensoregg.targets`` registers the targets that carry one."""

from __future__ import annotations

from dataclasses import dataclass, field

from tensoregg.ir.intrinsics import MicroKernel

RULE_FAMILIES = ("algebra", "layout", "linalg", "parallel", "fusion")
"""The rule families a target saturates unless it says otherwise, in order: parallel before fusion,
so that merged MatMuls still get their epilogues fused."""


@dataclass(frozen=True)
class Target:
    """The description of a target (see the module docstring)."""

    name: str
    peak_flops: float
    """Floating-point operations per second, all cores this target uses."""
    mem_bandwidth: float
    """Bytes per second of main-memory traffic (read + write)."""
    kernel_overhead_s: float
    """Fixed cost of launching one kernel."""
    cpu: str = ""
    """LLVM's name of the CPU (``znver3``), for native targets."""
    features: str = ""
    """LLVM's CPU feature string (``+avx2,+fma,...``)."""
    vector_bits: int = 128
    """Width of the widest float vector register."""
    cores: int = 1
    """CPUs the target's code may run on."""
    caches: tuple[tuple[str, int], ...] = field(default=())
    """(level, bytes) of the data caches, e.g. (("L1", 32768), ("L2", 524288), ...)."""
    vector_registers: int = 16
    """Architectural float vector registers (16 ymm with AVX2, 32 zmm with AVX-512)."""
    microkernels: tuple[MicroKernel, ...] = ()
    """GEMM micro-kernels the target's code generator emits (tensorize candidates)."""
    rule_families: tuple[str, ...] = RULE_FAMILIES
    """The rule families (``tensoregg.rules.RULESETS`` keys) saturated for this target, in order."""


    @property
    def core_flops(self) -> float:
        """Peak floating-point operations per second of one core."""
        return self.peak_flops / max(self.cores, 1)

    @property
    def lanes(self) -> int:
        """fp32 lanes of the widest vector register."""
        return self.vector_bits // 32

    def cache(self, level: str, default: int) -> int:
        """Bytes of cache ``level`` (``L1``, ``L2``, ``L3``), ``default`` where unknown."""
        return dict(self.caches).get(level, default)
