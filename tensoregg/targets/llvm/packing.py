"""The packing intrinsics of the targets (``tensoregg.targets.PanelTranspose``, ``PanelRuns``) in
LLVM IR.

The transpose takes rows in groups of four, ``CHUNK`` k at a time: a chunk of a group is four row
vectors of ``CHUNK`` floats, shuffled into ``CHUNK`` runs of (up to) four floats, each stored where
its k lands in the panel; the k past the last whole chunk are copied one float at a time. The runs
copy each run of a panel with masked vector loads and stores, one per vector it overlaps and k.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

os.environ.setdefault("LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS", "0")

import llvmlite.ir as ir

from tensoregg.errors import CompileError
from tensoregg.ir.intrinsics import PanelRuns, PanelTranspose
from tensoregg.targets.llvm.irtypes import F32, I1, I32, I64, PTR, VOID, declare, splat

CHUNK = 8
"""k per step of the vector loop (one 256-bit load per row)."""
GROUP = 4
"""Rows transposed together: a group's chunk is CHUNK runs of GROUP floats (16-byte stores)."""


def emit_panel_transpose(module: ir.Module, pack: PanelTranspose) -> ir.Function:
    """Define (once per module) ``void <pack.name>(i64 kc, ptr X, i64 ld, i64 rows, ptr P)``: for
    0 <= k < kc and 0 <= r < width, P[k * width + r] = X[min(r, rows - 1) * ld + k] (rows >= 1).
    Reads only those rows' first kc floats, writes only P's first kc * width."""
    if pack.name in module.globals:
        return module.globals[pack.name]
    fn, b = _function(module, pack.name, [I64, PTR, I64, I64, PTR])
    kc, x, ld, rows, p = fn.args
    last = b.sub(rows, ir.Constant(I64, 1))
    starts = []
    for r in range(pack.width):
        row = b.select(b.icmp_signed("<", ir.Constant(I64, r), rows), ir.Constant(I64, r), last)
        starts.append(b.gep(x, [b.mul(row, ld)], source_etype=F32))
    vec = ir.VectorType(F32, CHUNK)

    def chunk(k: ir.Value) -> None:
        for g in range(0, pack.width, GROUP):
            members = [b.load(b.gep(starts[r], [k], source_etype=F32), typ=vec, align=4)
                       for r in range(g, min(g + GROUP, pack.width))]
            n = len(members)
            members += [members[-1]] * (GROUP - n)  # a short last group: its extra rows are not stored
            for q, run in enumerate(_transposed(b, members)):
                for h in range(CHUNK // GROUP):  # k + 4h + q: rows g .. g+n-1
                    part = b.shuffle_vector(run, run, _mask(range(4 * h, 4 * h + n)))
                    kk = b.add(k, ir.Constant(I64, GROUP * h + q))
                    at = b.add(b.mul(kk, ir.Constant(I64, pack.width)), ir.Constant(I64, g))
                    b.store(part, b.gep(p, [at], source_etype=F32), align=4)

    def single(k: ir.Value) -> None:
        for r in range(pack.width):
            value = b.load(b.gep(starts[r], [k], source_etype=F32), typ=F32, align=4)
            at = b.add(b.mul(k, ir.Constant(I64, pack.width)), ir.Constant(I64, r))
            b.store(value, b.gep(p, [at], source_etype=F32), align=4)
    whole = b.and_(kc, ir.Constant(I64, -CHUNK))
    _counted(b, ir.Constant(I64, 0), whole, CHUNK, chunk)
    _counted(b, whole, kc, 1, single)
    b.ret_void()
    return fn


def _transposed(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """Four row vectors r0..r3 -> four vectors u0..u3 where u_q's 128-bit lane h holds (r0, r1, r2,
    r3) at k = 4h + q: the 4x4 transpose of every 128-bit lane, in 8 two-source shuffles (unpack
    low/high of floats, then of pairs), each one instruction."""
    lanes = CHUNK

    def pick(x: ir.Value, y: ir.Value, within: list[int]) -> ir.Value:
        """Per 128-bit lane l, ``within`` indexes (x's lane l ++ y's lane l)."""
        return b.shuffle_vector(x, y, _mask(base + (i if i < 4 else lanes + i - 4)
                                            for base in range(0, lanes, 4) for i in within))
    r0, r1, r2, r3 = rows
    t0, t1 = pick(r0, r1, [0, 4, 1, 5]), pick(r0, r1, [2, 6, 3, 7])
    t2, t3 = pick(r2, r3, [0, 4, 1, 5]), pick(r2, r3, [2, 6, 3, 7])
    return [pick(t0, t2, [0, 1, 4, 5]), pick(t0, t2, [2, 3, 6, 7]),
            pick(t1, t3, [0, 1, 4, 5]), pick(t1, t3, [2, 3, 6, 7])]


def _mask(indices: Iterable[int]) -> ir.Constant:
    values = list(indices)
    return ir.Constant(ir.VectorType(I32, len(values)), values)


def emit_panel_runs(module: ir.Module, pack: PanelRuns, lanes: int) -> ir.Function:
    """Define (once per module) ``void <pack.name>(i64 kc, ptr X, ptr ks, ptr runs, ptr P)``: ``ks``
    holds kc i64 offsets, ``runs`` ``pack.runs`` i64 triples (start, end, base) with
    0 <= start <= end <= width (start == end: no run). For each run, each vector of the panel it
    overlaps and each k < kc: the run's lanes of that vector are loaded from X[ks[k] + base + lane]
    and stored to P[k * width + lane] (masked: nothing outside the run is read or written)."""
    if pack.name in module.globals:
        return module.globals[pack.name]
    if pack.width % lanes:
        raise CompileError(f"{pack.name}: the width must be a multiple of {lanes} lanes")
    vec, mask_t = ir.VectorType(F32, lanes), ir.VectorType(I1, lanes)
    index_t = ir.VectorType(I64, lanes)
    load = declare(module, f"llvm.masked.load.v{lanes}f32.p0", vec, [PTR, I32, mask_t, vec])
    store = declare(module, f"llvm.masked.store.v{lanes}f32.p0", VOID, [vec, PTR, I32, mask_t])
    fn, b = _function(module, pack.name, [I64, PTR, PTR, PTR, PTR])
    kc, x, ks, runs, p = fn.args
    for r in range(pack.runs):
        start, end, base = (b.load(b.gep(runs, [ir.Constant(I64, 3 * r + i)], source_etype=I64), typ=I64)
                            for i in range(3))
        for v in range(pack.width // lanes):
            first = v * lanes
            overlaps = b.and_(b.icmp_signed("<", start, ir.Constant(I64, first + lanes)),
                              b.icmp_signed(">", end, ir.Constant(I64, first)))
            with b.if_then(overlaps):
                lane = ir.Constant(index_t, list(range(first, first + lanes)))
                mask = b.and_(b.icmp_signed(">=", lane, splat(b, start, index_t)),
                              b.icmp_signed("<", lane, splat(b, end, index_t)))
                source = b.gep(x, [b.add(base, ir.Constant(I64, first))], source_etype=F32)
                target = b.gep(p, [ir.Constant(I64, first)], source_etype=F32)

                def step(k: ir.Value) -> None:  # called at once, in this iteration
                    offset = b.load(b.gep(ks, [k], source_etype=I64), typ=I64)
                    value = b.call(load, [b.gep(source, [offset], source_etype=F32),
                                          ir.Constant(I32, 4), mask, ir.Constant(vec, ir.Undefined)])
                    at = b.gep(target, [b.mul(k, ir.Constant(I64, pack.width))], source_etype=F32)
                    b.call(store, [value, at, ir.Constant(I32, 4), mask])
                _counted(b, ir.Constant(I64, 0), kc, 1, step)
    b.ret_void()
    return fn


def _function(module: ir.Module, name: str, args: list[ir.Type]) -> tuple[ir.Function, ir.IRBuilder]:
    """A packing function ``void name(i64 kc, ptr X, ..., ptr P)`` (X and P: noalias) and a builder
    at its entry."""
    fn = ir.Function(module, ir.FunctionType(VOID, args), name)
    fn.attributes.add("nounwind")
    for arg in (fn.args[1], fn.args[-1]):
        arg.add_attribute("noalias")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def _counted(b: ir.IRBuilder, start: ir.Value, stop: ir.Value, step: int,
             body: Callable[[ir.Value], None]) -> None:
    """``for (k = start; k < stop; k += step) body(k)`` at the builder's position, which is after
    the loop on return."""
    head = b.block
    loop, after = b.append_basic_block("loop"), b.append_basic_block("after")
    b.cbranch(b.icmp_signed("<", start, stop), loop, after)
    b.position_at_end(loop)
    k = b.phi(I64)
    k.add_incoming(start, head)
    body(k)
    following = b.add(k, ir.Constant(I64, step))
    k.add_incoming(following, b.block)
    b.cbranch(b.icmp_signed("<", following, stop), loop, after)
    b.position_at_end(after)

