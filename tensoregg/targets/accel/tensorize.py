"""An int8 matrix product tiled onto the GEMM core: ``y = requantize(a @ w.T + bias)`` (or the int32
``a @ w.T + bias``) as one accelerator program, blocked for the scratchpads and double-buffered
through the dependency tokens (``docs/accelerator.md``, "Tensorized matrix products").

Blocking: a chunk is ``tm`` rows of ``a`` by ``tk`` blocks of BLOCK_IN by ``tn`` blocks of
BLOCK_OUT. Inputs, weights and accumulators each use two halves of their scratchpad (minus the
bias tiles, kept resident), so the load module fills one half while the GEMM core works on the
other, and the store module drains one accumulator half while the core fills the other. ``plan``
picks the chunk that minimises the estimated cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tensoregg.errors import CompileError
from tensoregg.targets.accel.isa import ALU_OPS, MEMORIES, Instruction, encode_uop
from tensoregg.targets.accel.machines import Accel
from tensoregg.targets.accel.program import AccelProgram, Region


@dataclass(frozen=True)
class Plan:
    """A blocking: rows, BLOCK_OUT blocks and BLOCK_IN blocks per chunk, and the estimated cycles."""

    tm: int
    tn: int
    tk: int
    cycles: float


def plan(config: Accel, m: int, kb: int, nb: int, *, bias: bool) -> Plan:
    """The chunk for an ``m`` x ``kb`` blocks by ``kb`` x ``nb`` blocks product that fits half of
    each scratchpad and minimises the estimated cycles: per chunk the slower of the GEMM core's
    steps and the load module's DMA, plus the accumulator's reset, bias, requantization and store."""
    c = config
    inp_half, wgt_half = c.inp_entries // 2, c.wgt_entries // 2
    acc_half = (c.acc_entries - (nb * bias)) // 2
    best = None
    for tk in sorted({min(kb, 1 << e) for e in range(12)} | {kb}):
        for tn in sorted({min(nb, 1 << e) for e in range(12)} | {nb}):
            if tk * tn > wgt_half or tk > inp_half or tn > acc_half:
                continue
            tm = min(m, inp_half // tk, acc_half // tn, (1 << 14) - 1)
            moved = tm * tk * c.tile_bytes("inp") + tn * tk * c.tile_bytes("wgt")
            load = c.dma_latency * 2 + moved / c.bus_bytes
            chunk = max(tm * tn * tk + c.gemm_depth, load)
            epilogue = tm * tn * (1 + c.alu_ii * (1 + bias))  # reset, bias, requantization
            tile = epilogue + c.dma_latency + tm * tn * c.tile_bytes("out") / c.bus_bytes
            cycles = math.ceil(m / tm) * math.ceil(nb / tn) * (math.ceil(kb / tk) * chunk + tile)
            if best is None or cycles < best.cycles:
                best = Plan(tm, tn, tk, cycles)
    if best is None:
        raise CompileError(f"{config.name}: a {kb}-block reduction does not fit the scratchpads")
    return best


def gemm_program(config: Accel, m: int, w: np.ndarray, bias: np.ndarray | None, scales: np.ndarray | None,
                 zero_point: int = 0) -> AccelProgram:
    """The program for ``a`` (input ``a``: ``m`` x K' int8, K' = K rounded up to BLOCK_IN) times
    ``w`` (N x K int8) transposed, plus ``bias`` (N int32, or None), into output ``y``: m x N' (N'
    = N rounded up to BLOCK_OUT) int8 requantized by ``scales`` (N float32) and ``zero_point`` as
    onnxruntime does, or int32 where ``scales`` is None."""
    c = config
    if c.batch != 1:
        raise CompileError(f"{c.name}: matrix products are tiled for BATCH 1 only, not {c.batch}")
    bi, bo = c.block_in, c.block_out
    n, k = w.shape
    kb, nb = -(-k // bi), -(-n // bo)
    p = plan(c, m, kb, nb, bias=bias is not None)
    packed = np.zeros((nb * bo, kb * bi), np.int8)
    packed[:n, :k] = w
    packed = packed.reshape(nb, bo, kb, bi).transpose(0, 2, 1, 3)
    inp_half, wgt_half = c.inp_entries // 2, c.wgt_entries // 2
    bias_base = c.acc_entries - (nb if bias is not None else 0)
    acc_half = bias_base // 2
    layout = _Layout()
    a_at = layout.add(Region("a", "input", "int8", (m, kb * bi), 0))
    w_at = layout.add(Region("w", "const", "int8", packed.shape, 0, packed.tobytes()))
    out_dtype = "int32" if scales is None else "int8"
    y_at = layout.add(Region("y", "output", out_dtype, (m, nb * bo), 0))
    consts: list[tuple[str, np.ndarray]] = []
    if bias is not None:
        consts.append(("bias", np.pad(bias.astype(np.int32), (0, nb * bo - n)).reshape(nb, 1, bo)))
    if scales is not None:
        consts.append(("scales", np.pad(scales.astype(np.float32), (0, nb * bo - n), constant_values=1)
                       .reshape(nb, bo)))
    n_chunks = math.ceil(nb / p.tn)
    gemm_uops = [encode_uop(a * acc_half, b * inp_half + j, b * wgt_half + j)  # accumulator half a, buffers b
                 for a in (0, 1) for b in (0, 1) for j in range(p.tk)]
    alu_uops = [encode_uop(a * acc_half, src) for a in (0, 1) for ch in range(n_chunks)
                for src in ((bias_base + ch * p.tn) % c.acc_entries, ch * p.tn)]  # bias tiles, scale rows
    if len(gemm_uops) + len(alu_uops) > c.uop_entries:
        raise CompileError(f"{c.name}: {len(gemm_uops) + len(alu_uops)} micro-ops overflow the uop "
                           "scratchpad")
    consts.append(("uops", np.array(gemm_uops + alu_uops, np.uint32)))
    at = {name: layout.add(Region(name, "const", str(v.dtype), v.shape, 0, v.tobytes()))
          for name, v in consts}
    compute: list[int] = []  # where the compute module's instructions are in the stream
    stream: list[Instruction] = []

    def emit(op: str, on_compute: bool = False, **fields: int) -> None:
        if on_compute:
            compute.append(len(stream))
        stream.append(Instruction(op, {name: value for name, value in fields.items() if value}))

    emit("load", True, memory=MEMORIES["uop"], dram=at["uops"] // 4, y_size=1,
         x_size=len(gemm_uops) + len(alu_uops))
    if bias is not None:
        emit("load", True, memory=MEMORIES["acc"], sram=bias_base, dram=at["bias"] // c.tile_bytes("acc"),
             y_size=1, x_size=nb)
    if scales is not None:
        emit("load", True, memory=MEMORIES["scale"], dram=at["scales"] // c.tile_bytes("scale"), y_size=1,
             x_size=nb)
    tiles = [(m0, n0) for n0 in range(0, nb, p.tn) for m0 in range(0, m, p.tm)]
    n_loads, chunk = len(tiles) * math.ceil(kb / p.tk), 0
    out = "acc" if scales is None else "out"
    for tile, (m0, n0) in enumerate(tiles):
        tm, tn, half = min(p.tm, m - m0), min(p.tn, nb - n0), tile % 2
        loops = {"iter_out": tm, "iter_in": tn, "dst_out": tn, "dst_in": 1}
        emit("gemm", True, reset=1, uop_bgn=2 * half * p.tk, uop_end=2 * half * p.tk + 1, **loops,
             pop_next=int(tile >= 2))
        for k0 in range(0, kb, p.tk):
            tk, b = min(p.tk, kb - k0), chunk % 2
            emit("load", memory=MEMORIES["inp"], sram=b * inp_half, dram=a_at // bi + m0 * kb + k0, y_size=tm,
                 x_size=tk, x_stride=kb, pop_next=int(chunk >= 2))
            emit("load", memory=MEMORIES["wgt"], sram=b * wgt_half, dram=w_at // (bi * bo) + n0 * kb + k0,
                 y_size=tn, x_size=tk, x_stride=kb, push_next=1)
            first = (half * 2 + b) * p.tk
            emit("gemm", True, uop_bgn=first, uop_end=first + tk, **loops, src_out=tk, wgt_in=tk, pop_prev=1,
                 push_prev=int(chunk + 2 < n_loads))
            chunk += 1
        alu_at = len(gemm_uops) + 2 * (half * n_chunks + n0 // p.tn)
        if bias is not None:
            emit("alu", True, uop_bgn=alu_at, uop_end=alu_at + 1, **loops, src_in=1, alu=ALU_OPS["add"])
        if scales is not None:
            emit("alu", True, uop_bgn=alu_at + 1, uop_end=alu_at + 2, **loops, src_in=1, alu=ALU_OPS["req"],
                 use_imm=1, imm=zero_point)
        last = stream[compute[-1]]  # the tile's last compute step hands it to the store module
        stream[compute[-1]] = Instruction(last.op, {**last.fields, "push_next": 1})
        emit("store", memory=MEMORIES[out], sram=half * acc_half,
             dram=y_at // c.tile_bytes(out) + m0 * nb + n0, y_size=tm, x_size=tn, x_stride=nb, pop_prev=1,
             push_prev=int(tile + 2 < len(tiles)))
    emit("finish", True)
    return AccelProgram(c, tuple(stream), layout.size, tuple(layout.regions))


class _Layout:
    """Main memory filled region by region, each aligned to 256 bytes (every tile size divides it)."""

    def __init__(self) -> None:
        self.regions: list[Region] = []
        self.size = 0

    def add(self, region: Region) -> int:
        at = -(-self.size // 256) * 256
        self.regions.append(Region(region.name, region.kind, region.dtype, region.shape, at, region.data))
        self.size = at + region.nbytes
        return at
