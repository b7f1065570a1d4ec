"""The cuda target's cost model of a contraction's schedules: the ``Pricer`` its registration gives
extraction (``tensoregg.ir.schedules``). Analytic and rough (no GPU has measured it yet):

- **Shared tiles** (``gemm.SharedTiles``): blocks resident per SM as threads, shared memory and
  registers allow; the blocks run in waves over the SMs. A block's arithmetic runs at the CUDA
  cores' rate times the fraction of it that shared-memory reads allow (each FMA of a ``tm`` x ``tn``
  register tile reads ``(tm + tn) / (tm * tn)`` words, against 32 words per clock for 128 FMAs per
  clock) and the occupancy (16 warps per SM hide latency). Each tile copy reads its A and B slices
  through L2; the matrices come from device memory once.
- **Untiled** (one thread per element): every FMA loads both operands through L1; a twentieth of
  the CUDA cores' rate at full occupancy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tensoregg.ir.schedules import GemmProblem, Schedule, Untiled
from tensoregg.ir.target import Target
from tensoregg.targets.cuda.gemm import SharedTiles, templates
from tensoregg.targets.cuda.machines import Gpu

L2_OVER_DRAM = 2.5
"""L2 bandwidth as a multiple of device memory's (H100: ~8 TB/s against 3.35)."""
UNTILED_EFFICIENCY = 0.05
"""The CUDA cores' rate an untiled contraction reaches at full occupancy: two loads through L1 per
FMA (a naive SIMT GEMM; to be measured on a device)."""
LATENCY_WARPS = 16
"""Resident warps per SM that hide the latency of shared and global memory."""
KEEP = 16
"""The cheapest shared-tile schedules of each problem that extraction sees."""


def untiled_seconds(p: GemmProblem, gpu: Gpu) -> float:
    threads = p.batch * p.m * p.n
    occupancy = min(1.0, threads / (gpu.sms * 32 * LATENCY_WARPS))
    words = p.batch * (p.m * p.k + p.k * p.n + p.m * p.n)
    compute = p.flops / (gpu.peak_flops["fp32"] * UNTILED_EFFICIENCY * occupancy)
    return max(compute, words * 4 / gpu.dram_bandwidth) + gpu.launch_s


def tiles_seconds(p: GemmProblem, t: SharedTiles, gpu: Gpu) -> float:
    gm, gn, gk = math.ceil(p.m / t.bm), math.ceil(p.n / t.bn), math.ceil(p.k / t.bk)
    blocks = p.batch * gm * gn
    resident = max(1, min(gpu.blocks_per_sm, gpu.threads_per_sm // t.threads,
                          gpu.shared_per_sm // t.shared_bytes,
                          gpu.registers_per_sm // (t.threads * max(t.registers, 32))))
    waves = math.ceil(blocks / (gpu.sms * resident))
    concurrent = min(resident, math.ceil(blocks / gpu.sms))  # blocks per SM at once
    reads_per_fma = (t.tm + t.tn) / (t.tm * t.tn)
    efficiency = min(1.0, 0.25 / reads_per_fma) * min(1.0, concurrent * t.threads / (32 * LATENCY_WARPS))
    per_sm = gpu.peak_flops["fp32"] / gpu.sms
    block_flops = 2 * t.bm * t.bn * gk * t.bk
    compute = waves * concurrent * block_flops / (per_sm * efficiency)
    l2_bytes = 4 * blocks * gk * t.bk * (t.bm + t.bn)
    dram_bytes = 4 * p.batch * (p.m * p.k + p.k * p.n + p.m * p.n)
    return max(compute, l2_bytes / (gpu.dram_bandwidth * L2_OVER_DRAM), dram_bytes / gpu.dram_bandwidth) \
        + gpu.launch_s


def price(problems: Sequence[GemmProblem], target: Target, gpu: Gpu) -> list[list[tuple[Schedule, float]]]:
    """Each problem's schedules with predicted seconds, cheapest first: Untiled and the ``KEEP``
    cheapest shared-tile schedules (float32 problems; others stay untiled)."""
    candidates = templates(gpu)
    out: list[list[tuple[Schedule, float]]] = []
    for p in problems:
        priced: list[tuple[Schedule, float]] = [(Untiled(), untiled_seconds(p, gpu))]
        if p.dtype == "float32":
            tiled = sorted(((t, tiles_seconds(p, t, gpu)) for t in candidates), key=lambda x: x[1])
            priced += tiled[:KEEP]
        out.append(sorted(priced, key=lambda x: x[1]))
    return out
