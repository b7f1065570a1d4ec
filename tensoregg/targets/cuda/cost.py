"""The cuda target's cost model of a contraction's schedules: the ``Pricer`` its registration gives
extraction (``tensoregg.ir.schedules``). Analytic and rough (no GPU has measured it yet):

- **Shared tiles** (``gemm.SharedTiles``): blocks resident per SM as threads, shared memory and
  registers allow; the blocks run in waves over the SMs. A block's arithmetic runs at the CUDA
  cores' rate times the fraction of it that shared-memory reads allow (each FMA of a ``tm`` x ``tn``
  register tile reads ``(tm + tn) / (tm * tn)`` words, against 32 words per clock for 128 FMAs per
  clock) and the occupancy (16 warps per SM hide latency). Each tile copy reads its A and B slices
  through L2; the matrices come from device memory once.
- **Tensor cores** (``mma.TensorCoreTiles``; float16 and bfloat16 problems, float32 ones in tf32 where
  the GPU opts in: ``Gpu.tf32``): residency and waves as above; a block's MMAs run at the tensor
  cores' rate for the dtype (``Gpu.peak_flops``) times ``MMA_EFFICIENCY``, times the fraction of it
  that shared memory allows (each k step's tile copies and fragment loads at 128 bytes per clock per
  SM, against the MMAs' clocks; a 16-bit fragment loaded element by element takes a 4-byte bank word
  per element, with ``ldmatrix`` its bytes), times the occupancy. Tile copies through L2, matrices from device
  memory once, in the operands' bytes.
- **Copy latency** (both): a k step's tile copies take ``COPY_LATENCY_CLOCKS`` to land. With one
  shared stage a block waits them out at every step, hidden only by the arithmetic of the SM's
  other resident blocks; with two (``stages`` 2: ``cp.async`` double buffering) the copies of step
  k + 1 fly while step k computes, hidden by the block's own arithmetic too, at the price of twice
  the shared memory (fewer resident blocks).
- **Untiled** (one thread per element): every FMA loads both operands through L1; a twentieth of
  the CUDA cores' rate at full occupancy.

A row reduction stage (``rows.RowStage``: ``outputs`` elements, each over ``terms`` terms) runs a
thread per element (``schedule.bind_threads``) or a warp per element (``rows.lower``): the terms are
issued by the lanes that run at once (as many as the SMs hold), ``TERM_CLOCKS`` each; a warp's lanes
then combine in 5 shuffle rounds of ``SHUFFLE_CLOCKS``. The terms are read from device memory, each
load costing what neighbouring lanes' addresses make it (``RowStage``: an element where they are
neighbours, up to a 32-byte sector where they lie apart).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tensoregg.ir.schedules import GemmProblem, Schedule, Untiled
from tensoregg.targets.cuda import gemm, mma
from tensoregg.targets.cuda.gemm import SharedTiles
from tensoregg.targets.cuda.machines import Gpu
from tensoregg.targets.cuda.mma import TensorCoreTiles
from tensoregg.targets.cuda.rows import RowStage

L2_OVER_DRAM = 2.5
"""L2 bandwidth as a multiple of device memory's (H100: ~8 TB/s against 3.35)."""
UNTILED_EFFICIENCY = 0.05
"""The CUDA cores' rate an untiled contraction reaches at full occupancy: two loads through L1 per
FMA (a naive SIMT GEMM; to be measured on a device)."""
LATENCY_WARPS = 16
"""Resident warps per SM that hide the latency of shared and global memory."""
KEEP = 16
"""The cheapest shared-tile (and tensor-core) schedules of each problem that extraction sees."""
MMA_EFFICIENCY = 0.5
"""The tensor cores' rate ``mma.sync`` reaches with its operands in shared memory and registers to
spare (the fragment loads' shared-memory bytes and the copies' latency are priced apart,
``COPY_LATENCY_CLOCKS``); to be measured on a device."""
COPY_LATENCY_CLOCKS = 800
"""Clocks from a k step's tile copies issued to their data in shared memory: a global load through
L2 (some 500 to 800 clocks on an A100 or H100 by public microbenchmarks; to be measured)."""
SHARED_BYTES_PER_CLOCK = 128
"""Shared-memory bandwidth of one SM: 32 banks of 4 bytes."""
TERM_CLOCKS = 4
"""Clocks a lane spends on one term of a reduction: its load, address and combine (to be measured)."""
SHUFFLE_CLOCKS = 30
"""Clocks of one round of a warp's butterfly: the shuffle's latency and the combine."""
RATES = {"float16": "fp16", "bfloat16": "bf16", "float32": "tf32"}
"""The tensor cores' rate (``Gpu.peak_flops`` key) of each operand dtype."""


def itemsize(p: GemmProblem) -> int:
    return 2 if p.dtype in ("float16", "bfloat16") else 4


def untiled_seconds(p: GemmProblem, gpu: Gpu) -> float:
    threads = p.batch * p.m * p.n
    occupancy = min(1.0, threads / (gpu.sms * 32 * LATENCY_WARPS))
    words = p.batch * (p.m * p.k + p.k * p.n + p.m * p.n)
    compute = p.flops / (gpu.peak_flops["fp32"] * UNTILED_EFFICIENCY * occupancy)
    return max(compute, words * itemsize(p) / gpu.dram_bandwidth) + gpu.launch_s


def tiles_seconds(p: GemmProblem, t: SharedTiles, gpu: Gpu) -> float:
    reads_per_fma = (t.tm + t.tn) / (t.tm * t.tn)
    return _blocked(p, t, gpu, gpu.peak_flops["fp32"], min(1.0, 0.25 / reads_per_fma))


def mma_seconds(p: GemmProblem, t: TensorCoreTiles, gpu: Gpu) -> float:
    size, steps = t.mma.dtype.itemsize, t.bk // t.mma.k
    copies = (t.bm + t.bn) * t.bk * size
    word = size if t.ldmatrix else 4  # shared-memory bytes a fragment element takes
    fragments = t.threads * (t.wm * t.mma.fragment("a") + t.wn * t.mma.fragment("b")) * word * steps
    rate = gpu.peak_flops[RATES[p.dtype]]
    mma_clocks = 2 * t.bm * t.bn * t.bk / (rate / (gpu.sms * gpu.clock_hz))
    shared = min(1.0, mma_clocks * SHARED_BYTES_PER_CLOCK / (copies + fragments))
    return _blocked(p, t, gpu, rate, MMA_EFFICIENCY * shared)


def _blocked(p: GemmProblem, t: SharedTiles | TensorCoreTiles, gpu: Gpu, rate: float, efficiency: float
             ) -> float:
    """Seconds of ``p`` in blocks of ``t`` whose arithmetic runs at ``rate`` (the GPU's) times
    ``efficiency`` at full occupancy, with the copies' latency not hidden (module docstring): waves
    of resident blocks, the operand tiles through L2, the matrices from device memory once."""
    gm, gn, gk = math.ceil(p.m / t.bm), math.ceil(p.n / t.bn), math.ceil(p.k / t.bk)
    blocks = p.batch * gm * gn
    resident = max(1, min(gpu.blocks_per_sm, gpu.threads_per_sm // t.threads,
                          gpu.shared_per_sm // t.shared_bytes,
                          gpu.registers_per_sm // (t.threads * max(t.registers, 32))))
    waves = math.ceil(blocks / (gpu.sms * resident))
    concurrent = min(resident, math.ceil(blocks / gpu.sms))  # blocks per SM at once
    efficiency *= min(1.0, concurrent * t.threads / (32 * LATENCY_WARPS))
    block_flops = 2 * t.bm * t.bn * gk * t.bk
    compute = waves * concurrent * block_flops / (rate / gpu.sms * efficiency)
    step = compute / (waves * gk)  # one k step of the blocks an SM runs at once
    hidden = step if t.stages == 2 else step * (concurrent - 1) / concurrent
    compute += waves * gk * max(0.0, COPY_LATENCY_CLOCKS / gpu.clock_hz - hidden)
    l2_bytes = itemsize(p) * blocks * gk * t.bk * (t.bm + t.bn)
    dram_bytes = itemsize(p) * p.batch * (p.m * p.k + p.k * p.n + p.m * p.n)
    return max(compute, l2_bytes / (gpu.dram_bandwidth * L2_OVER_DRAM), dram_bytes / gpu.dram_bandwidth) \
        + gpu.launch_s


def price(problems: Sequence[GemmProblem], gpu: Gpu) -> list[list[tuple[Schedule, float]]]:
    """Each problem's schedules with predicted seconds, cheapest first: Untiled, and the ``KEEP``
    cheapest of the tiled ones: shared tiles for float32 problems, tensor cores for float16 and
    bfloat16 ones and, where the GPU opts into tf32 (``Gpu.tf32``), float32 ones; other dtypes stay
    untiled."""
    shared = gemm.templates(gpu)
    cores = {d: mma.templates(gpu, np.dtype(d)) for d in RATES if d != "float32" or gpu.tf32}
    out: list[list[tuple[Schedule, float]]] = []
    for p in problems:
        tiled: list[tuple[Schedule, float]] = []
        if p.dtype == "float32":
            tiled += [(t, tiles_seconds(p, t, gpu)) for t in shared]
        tiled += [(t, mma_seconds(p, t, gpu)) for t in cores.get(p.dtype, [])]
        priced: list[tuple[Schedule, float]] = [(Untiled(), untiled_seconds(p, gpu))]
        priced += sorted(tiled, key=lambda x: x[1])[:KEEP]
        out.append(sorted(priced, key=lambda x: x[1]))
    return out


def rows_seconds(row: RowStage, gpu: Gpu, *, warp: bool) -> float:
    """Seconds of a row reduction stage (module docstring) with a thread (``warp`` False) or a warp
    per output element."""
    width = gpu.warp_size if warp else 1
    lanes = min(row.outputs * width, gpu.sms * gpu.threads_per_sm)
    clocks = math.ceil(row.outputs * width / lanes) * math.ceil(row.terms / width) * TERM_CLOCKS
    if warp:
        clocks += len(row.accumulators) * int(math.log2(gpu.warp_size)) * SHUFFLE_CLOCKS
    per_term = row.warp_bytes if warp else row.thread_bytes
    return max(clocks / gpu.clock_hz, row.outputs * row.terms * per_term / gpu.dram_bandwidth) + gpu.launch_s
