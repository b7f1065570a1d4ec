"""The GPU GEMM template: a contraction (MatMul, Gemm, Conv as an implicit GEMM, their fused forms)
in shared-memory tiles. Each block computes a ``bm`` x ``bn`` tile of one batch's C; its
``(bm / tm) * (bn / tn)`` threads each hold a ``tm`` x ``tn`` tile of accumulators in registers::

    for k0 in 0..K step bk:
      the block copies A[i0:i0+bm, k0:k0+bk] (k-major) and B[k0:k0+bk, j0:j0+bn] into shared memory,
        consecutive threads reading consecutive k of A and consecutive n of B (coalesced where the
        operand is contiguous there: a Conv's weights along k, its pixels along n); outside the
        matrices they store 0
      barrier
      for kk in 0..bk: acc[r, s] += As[kk, ty*tm + r] * Bs[kk, tx*tn + s]   (r < tm, s < tn)
      barrier
    the epilogue (bias, activation, residual...) on each accumulator inside C, stored

With ``stages`` 2 the tiles are double: slice k0 + 1 is copied asynchronously (``cp.async``) into
one while slice k0 is computed from the other (``copies.pipeline``).

Every output element is summed over k in order, as the untiled form sums it. The parameters a GPU
admits (``templates``: threads, shared memory and registers within its limits, the copies an exact
number of rounds) are priced by ``cost``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tensoregg.ir.compute import Buffer, Expr, Load, call, const, fresh, select
from tensoregg.ir.compute.expr import all_true, idx
from tensoregg.ir.contraction import Contraction
from tensoregg.ir.loops import For, Local, Stmt, Store, flat
from tensoregg.targets.cuda.copies import async_tile, copy_tile, pipeline
from tensoregg.targets.cuda.machines import Gpu

if TYPE_CHECKING:
    from tensoregg.targets.cuda.mma import TensorCoreTiles

F32 = np.dtype(np.float32)


@dataclass(frozen=True)
class SharedTiles:
    """The template above with its parameters (a :class:`tensoregg.ir.schedules.Template`)."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    stages: int = 1
    """Shared tiles per operand: 1, or 2 (double buffering with ``cp.async``)."""

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def shared_bytes(self) -> int:
        return (self.bm + self.bn) * self.bk * 4 * self.stages

    @property
    def registers(self) -> int:
        """Registers a thread needs: accumulators, A and B values of two k steps in flight, addressing
        (ptxas on sm_80/sm_90 gave 120-124 for 8 x 8, 40-48 for 4 x 4; with two stages, 121-124 for a
        128 x 128 x 16 tile of 8 x 8, 155 with one)."""
        return self.tm * self.tn + 2 * (self.tm + self.tn) + 24

    def __str__(self) -> str:
        double = ", 2 stages (cp.async)" if self.stages == 2 else ""
        return f"gpu shared tiles {self.bm}x{self.bn}x{self.bk}, {self.tm}x{self.tn} per thread{double}"

    def lower(self, c: Contraction, known: Mapping[int, np.ndarray]
              ) -> tuple[list[Stmt], list[tuple[Buffer, np.ndarray]]]:
        """The block loop computing ``c.out`` (no constants of its own)."""
        if c.reduce.dtype != F32 or c.out.dtype != F32:
            raise ValueError(f"{self}: float32 contractions only, not {c.reduce.dtype} -> {c.out.dtype}")
        return [_lower(self, c)], []


def _lower(t: SharedTiles, c: Contraction) -> For:
    m, n, k = c.m, c.n, c.k
    gm, gn = -(-m // t.bm), -(-n // t.bn)
    block, thread = fresh("blk"), fresh("thr")
    bi, bm_, bn_ = fresh("bb"), fresh("bmi"), fresh("bni")
    i0, j0 = bm_ * idx(t.bm), bn_ * idx(t.bn)
    ty, tx = call("div", thread, idx(t.bn // t.tn)), call("rem", thread, idx(t.bn // t.tn))
    a_tile = Buffer("As", F32, (t.stages * t.bk * t.bm,))
    b_tile = Buffer("Bs", F32, (t.stages * t.bk * t.bn,))
    acc = Buffer("acc", F32, (t.tm * t.tn,))
    sides = (("a", a_tile, t.bm, i0), ("b", b_tile, t.bn, j0))

    def copies(k0: Expr, at: Expr) -> list[Stmt]:
        if t.stages == 1:
            return [copy_tile(c, side, tile, lines, _k_major(lines), t.bk, t.threads, thread, first, k0, bi)
                    for side, tile, lines, first in sides]
        return [async_tile(c, side, tile, lines, _k_major(lines), "line", t.bk, t.threads, thread, first, k0,
                           bi, at) for side, tile, lines, first in sides]

    def compute(at: Expr) -> list[Stmt]:
        kk, r, s = fresh("kk"), fresh("r"), fresh("s")
        a_val = Load(a_tile, (staged(t, at, a_tile, kk * idx(t.bm) + ty * idx(t.tm) + r),))
        b_val = Load(b_tile, (staged(t, at, b_tile, kk * idx(t.bn) + tx * idx(t.tn) + s),))
        to = (r * idx(t.tn) + s,)
        fma = Store(acc, to, Load(acc, to) + a_val * b_val, contract=True)
        return [For(kk, idx(0), idx(t.bk), [For(r, idx(0), idx(t.tm), [For(s, idx(0), idx(t.tn), [fma])])])]

    main = pipeline(copies, compute, -(-k // t.bk), t.stages)
    z = fresh("z")
    init = For(z, idx(0), idx(t.tm * t.tn), [Store(acc, (z,), const(0.0, F32))])
    er, es = fresh("er"), fresh("es")
    i, j = i0 + ty * idx(t.tm) + er, j0 + tx * idx(t.tn) + es
    guard = guarded_result(c, bi, i, j, Load(acc, (er * idx(t.tn) + es,)))
    epilogue = For(er, idx(0), idx(t.tm), [For(es, idx(0), idx(t.tn), [guard])])

    threads = For(thread, idx(0), idx(t.threads), [Local(acc, [init, *main, epilogue])], "thread")
    shared = Local(a_tile, [Local(b_tile, [threads], "shared")], "shared")
    return For(block, idx(0), idx(c.batch * gm * gn), [shared], "block",
               ((bi, c.batch), (bm_, gm), (bn_, gn)))


def staged(t: SharedTiles | TensorCoreTiles, at: Expr, tile: Buffer, e: Expr) -> Expr:
    """Offset ``e`` of a shared tile's stage ``at`` (the tile holds ``t.stages`` of them)."""
    return e if t.stages == 1 else at * idx(tile.size // t.stages) + e


def _k_major(lines: int) -> Callable[[Expr, Expr], Expr]:
    return lambda kk, line: kk * idx(lines) + line


def guarded_result(c: Contraction, bi: Expr, i: Expr, j: Expr, total: Expr) -> For:
    """The epilogue on the sum ``total`` of element (i, j) of batch ``bi``, stored if it lies inside C:
    a loop of 0 or 1 trips, so that the tile loops around it keep constant bounds (the accumulators
    stay in registers)."""
    out_at = flat(c.out, bi * idx(c.m * c.n) + i * idx(c.n) + j)
    inside = all_true([call("lt", i, idx(c.m)), call("lt", j, idx(c.n))])
    return For(fresh("g"), idx(0), select(inside, idx(1), idx(0)),
               [Store(c.out, out_at, c.epilogue(bi, i, j, total))])


CANDIDATES = [SharedTiles(bm, bn, bk, tm, tn, stages) for bm in (16, 32, 64, 128) for bn in (16, 32, 64, 128)
              for bk in (8, 16) for tm in (1, 2, 4, 8) for tn in (1, 2, 4, 8) for stages in (1, 2)]


def templates(gpu: Gpu) -> list[SharedTiles]:
    """The parameters ``gpu`` admits: 64 to 256 threads in whole warps, tiles at least 2 x 2 per
    thread, shared memory within a block's static limit, registers within a thread's, each copy an
    exact number of rounds."""
    def legal(t: SharedTiles) -> bool:
        return (t.bm % t.tm == 0 and t.bn % t.tn == 0
                and 64 <= t.threads <= min(256, gpu.threads_per_block)
                and t.threads % gpu.warp_size == 0 and t.tm * t.tn >= 4
                and t.shared_bytes <= gpu.shared_per_block and t.registers <= gpu.registers_per_thread
                and (t.bm * t.bk) % t.threads == 0 and (t.bn * t.bk) % t.threads == 0)
    return [t for t in CANDIDATES if legal(t)]

