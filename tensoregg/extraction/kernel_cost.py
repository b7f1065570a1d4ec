"""Predicted run time of a GEMM under each of its schedules: an analytic model over target facts,
vectorized with numpy over the schedules (one problem, thousands of schedules at once).

A tiled schedule (``tensoregg.ir.schedules.GemmSchedule``) runs ``batch x split_m x split_n`` tasks
over the cores in waves (ceil division: the imbalance). One task, the largest (its M and N rounded
up to whole register tiles):

- compute: the micro-kernel's vector FMAs over the padded tiles, at the core's peak times the tile's
  efficiency (measured on the host, ``MicroKernel.efficiency``; where unknown, estimated from enough
  independent accumulators to hide the FMA latency and enough FMAs per load), plus a
  fixed cost per micro-kernel call (its C tile loaded and stored once per kc block) and the packing
  copies;
- memory: A, B and C from main memory once; A again per jc block, a B micro-panel per micro-kernel
  call (the packed B block is streamed once per A micro-panel) and the C tile per kc block, each
  from the level where its working set fits (L2, the task's share of L3, else main memory);
- time = max(compute, memory) + ``MEMORY_EXPOSED`` x memory.

The default lowering (``Untiled``) vectorizes the output row only: a fraction of the core's peak, on
all cores, re-reading B per output row.

The constants below are named so that calibration changes numbers, not code. ``bench/cost_model.py``
measures 8 problems x 8 schedules on the host and fits them: on the rocketlake host (2026-12-01) it
set PACK_SLOTS_PER_VECTOR (2 -> 32) and MEMORY_EXPOSED (0.25 -> 0.15), which took the mean
|log(predicted / measured)| from 0.185 to 0.118 (Spearman rank correlation 0.79 averaged over the
problems, regret of the pick 2.8%); the others were guesses the data did not move.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tensoregg.ir.schedules import GemmProblem, GemmSchedule
from tensoregg.ir.target import Target

F32 = 4
"""Bytes of a float32."""
FMA_CHAINS = 8
"""Independent accumulators that keep the FMA pipes busy (latency 4 x 2 pipes)."""
FMA_PER_LOAD = 2.0
"""FMAs per k-step load (mr * nv / (nv + 1)) at which loads no longer limit the micro-kernel."""
UKERNEL_EFFICIENCY = 0.9
"""Fraction of the FMA peak a register tile that passes both limits reaches."""
CALL_SLOTS = 8.0
"""Fixed cost of one micro-kernel call, in vector-FMA slots (call, pointers, loop setup)."""
C_SLOTS_PER_VECTOR = 2.0
"""Cost of loading and storing one accumulator vector of the C tile, per call, in FMA slots."""
PACK_SLOTS_PER_VECTOR = 32.0
"""Cost of packing one vector of A or B, in FMA slots (fitted: packing runs at about scalar-copy
speed, two slots per element)."""
L2_BANDWIDTH_FACTOR = 16.0
"""One core's L2 bandwidth, in multiples of main-memory bandwidth per core."""
L3_BANDWIDTH_FACTOR = 4.0
"""The shared L3's bandwidth, in multiples of main-memory bandwidth."""
MEMORY_EXPOSED = 0.15
"""Fraction of the memory time that does not overlap compute."""
THREAD_HANDOFF_S = 0.5e-6
"""Handing a kernel to more than one thread and waiting for all of them."""
TILED_SETUP_S = 1e-6
"""Entering the blocked nest: packing buffers, edge tiles through a scratch tile."""
UNTILED_EFFICIENCY = 0.15
"""Fraction of a core's peak the default lowering's row form (output rows vectorized) reaches."""
UNTILED_SCALAR_EFFICIENCY = 0.006
"""The same for its scalar form (an output whose last axis is 1: a serial FMA chain per element, e.g.
a 1x1 Conv on a 1x1 map, DenseNet's classifier: measured 1.5 GFLOP/s)."""
UNTILED_STRIP_BANDWIDTH = 0.5
"""Share of main-memory bandwidth the row form gets reading B: it walks B in column strips, one
k row apart, which the hardware prefetchers (following a stream within a page) do not follow
(measured: 8.6 GB/s for a 9216 x 4096 GEMV, against 15.4 for the packed panels it streams tiled)."""
DEFAULT_CACHES = {"L1": 32 << 10, "L2": 256 << 10, "L3_per_core": 1 << 20}
"""Cache sizes assumed where the target does not say."""


def cache_bytes(target: Target, level: str) -> int:
    """Bytes of cache ``level`` (``L1``, ``L2``, ``L3``) on ``target``, or the assumed default."""
    default = DEFAULT_CACHES["L3_per_core"] * max(target.cores, 1) if level == "L3" else DEFAULT_CACHES[level]
    return target.cache(level, default)


class _Memory:
    """Per-task bandwidth of each level with ``active`` tasks running at once (L2 is private; L3
    and main memory are shared)."""

    def __init__(self, target: Target, active: np.ndarray) -> None:
        cores = max(target.cores, 1)
        self.dram = target.mem_bandwidth / active
        self.l3 = L3_BANDWIDTH_FACTOR * target.mem_bandwidth / active
        self.l2 = L2_BANDWIDTH_FACTOR * target.mem_bandwidth / cores
        self.l2_bytes = cache_bytes(target, "L2")
        self.l3_share = cache_bytes(target, "L3") / active

    def seconds(self, nbytes: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Time to move ``nbytes`` of a working set of ``footprint`` bytes from where it fits."""
        bandwidth = np.where(footprint <= self.l2_bytes, self.l2,
                             np.where(footprint <= self.l3_share, self.l3, self.dram))
        return nbytes / bandwidth


def _time(compute: np.ndarray, memory: np.ndarray) -> np.ndarray:
    return np.maximum(compute, memory) + MEMORY_EXPOSED * memory


def gemm_cost(problem: GemmProblem, schedules: Sequence[GemmSchedule], target: Target) -> np.ndarray:
    """Predicted seconds of ``problem`` under each of ``schedules`` on ``target``."""
    p, cores, lanes = problem, max(target.cores, 1), target.lanes
    if not schedules:
        return np.zeros(0)
    mr, nr, nc, kc, sm, sn = np.array([(s.ukernel.mr, s.ukernel.nr, s.nc, s.kc, s.split_m, s.split_n)
                                        for s in schedules], dtype=np.float64).T
    tiles_m, tiles_n = np.ceil(np.ceil(p.m / mr) / sm), np.ceil(np.ceil(p.n / nr) / sn)  # largest task
    m_task, n_task = tiles_m * mr, tiles_n * nr
    rows, cols = np.minimum(m_task, p.m), np.minimum(n_task, p.n)
    k_blocks, n_blocks = np.ceil(p.k / kc), np.ceil(n_task / nc)

    nv = nr / lanes
    measured = np.array([s.ukernel.efficiency for s in schedules])
    efficiency = np.where(measured > 0, measured, UKERNEL_EFFICIENCY * np.minimum(
        1.0, np.minimum(mr * nv / FMA_CHAINS, mr * nv / (nv + 1) / FMA_PER_LOAD)))
    calls = tiles_m * tiles_n * k_blocks
    slots = (tiles_m * tiles_n * p.k * mr * nv / efficiency
             + calls * (CALL_SLOTS + C_SLOTS_PER_VECTOR * mr * nv)
             + PACK_SLOTS_PER_VECTOR / lanes * (p.pack_a * rows * p.k * n_blocks + p.pack_b * p.k * cols))
    compute = slots * 2 * lanes / target.core_flops

    tasks = p.batch * sm * sn
    mem = _Memory(target, np.minimum(tasks, cores))
    a_bytes, b_bytes, c_bytes = rows * p.k * F32, p.k * cols * F32, rows * cols * F32
    memory = ((a_bytes + b_bytes + c_bytes) / mem.dram
              + mem.seconds(a_bytes * (n_blocks - 1), a_bytes)                             # A per jc block
              + mem.seconds(tiles_m * tiles_n * p.k * nr * F32, nc * kc * F32)             # B micro-panels
              + mem.seconds(2 * c_bytes * (k_blocks - 1), m_task * nc * F32))              # C per kc block
    fixed = np.where(tasks > 1, THREAD_HANDOFF_S, 0.0) + TILED_SETUP_S + target.kernel_overhead_s
    return np.ceil(tasks / cores) * _time(compute, memory) + fixed


def untiled_cost(problem: GemmProblem, target: Target) -> float:
    """Predicted seconds of ``problem`` under the default lowering: output rows over all cores."""
    p, cores = problem, max(target.cores, 1)
    threads = max(1, min(cores, p.batch * p.m))
    rows = -(-p.batch * p.m // threads)
    efficiency = UNTILED_EFFICIENCY if p.row_form else UNTILED_SCALAR_EFFICIENCY
    compute = np.array(2.0 * rows * p.n * p.k / (efficiency * target.core_flops))
    mem = _Memory(target, np.array(float(threads)))
    b_bytes = np.array(float(p.k * p.n * F32))
    memory = (rows * (p.k + p.n) * F32 / mem.dram + b_bytes / (mem.dram * UNTILED_STRIP_BANDWIDTH)
              + mem.seconds(b_bytes * (rows - 1), b_bytes))
    fixed = (THREAD_HANDOFF_S if threads > 1 else 0.0) + target.kernel_overhead_s
    return float(_time(compute, memory)) + fixed
