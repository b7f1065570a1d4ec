"""An int8 matrix product tiled onto the GEMM core: ``y = requantize(a @ w.T + bias)`` (or the int32
``a @ w.T + bias``) as one accelerator program, blocked for the scratchpads and double-buffered
through the dependency tokens (``docs/accelerator.md``, "Compiling to it").

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
    b = Builder(c)
    a_at = b.region("a", "input", "int8", (m, kb * bi))
    w_at = b.constant("w", packed)
    out = "acc" if scales is None else "out"
    y_at = b.region("y", "output", "int32" if scales is None else "int8", (m, nb * bo))
    n_chunks = math.ceil(nb / p.tn)
    gemm_uops = [encode_uop(a * acc_half, h * inp_half + j, h * wgt_half + j)  # accumulator half a, buffers h
                 for a in (0, 1) for h in (0, 1) for j in range(p.tk)]
    alu_at = b.prologue(gemm_uops, [(a * acc_half, bias_base + ch * p.tn, ch * p.tn)
                                    for a in (0, 1) for ch in range(n_chunks)], bias, scales, nb * bo)
    tiles = [(m0, n0) for n0 in range(0, nb, p.tn) for m0 in range(0, m, p.tm)]
    n_loads, chunk = len(tiles) * math.ceil(kb / p.tk), 0
    for tile, (m0, n0) in enumerate(tiles):
        tm, tn, half = min(p.tm, m - m0), min(p.tn, nb - n0), tile % 2
        loops = {"iter_out": tm, "iter_in": tn, "dst_out": tn, "dst_in": 1}
        b.emit("gemm", True, reset=1, uop_bgn=2 * half * p.tk, uop_end=2 * half * p.tk + 1, **loops,
               pop_next=int(tile >= 2))
        for k0 in range(0, kb, p.tk):
            tk, h = min(p.tk, kb - k0), chunk % 2
            b.emit("load", memory=MEMORIES["inp"], sram=h * inp_half, dram=a_at // bi + m0 * kb + k0,
                   y_size=tm, x_size=tk, x_stride=kb, pop_next=int(chunk >= 2))
            b.emit("load", memory=MEMORIES["wgt"], sram=h * wgt_half, dram=w_at // (bi * bo) + n0 * kb + k0,
                   y_size=tn, x_size=tk, x_stride=kb, push_next=1)
            first = (half * 2 + h) * p.tk
            b.emit("gemm", True, uop_bgn=first, uop_end=first + tk, **loops, src_out=tk, wgt_in=tk,
                   pop_prev=1, push_prev=int(chunk + 2 < n_loads))
            chunk += 1
        b.epilogue(alu_at + 2 * (half * n_chunks + n0 // p.tn), {**loops, "src_in": 1}, zero_point)
        b.emit("store", memory=MEMORIES[out], sram=half * acc_half,
               dram=y_at // c.tile_bytes(out) + m0 * nb + n0, y_size=tm, x_size=tn, x_stride=nb, pop_prev=1,
               push_prev=int(tile + 2 < len(tiles)))
    return b.program()


class Builder:
    """A program as it is written: main memory filled region by region (each aligned to 256 bytes,
    which every tile size divides), and the instruction stream in program order."""

    def __init__(self, config: Accel) -> None:
        self.config = config
        self.regions: list[Region] = []
        self.size = 0
        self.stream: list[Instruction] = []
        self._compute: list[int] = []  # where the compute module's instructions are in the stream
        self._bias = self._scales = False

    def region(self, name: str, kind: str, dtype: str, shape: tuple[int, ...], data: bytes = b"") -> int:
        """Add a region; its byte offset."""
        at = -(-self.size // 256) * 256
        self.regions.append(Region(name, kind, dtype, shape, at, data))
        self.size = at + self.regions[-1].nbytes
        return at

    def constant(self, name: str, value: np.ndarray) -> int:
        """Add a constant region holding ``value``; its byte offset."""
        data = np.ascontiguousarray(value).tobytes()
        return self.region(name, "const", str(value.dtype), value.shape, data)

    def emit(self, op: str, on_compute: bool = False, **fields: int) -> None:
        """Append an instruction (``on_compute``: one the compute module runs)."""
        if on_compute:
            self._compute.append(len(self.stream))
        self.stream.append(Instruction(op, {name: value for name, value in fields.items() if value}))

    def prologue(self, gemm_uops: list[int], tiles: list[tuple[int, int, int]], bias: np.ndarray | None,
                 scales: np.ndarray | None, channels: int) -> int:
        """Load the micro-ops (``gemm_uops``, then for each (accumulator base, bias tile, scale row)
        of ``tiles`` the two ALU uops of an output tile's bias and requantization), the bias tiles
        (resident at the top of the accumulator) and the scale rows, each padded to ``channels``;
        the index of the first ALU uop."""
        c = self.config
        uops = gemm_uops + [encode_uop(acc, src % c.acc_entries) for acc, bias_tile, row in tiles
                            for src in (bias_tile, row)]
        if len(uops) > c.uop_entries:
            raise CompileError(f"{c.name}: {len(uops)} micro-ops overflow the uop scratchpad")
        at = self.constant("uops", np.array(uops, np.uint32))
        self.emit("load", True, memory=MEMORIES["uop"], dram=at // 4, y_size=1, x_size=len(uops))
        blocks = channels // c.block_out
        if bias is not None:
            padded = np.pad(bias.astype(np.int32), (0, channels - len(bias))).reshape(blocks, 1, c.block_out)
            at = self.constant("bias", padded)
            self.emit("load", True, memory=MEMORIES["acc"], sram=c.acc_entries - blocks,
                      dram=at // c.tile_bytes("acc"), y_size=1, x_size=blocks)
        if scales is not None:
            padded = np.pad(scales.astype(np.float32), (0, channels - len(scales)), constant_values=1)
            at = self.constant("scales", padded.reshape(blocks, c.block_out))
            self.emit("load", True, memory=MEMORIES["scale"], dram=at // c.tile_bytes("scale"), y_size=1,
                      x_size=blocks)
        self._bias, self._scales = bias is not None, scales is not None
        return len(gemm_uops)

    def epilogue(self, alu_uop: int, loops: dict[str, int], zero_point: int) -> None:
        """An output tile's bias and requantization (ALU uops ``alu_uop`` and the next, over
        ``loops``), then hand the tile to the store module (``push_next`` on the compute module's
        last instruction)."""
        if self._bias:
            self.emit("alu", True, uop_bgn=alu_uop, uop_end=alu_uop + 1, **loops, alu=ALU_OPS["add"])
        if self._scales:
            self.emit("alu", True, uop_bgn=alu_uop + 1, uop_end=alu_uop + 2, **loops, alu=ALU_OPS["req"],
                      use_imm=1, imm=zero_point)
        last = self.stream[self._compute[-1]]
        self.stream[self._compute[-1]] = Instruction(last.op, {**last.fields, "push_next": 1})

    def program(self) -> AccelProgram:
        """The program, ended by ``finish``."""
        self.emit("finish", True)
        return AccelProgram(self.config, tuple(self.stream), self.size, tuple(self.regions))
