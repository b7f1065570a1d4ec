"""Proofs of the tiled GEMM's index maps (``tensoregg.ir.tiling.lower_gemm`` and the packing it
does, ``_pack``/``prepacked``), for all sizes: every row of C (and, by the same code, every column)
is computed by exactly one (task, mc block, micro-tile, lane); every k by exactly one K block; a
packed panel is laid out one to one within its buffer; and the micro-kernel reads each packed
element where packing (at run time or at compile time) stored it. The formulas are restated from
``lower_gemm`` (the schedule's premises: mc a multiple of mr, every size positive).

Products of symbolic sizes make these nonlinear; each uniqueness proof applies the mixed-radix lemma
(``radix``, proved on its own) to the levels of the nest, so that z3 only combines instances.
"""

from __future__ import annotations

from collections.abc import Iterator

import z3

from tensoregg.testing.proofs import Proof
from tensoregg.testing.proofs.symbolic import Obligation


def _min(a: z3.ArithRef, b: z3.ArithRef) -> z3.ArithRef:
    return z3.If(a < b, a, b)


def radix(x1: z3.ArithRef, y1: z3.ArithRef, x2: z3.ArithRef, y2: z3.ArithRef, c: z3.ArithRef) -> z3.BoolRef:
    """x*c + y names (x, y) uniquely for 0 <= y < c."""
    return z3.Implies(z3.And(x1 * c + y1 == x2 * c + y2, y1 >= 0, y1 < c, y2 >= 0, y2 < c),
                      z3.And(x1 == x2, y1 == y2))


def radix_lemma() -> Obligation:
    x1, y1, x2, y2, c = z3.Ints("x1 y1 x2 y2 c")
    return ("lemma: x*c + y with 0 <= y < c names (x, y) uniquely",
            z3.Implies(c >= 1, radix(x1, y1, x2, y2, c)))


class Rows:
    """M's loop nest in ``lower_gemm``: ``split`` tasks of ``mt = a*mr`` rows (a = ceil(ceil(m/split)/mr)),
    blocks of ``mc = b*mr`` rows (b <= a: mc = min(schedule's mc, mt)), micro-tiles of ``mr`` rows
    (``clip``: the last tile's rows end at m, as ``rows = min(mr, m - i)`` has it)."""

    def __init__(self, clip: bool = True) -> None:
        self.clip = clip
        self.m, self.split, self.mr, self.a, self.b, self.u = z3.Ints("m split mr a b u")
        self.mt, self.mc = self.a * self.mr, self.b * self.mr
        m, split, mr, a, b, u = self.m, self.split, self.mr, self.a, self.b, self.u
        # u = ceil(m / split) and a = ceil(u / mr), stated by what a ceiling is
        self.premises = z3.And(m >= 1, split >= 1, mr >= 1, b >= 1, b <= a,
                               u * split >= m, (u - 1) * split < m, a * mr >= u, (a - 1) * mr < u)

    def row(self, tm: z3.ArithRef, ib: z3.ArithRef, p: z3.ArithRef, lane: z3.ArithRef) -> z3.ArithRef:
        """``i + lane`` of the micro-tile: i = m0 + ib*mc + p*mr, m0 = tm*mt."""
        return tm * self.mt + ib * self.mc + p * self.mr + lane

    def visited(self, tm: z3.ArithRef, ib: z3.ArithRef, p: z3.ArithRef, lane: z3.ArithRef) -> z3.BoolRef:
        """The loop bounds: the task, block and tile loops, and the tile's ``rows = min(mr, m - i)``."""
        m, mr, mt, mc = self.m, self.mr, self.mt, self.mc
        m0 = tm * mt
        m1 = _min(m, m0 + mt)
        ic = m0 + ib * mc
        i = ic + p * mr
        return z3.And(tm >= 0, tm < self.split, ib >= 0, ib * mc < m1 - m0,
                      p >= 0, p * mr < _min(mc, m1 - ic),
                      lane >= 0, lane < (_min(mr, m - i) if self.clip else mr))

    def levels(self, tm: z3.ArithRef, ib: z3.ArithRef, p: z3.ArithRef, lane: z3.ArithRef) -> z3.BoolRef:
        """What the bounds give each level: a lane within mr, a tile within its block, a block within
        its task (in units of mr)."""
        within = ib * self.b + p
        return z3.And(lane >= 0, lane < self.mr, p >= 0, p < self.b, within >= 0, within < self.a)


def rows_cover_once(clip: bool = True) -> Iterator[Obligation]:
    """Every row in [0, m) is visited, only rows in [0, m) are, and each by one (tm, ib, p, lane)."""
    n = Rows(clip)
    tm, ib, p, lane, tm2, ib2, p2, lane2 = z3.Ints("tm ib p lane tm2 ib2 p2 lane2")
    yield radix_lemma()
    yield ("rows: the bounds give each level its range",
           z3.Implies(z3.And(n.premises, n.visited(tm, ib, p, lane)), n.levels(tm, ib, p, lane)))
    row = n.row(tm, ib, p, lane)
    yield ("rows: only rows of C", z3.Implies(z3.And(n.premises, n.visited(tm, ib, p, lane)),
                                             z3.And(row >= 0, row < n.m)))
    q, q2 = tm * n.a + ib * n.b + p, tm2 * n.a + ib2 * n.b + p2
    lemma = [radix(q, lane, q2, lane2, n.mr), radix(tm, ib * n.b + p, tm2, ib2 * n.b + p2, n.a),
             radix(ib, p, ib2, p2, n.b)]
    yield ("rows: each row once", z3.Implies(
        z3.And(n.premises, n.levels(tm, ib, p, lane), n.levels(tm2, ib2, p2, lane2), *lemma,
               n.row(tm, ib, p, lane) == n.row(tm2, ib2, p2, lane2)),
        z3.And(tm == tm2, ib == ib2, p == p2, lane == lane2)))
    r, r1, r2 = z3.Ints("r r1 r2")
    # the division theorem's quotients and remainders of r by mt, then mc, then mr
    division = z3.And(r == tm * n.mt + r1, r1 >= 0, r1 < n.mt, r1 == ib * n.mc + r2, r2 >= 0, r2 < n.mc,
                      r2 == p * n.mr + lane, lane >= 0, lane < n.mr)
    spans = n.split * n.mt >= n.m  # the next obligation
    yield ("rows: every row of C", z3.Implies(z3.And(n.premises, r >= 0, r < n.m, division, spans),
                                              n.visited(tm, ib, p, lane)))
    yield ("rows: the tasks span M (split * mt >= m)", z3.Implies(n.premises, n.split * n.mt >= n.m))


def k_blocks_cover_once() -> Iterator[Obligation]:
    """K in ``blocks = ceil(k/kc)`` blocks: ``blocks - 1`` of kc, then one of ``k - (blocks-1)*kc``
    (between 1 and kc): every k once."""
    k, kc, blocks, pb, kk, pb2, kk2, r = z3.Ints("k kc blocks pb kk pb2 kk2 r")
    premises = z3.And(k >= 1, kc >= 1, kc <= k, blocks * kc >= k, (blocks - 1) * kc < k)
    last = (blocks - 1) * kc

    def visited(b: z3.ArithRef, o: z3.ArithRef) -> z3.BoolRef:
        width = z3.If(b == blocks - 1, k - last, kc)
        return z3.And(b >= 0, b < blocks, o >= 0, o < width)
    yield radix_lemma()
    yield "k: the last block holds 1..kc", z3.Implies(premises, z3.And(k - last >= 1, k - last <= kc))
    yield ("k: only k in [0, k), each once", z3.Implies(
        z3.And(premises, visited(pb, kk), visited(pb2, kk2), radix(pb, kk, pb2, kk2, kc)),
        z3.And(pb * kc + kk >= 0, pb * kc + kk < k,
               z3.Implies(pb * kc + kk == pb2 * kc + kk2, z3.And(pb == pb2, kk == kk2)))))
    yield ("k: every k", z3.Implies(z3.And(premises, r >= 0, r < k, r == pb * kc + kk, kk >= 0, kk < kc),
                                   visited(pb, kk)))


def packing() -> Iterator[Obligation]:
    """``_pack`` stores (panel, kk, lane) at ``(panel*kc + kk)*width + lane``: one to one, inside the
    ``count*kc*width`` buffer; the micro-kernel, given ``Ref(pack, p*kc*width)``, reads k step kk of
    lane l at ``kk*width + l``: where packing stored (p, kk, l). A compile-time ``prepacked`` factor
    ([K block][panel][k][lane], panels*width lines per block) is read at ``pc*panels*width + i*kcur``
    plus ``kk*width + l`` for the panel at line ``i = P*width``: where its block stored (P, kk, l)."""
    kc, width, count, kcur = z3.Ints("kc width count kcur")
    p, kk, lane, p2, kk2, lane2 = z3.Ints("p kk lane p2 kk2 lane2")
    premises = z3.And(kc >= 1, width >= 1, count >= 0, kcur >= 1, kcur <= kc)

    def at(panel: z3.ArithRef, k: z3.ArithRef, ln: z3.ArithRef) -> z3.ArithRef:
        return (panel * kc + k) * width + ln

    def inside(panel: z3.ArithRef, k: z3.ArithRef, ln: z3.ArithRef) -> z3.BoolRef:
        return z3.And(panel >= 0, panel < count, k >= 0, k < kcur, ln >= 0, ln < width)
    yield radix_lemma()
    yield ("pack: one to one", z3.Implies(
        z3.And(premises, inside(p, kk, lane), inside(p2, kk2, lane2), at(p, kk, lane) == at(p2, kk2, lane2),
               radix(p * kc + kk, lane, p2 * kc + kk2, lane2, width), radix(p, kk, p2, kk2, kc)),
        z3.And(p == p2, kk == kk2, lane == lane2)))
    where = at(p, kk, lane)
    yield ("pack: inside the buffer", z3.Implies(z3.And(premises, inside(p, kk, lane)),
                                                  z3.And(where >= 0, where < count * kc * width)))
    yield ("pack: the micro-kernel reads what was stored",
           z3.Implies(premises, p * kc * width + kk * width + lane == at(p, kk, lane)))
    pc_block, panels = z3.Ints("pc_block panels")
    pc = pc_block * kc
    stored = pc_block * kc * panels * width + p * kcur * width + kk * width + lane  # numpy's layout
    read = pc * panels * width + (p * width) * kcur + kk * width + lane  # lower_gemm's Ref + the kernel
    yield "prepacked: the micro-kernel reads what was stored", z3.Implies(premises, stored == read)


def proofs() -> list[Proof]:
    return [Proof("gemm-rows-cover-once", "lower_gemm's M (and N) nest, every size and schedule",
                  "gemm-rows", rows_cover_once),
            Proof("gemm-k-blocks-cover-once", "lower_gemm's K blocks, every k and kc", "gemm-k",
                  k_blocks_cover_once),
            Proof("gemm-packing", "_pack's and prepacked's layouts against the micro-kernel's reads",
                  "gemm-packing", packing)]
