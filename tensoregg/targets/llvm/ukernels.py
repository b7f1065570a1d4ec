"""Register-blocked fp32 GEMM micro-kernels: the tiles a target offers and their LLVM IR.

A micro-kernel updates an ``mr`` x ``nr`` tile of C with ``kc`` outer products of a packed A panel and
a packed B panel (the BLIS inner kernel, see ``tensoregg.ir.schedules``). Its ``mr * nr / lanes``
accumulators stay in vector registers for the whole k loop; each k step loads ``nr / lanes`` vectors
of B, broadcasts ``mr`` scalars of A and does ``mr * nr / lanes`` vector FMAs
(../shared/notes/llvmlite.md, sections 3-4). Everything follows from the vector width and the
register count, so the same code serves AVX2 (16 ymm) and AVX-512 (32 zmm).
"""

from __future__ import annotations

import os

os.environ.setdefault("LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS", "0")

import ctypes
import dataclasses

import llvmlite.ir as ir
import numpy as np

from tensoregg.errors import CompileError
from tensoregg.ir.intrinsics import MicroKernel
from tensoregg.targets.llvm.irtypes import F32, I1, I32, I64, PTR, VOID, declare, splat
from tensoregg.targets.llvm.jit import JitModule, fastest

MAX_MR = 16
"""The most rows of a tile."""
MAX_VECTORS = 4
"""The most vectors across a tile (``nr = vectors * lanes``)."""
SMALL_MR = (4, 2, 1)
"""Rows of the small-M tiles (GEMV-like shapes), each at the widest ``nr`` the registers allow."""
ROLLED_FMAS = 12
"""A k step of at least this many vector FMAs (two FMA units of latency 4 to keep busy, with margin)
keeps its loop rolled: unrolling it gains nothing and adds register pressure (with ``-mcpu=znver3``,
LLVM unrolls 14x8 by 2 and spills accumulators). Smaller tiles are unrolled as O3 likes."""



def fits(mr: int, vectors: int, registers: int) -> bool:
    """Whether an ``mr`` x ``vectors``-vector tile fits the register file: its accumulators, one
    register per B vector and one for the broadcast A value."""
    return mr * vectors + vectors + 1 <= registers


def microkernel(mr: int, nr: int) -> MicroKernel:
    """The fp32 micro-kernel of an ``mr`` x ``nr`` tile, with its canonical name."""
    return MicroKernel(f"gemm_f32_{mr}x{nr}", mr, nr)


def microkernels_for(vector_bits: int, registers: int) -> tuple[MicroKernel, ...]:
    """The tiles a target with ``registers`` float vector registers of ``vector_bits`` bits offers,
    largest first: for each width (1 to 4 vectors) the most rows that fit, and also those rounded down
    to a multiple of 4 (a better fit for M = 4k); for small M, 4, 2 and 1 rows at the widest width
    that fits."""
    lanes = vector_bits // 32
    if lanes < 1 or not fits(1, 1, registers):
        raise CompileError(f"no GEMM micro-kernel fits {registers} vector registers of {vector_bits} bits")
    tiles: set[tuple[int, int]] = set()
    for vectors in range(1, MAX_VECTORS + 1):
        rows = [mr for mr in range(1, MAX_MR + 1) if fits(mr, vectors, registers)]
        if rows:
            tiles.add((rows[-1], vectors))
            if rows[-1] > 4:
                tiles.add((rows[-1] - rows[-1] % 4, vectors))
    for mr in SMALL_MR:
        widths = [v for v in range(1, MAX_VECTORS + 1) if fits(mr, v, registers)]
        if widths:
            tiles.add((mr, widths[-1]))
    ordered = sorted(tiles, key=lambda t: (-t[0] * t[1], -t[1]))
    return tuple(microkernel(mr, vectors * lanes) for mr, vectors in ordered)


PREFETCH_BYTES = 2048
"""How far ahead of the k step the A and B panels are prefetched: a constant operand (weights packed
at compile time) streams from memory once per run, faster than the hardware prefetcher brings it."""
MEASURE_KC = 128
"""k steps per call when measuring: the A and B panels of every tile fit a 48 KiB L1."""


def measure_efficiency(kernels: tuple[MicroKernel, ...], lanes: int, core_flops: float,
                       seconds: float = 0.004) -> tuple[MicroKernel, ...]:
    """``kernels`` with their measured ``efficiency``: each called in a native loop on full tiles
    (accumulating, C rows 4 KiB apart as in a real GEMM), best of 5 runs of about ``seconds``."""
    module = ir.Module("ukernel_rates")
    for uk in kernels:
        fn = emit_microkernel(module, uk, lanes)
        fn.attributes.add("noinline")
        driver = ir.Function(module, ir.FunctionType(VOID, [I64, PTR, PTR, PTR]), f"bench_{uk.name}")
        reps, a, b, c = driver.args
        entry, loop, done = (driver.append_basic_block(x) for x in ("entry", "loop", "done"))
        build = ir.IRBuilder(entry)
        build.branch(loop)
        build.position_at_end(loop)
        i = build.phi(I64)
        i.add_incoming(ir.Constant(I64, 0), entry)
        build.call(fn, [ir.Constant(I64, MEASURE_KC), a, b, c, ir.Constant(I64, 1024),
                        ir.Constant(I64, uk.mr), ir.Constant(I64, uk.nr), ir.Constant(I64, 1)])
        step = build.add(i, ir.Constant(I64, 1))
        i.add_incoming(step, loop)
        build.cbranch(build.icmp_signed("<", step, reps), loop, done)
        build.position_at_end(done)
        build.ret_void()
    jit = JitModule(module)
    measured = []
    for uk in kernels:
        signature = ctypes.CFUNCTYPE(None, ctypes.c_int64, *[ctypes.c_void_p] * 3)
        bench = signature(jit.address(f"bench_{uk.name}"))
        a = np.full(MEASURE_KC * uk.mr, 1e-3, np.float32)
        b = np.full(MEASURE_KC * uk.nr, 1e-3, np.float32)
        c = np.zeros(uk.mr * 1024, np.float32)
        flops = 2 * uk.mr * uk.nr * MEASURE_KC
        reps = max(1, int(seconds * core_flops / flops))
        best = fastest(lambda: bench(reps, a.ctypes.data, b.ctypes.data, c.ctypes.data))
        share = min(1.0, reps * flops / best / core_flops)
        measured.append(dataclasses.replace(uk, efficiency=round(share, 3)))
    return tuple(measured)


def emit_microkernel(module: ir.Module, uk: MicroKernel, lanes: int) -> ir.Function:
    """Define (once per module) ``void <uk.name>(i64 kc, ptr A, ptr B, ptr C, i64 ldc, i64 m, i64 n,
    i64 accumulate)``.

    A is packed as A[k * mr + r] and B as B[k * nr + c] (both read in full, kc * mr and kc * nr
    floats); C is row-major with row stride ``ldc``. For 0 <= r < m <= mr and 0 <= c < n <= nr:
    acc = C[r, c] if accumulate != 0 else 0; acc = fma(A[r, k], B[k, c], acc) for k = 0 .. kc-1 in
    order; C[r, c] = acc. C is never touched outside that m x n tile: a full tile uses plain vector
    loads and stores, an edge tile masked ones.
    """
    if uk.name in module.globals:
        return module.globals[uk.name]
    if uk.dtype != "float32" or lanes < 1 or uk.mr < 1 or uk.nr < 1 or uk.nr % lanes:
        raise CompileError(f"micro-kernel {uk.name}: need float32 and nr ({uk.nr}) a multiple of "
                           f"the vector lanes ({lanes}), got {uk.dtype}")
    return _TileEmitter(module, uk, lanes).emit()


class _TileEmitter:
    """Builds one micro-kernel function (see ``emit_microkernel``)."""

    def __init__(self, module: ir.Module, uk: MicroKernel, lanes: int) -> None:
        self.module, self.uk, self.lanes = module, uk, lanes
        self.vec = ir.VectorType(F32, lanes)
        self.mask = ir.VectorType(I1, lanes)
        self.vectors = uk.nr // lanes
        self.fn = ir.Function(module, ir.FunctionType(VOID, [I64, PTR, PTR, PTR, I64, I64, I64, I64]),
                              uk.name)
        self.fn.attributes.add("nounwind")
        for arg in self.fn.args[1:4]:
            arg.add_attribute("noalias")
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.tile: list[ir.Value] = []
        """Per accumulator (row-major), its address in C (rows >= m are never dereferenced)."""

    def intrinsic(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        return declare(self.module, f"llvm.{name}", ret, args)

    def emit(self) -> ir.Function:
        b, uk, fn = self.b, self.uk, self.fn
        kc, _, _, c, ldc, m, n, accumulate = fn.args
        blocks = {name: fn.append_basic_block(name) for name in
                  ("load", "load_full", "load_edge", "start", "loop", "done", "store_full", "store_edge")}
        rows = [b.gep(c, [b.mul(ldc, ir.Constant(I64, r))], source_etype=F32) for r in range(uk.mr)]
        self.tile = [b.gep(row, [ir.Constant(I64, j * self.lanes)], source_etype=F32)
                     for row in rows for j in range(self.vectors)]
        prefetch = self.intrinsic("prefetch.p0", VOID, [PTR, I32, I32, I32])
        for row in rows:  # C rows with a power-of-two ldc collide in L1 sets: fetch them for writing
            for col in sorted({*range(0, uk.nr, 16), uk.nr - 1}):  # every 64-byte line of the row
                line = b.gep(row, [ir.Constant(I64, col)], source_etype=F32)
                b.call(prefetch, [line, ir.Constant(I32, 1), ir.Constant(I32, 3), ir.Constant(I32, 1)])
        full = b.and_(b.icmp_signed("==", m, ir.Constant(I64, uk.mr)),
                      b.icmp_signed("==", n, ir.Constant(I64, uk.nr)))
        b.cbranch(b.icmp_signed("!=", accumulate, ir.Constant(I64, 0)), blocks["load"], blocks["start"])
        b.position_at_end(blocks["load"])
        b.cbranch(full, blocks["load_full"], blocks["load_edge"])
        zero = ir.Constant(self.vec, [0.0] * self.lanes)
        incoming = [([zero] * len(self.tile), fn.entry_basic_block),
                    (self.load_tile(blocks["load_full"], masked=False), blocks["load_full"]),
                    (self.load_tile(blocks["load_edge"], masked=True), blocks["load_edge"])]
        for block in (blocks["load_full"], blocks["load_edge"]):
            b.position_at_end(block)
            b.branch(blocks["start"])
        b.position_at_end(blocks["start"])
        init = self.phis(incoming)
        b.cbranch(b.icmp_signed(">", kc, ir.Constant(I64, 0)), blocks["loop"], blocks["done"])
        updated = self.k_loop(blocks["start"], blocks["loop"], blocks["done"], init)
        b.position_at_end(blocks["done"])
        result = self.phis([(init, blocks["start"]), (updated, blocks["loop"])])
        b.cbranch(full, blocks["store_full"], blocks["store_edge"])
        self.store_tile(blocks["store_full"], result, masked=False)
        self.store_tile(blocks["store_edge"], result, masked=True)
        return fn

    def edge_masks(self) -> list[ir.Value]:
        """Per accumulator, its lanes inside the m x n tile (none for rows >= m)."""
        b, uk, (m, n) = self.b, self.uk, self.fn.args[5:7]
        index = ir.VectorType(I64, self.lanes)
        columns = [ir.Constant(index, list(range(j * self.lanes, (j + 1) * self.lanes)))
                   for j in range(self.vectors)]
        masks = []
        for r in range(uk.mr):
            row_n = b.select(b.icmp_signed("<", ir.Constant(I64, r), m), n, ir.Constant(I64, 0))
            masks += [b.icmp_signed("<", col, splat(b, row_n, index)) for col in columns]
        return masks

    def phis(self, incoming: list[tuple[list[ir.Value], ir.Block]]) -> list[ir.Value]:
        """One phi per accumulator, merging the given (values, predecessor) pairs."""
        merged = []
        for i in range(len(self.tile)):
            phi = self.b.phi(self.vec)
            for values, block in incoming:
                phi.add_incoming(values[i], block)
            merged.append(phi)
        return merged

    def load_tile(self, block: ir.Block, *, masked: bool) -> list[ir.Value]:
        """The C tile as accumulators (masked: lanes outside the m x n tile are 0 and not read)."""
        self.b.position_at_end(block)
        if not masked:
            return [self.b.load(p, typ=self.vec, align=4) for p in self.tile]
        # the i32 alignment operand: LLVM 22 upgrades it to an ``align`` attribute, older ones need it
        load = self.intrinsic(f"masked.load.v{self.lanes}f32.p0", self.vec, [PTR, I32, self.mask, self.vec])
        zero = ir.Constant(self.vec, [0.0] * self.lanes)
        return [self.b.call(load, [p, ir.Constant(I32, 4), mask, zero])
                for p, mask in zip(self.tile, self.edge_masks())]

    def store_tile(self, block: ir.Block, values: list[ir.Value], *, masked: bool) -> None:
        """Write the accumulators back (masked: only the m x n tile) and return."""
        b = self.b
        b.position_at_end(block)
        if masked:
            store = self.intrinsic(f"masked.store.v{self.lanes}f32.p0", VOID,
                                   [self.vec, PTR, I32, self.mask])
            for value, p, mask in zip(values, self.tile, self.edge_masks()):
                b.call(store, [value, p, ir.Constant(I32, 4), mask])
        else:
            for value, p in zip(values, self.tile):
                b.store(value, p, align=4)
        b.ret_void()

    def k_loop(self, start: ir.Block, loop: ir.Block, done: ir.Block, init: list[ir.Value]) -> list[ir.Value]:
        """The k loop (entered with kc > 0): accumulators as phis, one rank-1 update per step."""
        b, uk = self.b, self.uk
        kc, a, bp = self.fn.args[:3]
        b.position_at_end(loop)
        k = b.phi(I64)
        accs = [b.phi(self.vec) for _ in init]
        fma = self.intrinsic(f"fma.v{self.lanes}f32", self.vec, [self.vec] * 3)
        a_k = b.gep(a, [b.mul(k, ir.Constant(I64, uk.mr), flags=["nuw", "nsw"])], inbounds=True,
                    source_etype=F32)
        b_k = b.gep(bp, [b.mul(k, ir.Constant(I64, uk.nr), flags=["nuw", "nsw"])], inbounds=True,
                    source_etype=F32)
        b_row = [b.load(b.gep(b_k, [ir.Constant(I64, j * self.lanes)], inbounds=True, source_etype=F32),
                        typ=self.vec, align=4) for j in range(self.vectors)]
        prefetch = self.intrinsic("prefetch.p0", VOID, [PTR, I32, I32, I32])
        for panel in (a_k, b_k):  # the address may be past the panel: prefetches never fault
            ahead = b.gep(panel, [ir.Constant(I64, PREFETCH_BYTES // 4)], source_etype=F32)
            b.call(prefetch, [ahead, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])
        updated = []
        for r in range(uk.mr):
            a_rk = b.gep(a_k, [ir.Constant(I64, r)], inbounds=True, source_etype=F32)
            a_splat = splat(b, b.load(a_rk, typ=F32, align=4), self.vec)
            for j in range(self.vectors):
                updated.append(b.call(fma, [a_splat, b_row[j], accs[r * self.vectors + j]]))
        step = b.add(k, ir.Constant(I64, 1), flags=["nuw", "nsw"])
        k.add_incoming(ir.Constant(I64, 0), start)
        k.add_incoming(step, loop)
        for acc, first, last in zip(accs, init, updated):
            acc.add_incoming(first, start)
            acc.add_incoming(last, loop)
        back = b.cbranch(b.icmp_signed("<", step, kc), loop, done)
        if len(updated) >= ROLLED_FMAS:
            self.keep_rolled(back)
        return updated

    def keep_rolled(self, back: ir.Instruction) -> None:
        """Tell LLVM not to unroll the loop whose back branch is ``back``: ``!llvm.loop`` metadata, a
        node whose first operand is itself (llvmlite cannot build one: its operands are set after)."""
        m = self.module
        disable = m.add_metadata([ir.MetaDataString(m, "llvm.loop.unroll.disable")])
        loop_id = m.add_metadata([disable, ir.MetaDataString(m, f"{self.uk.name} k loop")])
        loop_id.operands = (loop_id, disable)
        back.set_metadata("llvm.loop", loop_id)
