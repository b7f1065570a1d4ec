"""Fixed descriptions of the x86 machine kinds the team has measured (../shared/notes/anchors.md and
the closing notes), as the ``llvm`` target describes a host. Tests of cost-model decisions use them,
so that what they expect does not depend on the machine they run on; the host's own description is
measured (``tensoregg.targets.llvm.host.host_target``). Micro-kernel efficiencies are those measured
on each kind where known, else 0.9."""

from __future__ import annotations

from tensoregg.targets import Target
from tensoregg.targets.llvm.host import llvm_target, microkernels_for, vector_bits, vector_registers

AVX2 = "+avx,+avx2,+fma,+f16c,+bmi2"
AVX512 = AVX2 + ",+avx512f,+avx512bw,+avx512dq,+avx512vl"


def _machine(cpu: str, features: str, core_flops: float, bandwidth: float, l1: int, l2: int, l3: int,
             efficiency: dict[str, float] | None = None) -> Target:
    bits = vector_bits(features)
    measured = efficiency or {u.name: 0.9 for u in microkernels_for(bits, vector_registers(bits))}
    return llvm_target(cpu, features, 2, core_flops=core_flops, bandwidth=bandwidth,
                       caches=(("L1", l1), ("L2", l2), ("L3", l3)), efficiency=measured)


ZEN3_AVX2 = _machine("znver3", AVX2, 102.7e9, 21e9, 32 << 10, 512 << 10, 32 << 20)
"""2-core AMD EPYC, AVX2 (2026-11-25)."""
ROCKETLAKE_AVX512 = _machine("rocketlake", AVX512, 248e9, 30e9, 48 << 10, 2 << 20, 32 << 20)
"""2-core Intel (LLVM names it rocketlake; a 2 MiB L2), AVX-512 with two FMA pipes (2026-12-01). Its
copy bandwidth was not recorded: 30 GB/s reproduces the Winograd choices its session measured."""
ZEN4_AVX512 = _machine("znver4", AVX512, 117.3e9, 24e9, 32 << 10, 1 << 20, 32 << 20, {
    "gemm_f32_14x32": 0.915, "gemm_f32_9x48": 0.94, "gemm_f32_6x64": 0.969, "gemm_f32_8x48": 0.95,
    "gemm_f32_12x32": 0.918, "gemm_f32_4x64": 0.964, "gemm_f32_16x16": 0.877, "gemm_f32_2x64": 0.883,
    "gemm_f32_1x64": 0.485})
"""2-core AMD EPYC, AVX-512 on 256-bit pipes (2026-12-06)."""

MACHINES = {t.cpu: t for t in (ZEN3_AVX2, ROCKETLAKE_AVX512, ZEN4_AVX512)}
