"""The tensor-core GEMM template: a contraction in shared-memory tiles multiplied by warp MMAs
(``mma.sync``, ``tensoregg.ir.intrinsics.WarpMMA``): float16 and bfloat16 data in m16n8k16, float32 in
m16n8k8 tf32, fp32 accumulators. Each block computes a ``bm`` x ``bn`` tile of one batch's C; its
warps tile it, each warp holding ``wm`` x ``wn`` MMA tiles (16 x 8) of accumulators, its threads the
fragments of them the layout gives::

    for k0 in 0..K step bk:
      the block copies A[i0:i0+bm, k0:k0+bk] and B[k0:k0+bk, j0:j0+bn] into shared memory, row by row
        of A and column by column of B (k contiguous, rows padded by 16 bytes: the fragment loads
        of a warp hit 32 distinct banks), or, where B is contiguous along n (a MatMul's [K, N]
        weights), B row by row (k-major, n contiguous, padded likewise: copied 16 bytes at a time),
        as the shared-tile template copies (``copies.copy_tile``; 0 outside the matrices; float16
        data copied as it is, no rounding)
      barrier
      for ks in 0..bk step k:
        each thread loads its A fragments of the warp's wm row tiles and its B fragments of its wn
          column tiles from shared memory into registers (the layout tables, ``WarpMMA.layout``):
          element by element, or with ``ldmatrix`` (16-bit data: x4 for an A fragment, its four
          8 x 8 quarters; x2 for a B fragment, its two 8 x 8 halves along k, transposed from a
          k-major tile; ``LoadMatrix``)
        mma(A fragment mi, B fragment ni, acc[mi, ni])  for mi < wm, ni < wn
      barrier
    the epilogue on each accumulator inside C (``gemm.guarded_result``), stored

With ``stages`` 2 the tiles are double: slice k0 + 1 is copied asynchronously (``cp.async``, 16
bytes at a time where the operand is contiguous along k) into one while slice k0 is multiplied from
the other (``copies.pipeline``).

Sums run in the tensor cores' order, not k's: compare with a tolerance. The parameters a GPU admits
(``templates``) are priced by ``cost``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tensoregg.ir.compute import Buffer, Expr, Load, call, const, fresh
from tensoregg.ir.compute.expr import idx
from tensoregg.ir.contraction import Contraction, uncast
from tensoregg.ir.intrinsics import MMA_BF16, MMA_F16, MMA_TF32, WARP, LoadMatrix, WarpMMA
from tensoregg.ir.loops import For, Invoke, Local, Ref, Stmt, Store
from tensoregg.targets.cuda.copies import async_tile, copy_tile, copy_width, pipeline
from tensoregg.targets.cuda.gemm import guarded_result, staged
from tensoregg.targets.cuda.machines import Gpu

F32 = np.dtype(np.float32)
PAD_BYTES = 16
"""Padding of a shared tile's rows: a warp's fragment loads (8 rows x 4 words) then fall in 32 banks."""
MMAS = {MMA_F16.dtype: MMA_F16, MMA_BF16.dtype: MMA_BF16, F32: MMA_TF32}
"""The warp MMA of each operand dtype (float32: tf32)."""


@dataclass(frozen=True)
class TensorCoreTiles:
    """The template above with its parameters (a :class:`tensoregg.ir.schedules.Template`)."""

    mma: WarpMMA
    bm: int
    bn: int
    bk: int
    wm: int
    wn: int
    stages: int = 1
    """Shared tiles per operand: 1, or 2 (double buffering with ``cp.async``)."""
    ldmatrix: bool = False
    """Whether fragments are loaded with ``ldmatrix`` (16-bit data only), else element by element."""

    @property
    def warps(self) -> int:
        return (self.bm // (self.wm * self.mma.m)) * (self.bn // (self.wn * self.mma.n))

    @property
    def threads(self) -> int:
        return self.warps * WARP

    @property
    def row(self) -> int:
        """Elements of a shared tile's row (``bk`` and the padding)."""
        return self.bk + PAD_BYTES // self.mma.dtype.itemsize

    @property
    def b_stage(self) -> int:
        """Elements of one stage of the B tile: room for ``bn`` rows of ``row`` (n-major) or ``bk``
        rows of ``bn`` and the padding (k-major, where B is contiguous along n)."""
        return max(self.bn * self.row, self.bk * (self.bn + PAD_BYTES // self.mma.dtype.itemsize))

    @property
    def shared_bytes(self) -> int:
        return (self.bm * self.row + self.b_stage) * self.mma.dtype.itemsize * self.stages

    @property
    def registers(self) -> int:
        """32-bit registers a thread needs: accumulators, one k step's fragments, addressing (the same
        with two stages: ptxas gave 102 and 108-110 for f16 128 x 128 x 32, 158 and 137 for tf32)."""
        mma, words = self.mma, 4 // self.mma.dtype.itemsize
        fragments = (self.wm * mma.fragment("a") + self.wn * mma.fragment("b")) // words
        return self.wm * self.wn * mma.fragment("c") + fragments + 32

    def __str__(self) -> str:
        double = ", 2 stages (cp.async)" if self.stages == 2 else ""
        ldmatrix = ", ldmatrix" if self.ldmatrix else ""
        return (f"gpu tensor cores {self.mma.ab} {self.bm}x{self.bn}x{self.bk}, warp {self.wm}x{self.wn} "
                f"of {self.mma.m}x{self.mma.n}x{self.mma.k}{ldmatrix}{double}")

    def lower(self, c: Contraction, known: Mapping[int, np.ndarray]
              ) -> tuple[list[Stmt], list[tuple[Buffer, np.ndarray]]]:
        """The block loop computing ``c.out`` (no constants of its own)."""
        if c.reduce.dtype != F32 or c.operand_dtype != self.mma.dtype:
            raise ValueError(f"{self}: contractions of {self.mma.dtype} summed in float32 only, not "
                             f"{c.operand_dtype} summed in {c.reduce.dtype} (output {c.out.name})")
        return [_lower(self, c)], []


def _lower(t: TensorCoreTiles, c: Contraction) -> For:
    mma = t.mma
    gm, gn = -(-c.m // t.bm), -(-c.n // t.bn)
    block, thread = fresh("blk"), fresh("thr")
    bi, bm_, bn_ = fresh("bb"), fresh("bmi"), fresh("bni")
    i0, j0 = bm_ * idx(t.bm), bn_ * idx(t.bn)
    warp, lane = call("div", thread, idx(WARP)), call("rem", thread, idx(WARP))
    across = t.bn // (t.wn * mma.n)
    wy, wx = call("div", warp, idx(across)), call("rem", warp, idx(across))
    lanes = (call("div", lane, idx(4)), call("rem", lane, idx(4)))
    a_tile = Buffer("As", mma.dtype, (t.stages * t.bm * t.row,))
    b_tile = Buffer("Bs", mma.dtype, (t.stages * t.b_stage,))
    na, nb, nc = (mma.fragment(op) for op in "abc")
    fa, fb = Buffer("fa", mma.dtype, (t.wm * na,)), Buffer("fb", mma.dtype, (t.wn * nb,))
    acc = Buffer("acc", F32, (t.wm * t.wn * nc,))
    mi, ni = fresh("mi"), fresh("ni")
    sides = (("a", a_tile, t.bm, i0), ("b", b_tile, t.bn, j0))

    def read(v: Expr) -> Expr:
        return v if mma.dtype == F32 else uncast(v, mma.dtype)

    def row_major(kk: Expr, line: Expr) -> Expr:
        return line * idx(t.row) + kk

    def k_major(kk: Expr, line: Expr) -> Expr:
        return kk * idx(t.bn + PAD_BYTES // mma.dtype.itemsize) + line

    b_rows = copy_width(c, "b", mma.dtype, k_major, "line", t.bn, t.bk, t.threads, t.b_stage, read) \
        * mma.dtype.itemsize == 16  # B contiguous along n: its tile k-major, copied 16 bytes at a time
    places = {"a": (row_major, "k"), "b": (k_major, "line") if b_rows else (row_major, "k")}

    def copies(k0: Expr, at: Expr) -> list[Stmt]:
        if t.stages == 1:
            return [copy_tile(c, side, tile, lines, places[side][0], t.bk, t.threads, thread, first, k0, bi,
                              read) for side, tile, lines, first in sides]
        return [async_tile(c, side, tile, lines, *places[side], t.bk, t.threads, thread, first, k0, bi, at,
                           read) for side, tile, lines, first in sides]

    # fragment element e of tile mi (rows) / ni (columns) at its (line, k) in the shared tile
    a_at, b_at = _affine(mma, "a", lanes), _affine(mma, "b", lanes)
    a_line, b_line = wy * idx(t.wm * mma.m) + mi * idx(mma.m), wx * idx(t.wn * mma.n) + ni * idx(mma.n)
    tile = (mi * idx(t.wn) + ni) * idx(nc)

    def compute(at: Expr) -> list[Stmt]:
        ks = fresh("ks")
        k_at = ks * idx(mma.k)
        def element(tile: Buffer, kk: Expr, line: Expr) -> Load:
            place = places["a" if tile is a_tile else "b"][0]
            return Load(tile, (staged(t, at, tile, place(k_at + kk, line)),))

        if t.ldmatrix:  # lane 8 q + r gives row r of quarter q (A: q % 2 down, q // 2 across; B: q across)
            q, r = call("div", lane, idx(8)), call("rem", lane, idx(8))
            a_row, a_col = r + call("rem", q, idx(2)) * idx(8), call("div", q, idx(2)) * idx(8)
            a_at_row = element(a_tile, a_col, a_line + a_row).index[0]
            half = call("rem", q, idx(2)) * idx(8)  # B's k-major rows are k: half q's row r is k 8 q + r
            b_row = element(b_tile, half + r, b_line) if b_rows else element(b_tile, half, b_line + r)
            b_at_row = b_row.index[0]
            load_a = For(mi, idx(0), idx(t.wm), [
                Invoke(LoadMatrix(4, mma.dtype), (Ref(fa, mi * idx(na)), Ref(a_tile, a_at_row)), na)])
            load_b = For(ni, idx(0), idx(t.wn), [
                Invoke(LoadMatrix(2, mma.dtype, b_rows), (Ref(fb, ni * idx(nb)), Ref(b_tile, b_at_row)), nb)])
        else:
            load_a = For(mi, idx(0), idx(t.wm), [
                Store(fa, (mi * idx(na) + idx(e),), element(a_tile, col, a_line + row))
                for e, (row, col) in enumerate(a_at)])
            load_b = For(ni, idx(0), idx(t.wn), [
                Store(fb, (ni * idx(nb) + idx(e),), element(b_tile, k, b_line + n))
                for e, (k, n) in enumerate(b_at)])
        invoke = Invoke(mma, (Ref(fa, mi * idx(na)), Ref(fb, ni * idx(nb)), Ref(acc, tile), Ref(acc, tile)),
                        mma.m * mma.n * mma.k // WARP)
        products = For(mi, idx(0), idx(t.wm), [For(ni, idx(0), idx(t.wn), [invoke])])
        return [For(ks, idx(0), idx(t.bk // mma.k), [load_a, load_b, products])]

    main = pipeline(copies, compute, -(-c.k // t.bk), t.stages)

    z = fresh("z")
    init = For(z, idx(0), idx(acc.size), [Store(acc, (z,), const(0.0, F32))])
    epilogue = For(mi, idx(0), idx(t.wm), [For(ni, idx(0), idx(t.wn), [
        guarded_result(c, bi, i0 + a_line + row, j0 + b_line + col, Load(acc, (tile + idx(e),)))
        for e, (row, col) in enumerate(_affine(mma, "c", lanes))])])

    registers = Local(fa, [Local(fb, [Local(acc, [init, *main, epilogue])])])
    threads = For(thread, idx(0), idx(t.threads), [registers], "thread")
    shared = Local(a_tile, [Local(b_tile, [threads], "shared")], "shared")
    return For(block, idx(0), idx(c.batch * gm * gn), [shared], "block",
               ((bi, c.batch), (bm_, gm), (bn_, gn)))


def _affine(mma: WarpMMA, operand: str, lanes: tuple[Expr, Expr]) -> list[tuple[Expr, Expr]]:
    """Each fragment element's (row, column) in ``operand``'s matrix (B: (k, n)) as expressions of the
    lane's group g and thread-in-group t (``lanes``): the layout table, which is affine in them,
    read as ``x * g + y * t + z`` per element."""
    g, t = lanes
    out = []
    for table in mma.layout(operand):
        z = table[0]
        x, y = table[4] - z, table[1] - z
        lane = np.arange(WARP)
        if not np.array_equal(table, (lane >> 2)[:, None] * x + (lane & 3)[:, None] * y + z):
            raise ValueError(f"{mma.name}: the layout of {operand} is not affine in the lane's group and "
                             "thread")
        out.append([_term(g, int(a)) + _term(t, int(b)) + idx(int(d)) for a, b, d in zip(x, y, z)])
    return list(zip(*out))


def _term(v: Expr, factor: int) -> Expr:
    return idx(0) if factor == 0 else v if factor == 1 else v * idx(factor)


CANDIDATES = [TensorCoreTiles(mma, bm, bn, bk * mma.k, wm, wn, stages, mma.ab != "tf32")
              for mma in (MMA_F16, MMA_BF16, MMA_TF32) for bm in (32, 64, 128) for bn in (32, 64, 128)
              for bk in (1, 2, 4) for wm in (1, 2, 4) for wn in (2, 4, 8) if wn >= wm for stages in (1, 2)]
"""Warp tiles at least as wide (in MMA tiles) as they are tall: a B fragment is half an A fragment,
so these load the fewest fragment bytes per MMA (the taller ones spilled registers at 8 warps).
16-bit fragments are loaded with ``ldmatrix`` (the tile's rows are 16-byte aligned: always
possible here)."""


def templates(gpu: Gpu, dtype: np.dtype) -> list[TensorCoreTiles]:
    """The parameters ``gpu`` admits for operands of ``dtype``: warps tiling the block exactly, 2 to 8
    of them, k steps of 16 to 64 bytes of a row, shared memory within a block's static limit,
    registers within a thread's (with room: ptxas needs more than the count), each copy an exact
    number of rounds."""
    mma = MMAS.get(np.dtype(dtype))

    def legal(t: TensorCoreTiles) -> bool:
        wm, wn = t.wm * t.mma.m, t.wn * t.mma.n
        return (t.mma == mma and t.bm % wm == 0 and t.bn % wn == 0 and 2 <= t.warps <= 8
                and t.threads <= gpu.threads_per_block and 16 <= t.bk * mma.dtype.itemsize <= 64
                and t.shared_bytes <= gpu.shared_per_block and 2 * t.registers <= gpu.registers_per_thread
                and (t.bm * t.bk) % t.threads == 0 and (t.bn * t.bk) % t.threads == 0)
    return [t for t in CANDIDATES if legal(t)]
