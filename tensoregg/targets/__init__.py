"""Targets: what a machine offers (its hardware facts) and which rule families it uses.

Cost models and lowerings read only the Target. The figures of ``REF`` are this machine kind's
measured anchors (one AMD EPYC core: 102.7 GFLOP/s fp32 FMA peak, ~21 GB/s copy bandwidth, see
../shared/notes/anchors.md); the LLVM target will measure its host once and cache the result.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    peak_flops: float
    """Floating-point operations per second, all cores this target uses."""
    mem_bandwidth: float
    """Bytes per second of main-memory traffic (read + write)."""
    kernel_overhead_s: float
    """Fixed cost of launching one kernel."""
    rule_families: tuple[str, ...] = ("algebra", "layout", "linalg", "parallel", "fusion")
    """The rule families (``tensoregg.rules.RULESETS`` keys) saturated for this target, in order:
    parallel before fusion, so that merged MatMuls still get their epilogues fused."""


REF = Target("ref", peak_flops=102.7e9, mem_bandwidth=21e9, kernel_overhead_s=2e-6)
LLVM = Target("llvm", peak_flops=102.7e9, mem_bandwidth=21e9, kernel_overhead_s=2e-7)

TARGETS: dict[str, Target] = {t.name: t for t in (REF, LLVM)}
