"""A 2-D convolution tiled onto the GEMM core directly, as VTA does it: no unfolded (im2col) input.
The input lives in main memory as BLOCK_IN-channel tiles, plane by plane (channel block, row,
column); each chunk of output rows loads the input rows its windows cover with 2-D DMA loads that
add the padding (filled with the input's zero point), and one GEMM instruction walks the output
positions (its two loops: output rows, output columns, stepping by the strides) while its micro-ops
walk (output block, input block, kernel row, kernel column). Weights stay resident while they fit.

Chunks: ``toh`` output rows x all output columns x ``tob`` BLOCK_OUT blocks, reducing over ``tcb``
BLOCK_IN blocks at a time; inputs, weights and accumulators double-buffered through the tokens as in
``tensorize``. ``conv_program`` returns None where the geometry does not fit the instruction fields
(padding over 15, too wide a row for the scratchpad): the caller then unfolds the input instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import numpy as np

from tensoregg.targets.accel.isa import MEMORIES, Instruction, encode_uop
from tensoregg.targets.accel.machines import Accel
from tensoregg.targets.accel.program import AccelProgram
from tensoregg.targets.accel.tensorize import Builder


@dataclass(frozen=True)
class Geometry:
    """A 2-D convolution's shape: input channels and size, kernel, strides, dilations, the padding
    before each axis (top, left) and the output size."""

    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    begin: tuple[int, int]
    out: tuple[int, int]

    def rows(self, out_rows: int) -> int:
        """Input rows (padding included) the windows of ``out_rows`` output rows cover."""
        return (out_rows - 1) * self.strides[0] + (self.kernel[0] - 1) * self.dilations[0] + 1

    @property
    def padded_width(self) -> int:
        """Columns of a loaded row: left padding, the row, right padding."""
        span = (self.out[1] - 1) * self.strides[1] + (self.kernel[1] - 1) * self.dilations[1] + 1
        return max(span, self.begin[1] + self.width)


@dataclass(frozen=True)
class ConvPlan:
    """Output rows, BLOCK_OUT blocks and BLOCK_IN blocks per chunk; estimated cycles."""

    toh: int
    tob: int
    tcb: int
    cycles: float


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def plan(config: Accel, g: Geometry, ob: int, cb: int, *, bias: bool) -> ConvPlan | None:
    """The chunk of least estimated cycles that fits half of each scratchpad, the micro-op
    scratchpad and the instruction fields; None if there is none."""
    c = config
    kh, kw = g.kernel
    wp, oh, ow = g.padded_width, *g.out
    acc_half = (c.acc_entries - ob * bias) // 2
    best = None
    for tob, tcb in product(_divisors(ob), _divisors(cb)):
        taps = tob * tcb * kh * kw
        if taps > c.wgt_entries // 2 or 8 * taps + 4 * ob > c.uop_entries or ow * tob > 2047:
            continue
        toh = min(oh, acc_half // (ow * tob))
        while toh and tcb * g.rows(toh) * wp > c.inp_entries // 2:
            toh -= 1
        if not toh:
            continue
        chunks = math.ceil(oh / toh) * (ob // tob) * (cb // tcb)
        tiles = math.ceil(oh / toh) * (ob // tob)
        gemm = chunks * (toh * ow * taps + c.gemm_depth) + tiles * toh * ow * tob * 5  # + reset, bias, req
        inputs = chunks * tcb * (c.dma_latency + g.rows(toh) * wp * c.tile_bytes("inp") / c.bus_bytes)
        reloads = ob // tob if tcb == cb else chunks
        weights = reloads * (c.dma_latency + taps * c.tile_bytes("wgt") / c.bus_bytes)
        cycles = max(gemm, inputs + weights)
        if best is None or cycles < best.cycles:
            best = ConvPlan(toh, tob, tcb, cycles)
    return best


def conv_program(config: Accel, g: Geometry, w: np.ndarray, bias: np.ndarray | None,
                 scales: np.ndarray | None, zero_point: int, pad_value: int) -> AccelProgram | None:
    """The program of one image's convolution: input ``x`` (channel blocks, rows, columns, BLOCK_IN)
    int8, weights ``w`` (O, C, kh, kw) int8, output ``y`` (output rows, output columns, O rounded up
    to BLOCK_OUT) requantized as ``gemm_program``'s; None where ``plan`` finds no chunk or the
    padding does not fit the load's 4-bit fields."""
    c = config
    bi, bo = c.block_in, c.block_out
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = g.kernel, g.strides, g.dilations, g.out
    wp = g.padded_width
    x_pad1 = wp - g.begin[1] - g.width
    bottom = g.rows(oh) - g.begin[0] - g.height
    if c.batch != 1 or max(g.begin[0], g.begin[1], x_pad1, bottom) > 15 or sh * wp > 2047:
        return None
    o = w.shape[0]
    ob, cb = -(-o // bo), -(-g.channels // bi)
    p = plan(c, g, ob, cb, bias=bias is not None)
    if p is None:
        return None
    packed = np.zeros((ob * bo, cb * bi, kh, kw), np.int8)
    packed[:o, :g.channels] = w
    packed = packed.reshape(ob, bo, cb, bi, kh, kw).transpose(0, 2, 4, 5, 1, 3)  # (ob, cb, kh, kw) tiles
    inp_half, wgt_half = c.inp_entries // 2, c.wgt_entries // 2
    acc_half = (c.acc_entries - (ob if bias is not None else 0)) // 2
    plane = g.rows(p.toh) * wp
    taps = p.tob * p.tcb * kh * kw
    b = Builder(c)
    x_at = b.region("x", "input", "int8", (cb, g.height, g.width, bi))
    w_at = b.constant("w", packed)
    out = "acc" if scales is None else "out"
    y_at = b.region("y", "output", "int32" if scales is None else "int8", (oh, ow, ob * bo))
    gemm_uops = [encode_uop(a * acc_half + j, h * inp_half + i * plane + ky * dh * wp + kx * dw,
                            v * wgt_half + ((j * p.tcb + i) * kh + ky) * kw + kx)
                 for a, h, v in product((0, 1), repeat=3)
                 for j, i, ky, kx in product(range(p.tob), range(p.tcb), range(kh), range(kw))]
    alu_at = b.prologue(gemm_uops, [(a * acc_half, c.acc_entries - ob + j, j)
                                    for a in (0, 1) for j in range(0, ob, p.tob)], bias, scales, ob * bo)
    rows = range(0, oh, p.toh)
    n_chunks = len(rows) * (ob // p.tob) * (cb // p.tcb)
    chunk, tile, loaded, reloads = 0, 0, None, 0
    for ob0 in range(0, ob, p.tob):
        for oy0 in rows:
            toh, a = min(p.toh, oh - oy0), tile % 2
            epilogue = {"iter_out": toh * ow, "dst_out": p.tob, "iter_in": p.tob, "dst_in": 1}
            b.emit("gemm", True, reset=1, uop_bgn=4 * a * taps, uop_end=4 * a * taps + 1, **epilogue,
                   pop_next=int(tile >= 2))
            for cb0 in range(0, cb, p.tcb):
                h = chunk % 2
                top = oy0 * sh - g.begin[0]
                first, last = max(top, 0), min(top + g.rows(toh), g.height)
                inside = max(last - first, 0)  # the window's rows in the image; the rest is padding
                for i in range(p.tcb):
                    b.emit("load", memory=MEMORIES["inp"], sram=h * inp_half + i * plane,
                           dram=x_at // bi + ((cb0 + i) * g.height + first) * g.width, y_size=inside,
                           x_size=g.width, x_stride=g.width, y_pad0=first - top,
                           y_pad1=g.rows(toh) - (first - top) - inside, x_pad0=g.begin[1], x_pad1=x_pad1,
                           pad_value=pad_value, pop_next=int(chunk >= 2 and i == 0))
                if loaded != (ob0, cb0):
                    loaded, reloads = (ob0, cb0), reloads + 1
                    b.emit("load", memory=MEMORIES["wgt"], sram=(reloads - 1) % 2 * wgt_half,
                           dram=w_at // (bi * bo) + (ob0 * cb + cb0) * kh * kw, y_size=p.tob,
                           x_size=p.tcb * kh * kw, x_stride=cb * kh * kw)
                b.stream[-1] = Instruction("load", {**b.stream[-1].fields, "push_next": 1})
                start = ((a * 2 + h) * 2 + (reloads - 1) % 2) * taps
                b.emit("gemm", True, uop_bgn=start, uop_end=start + taps, iter_out=toh, iter_in=ow,
                       dst_out=ow * p.tob, dst_in=p.tob, src_out=sh * wp, src_in=sw, pop_prev=1,
                       push_prev=int(chunk + 2 < n_chunks))
                chunk += 1
            b.epilogue(alu_at + 2 * (a * (ob // p.tob) + ob0 // p.tob), {**epilogue, "src_in": 1}, zero_point)
            b.emit("store", memory=MEMORIES[out], sram=a * acc_half,
                   dram=y_at // c.tile_bytes(out) + oy0 * ow * ob + ob0, y_size=toh * ow, x_size=p.tob,
                   x_stride=ob, pop_prev=1, push_prev=int(tile + 2 < len(rows) * (ob // p.tob)))
            tile += 1
    return b.program()
