"""The panel transpose (``tensoregg.targets.PanelTranspose``) in LLVM IR: rows in groups of four,
``CHUNK`` k at a time, transposed with one vector shuffle per group.

A chunk of a group is four row vectors of ``CHUNK`` floats, concatenated and shuffled into ``CHUNK``
runs of (up to) four floats, each stored where its k lands in the panel; the k past the last whole
chunk are copied one float at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

os.environ.setdefault("LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS", "0")

import llvmlite.ir as ir

from tensoregg.targets import PanelTranspose
from tensoregg.targets.llvm.irtypes import F32, I32, I64, PTR, VOID

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
    fn = ir.Function(module, ir.FunctionType(VOID, [I64, PTR, I64, I64, PTR]), pack.name)
    fn.attributes.add("nounwind")
    kc, x, ld, rows, p = fn.args
    for arg in (x, p):
        arg.add_attribute("noalias")
    entry, vloop, tail_check, tail, done = (fn.append_basic_block(n) for n in
                                            ("entry", "vloop", "tail_check", "tail", "done"))
    b = ir.IRBuilder(entry)
    last = b.sub(rows, ir.Constant(I64, 1))
    starts = []
    for r in range(pack.width):
        row = b.select(b.icmp_signed("<", ir.Constant(I64, r), rows), ir.Constant(I64, r), last)
        starts.append(b.gep(x, [b.mul(row, ld)], source_etype=F32))
    whole = b.and_(kc, ir.Constant(I64, -CHUNK))
    b.cbranch(b.icmp_signed(">", whole, ir.Constant(I64, 0)), vloop, tail_check)

    b.position_at_end(vloop)
    k = b.phi(I64)
    k.add_incoming(ir.Constant(I64, 0), entry)
    vec = ir.VectorType(F32, CHUNK)
    for g in range(0, pack.width, GROUP):
        members = [b.load(b.gep(starts[r], [k], source_etype=F32), typ=vec, align=4)
                   for r in range(g, min(g + GROUP, pack.width))]
        n = len(members)
        members += [members[-1]] * (GROUP - n)  # a short last group: its extra rows are not stored
        for q, run in enumerate(_transposed(b, members)):
            for h in range(CHUNK // GROUP):  # k + 4h + q: rows g .. g+n-1
                part = b.shuffle_vector(run, ir.Constant(vec, ir.Undefined), _mask(range(4 * h, 4 * h + n)))
                kk = b.add(k, ir.Constant(I64, GROUP * h + q))
                at = b.add(b.mul(kk, ir.Constant(I64, pack.width)), ir.Constant(I64, g))
                b.store(part, b.gep(p, [at], source_etype=F32), align=4)
    step = b.add(k, ir.Constant(I64, CHUNK))
    k.add_incoming(step, vloop)
    b.cbranch(b.icmp_signed("<", step, whole), vloop, tail_check)

    b.position_at_end(tail_check)
    b.cbranch(b.icmp_signed("<", whole, kc), tail, done)
    b.position_at_end(tail)
    kt = b.phi(I64)
    kt.add_incoming(whole, tail_check)
    for r in range(pack.width):
        value = b.load(b.gep(starts[r], [kt], source_etype=F32), typ=F32, align=4)
        at = b.add(b.mul(kt, ir.Constant(I64, pack.width)), ir.Constant(I64, r))
        b.store(value, b.gep(p, [at], source_etype=F32), align=4)
    step = b.add(kt, ir.Constant(I64, 1))
    kt.add_incoming(step, tail)
    b.cbranch(b.icmp_signed("<", step, kc), tail, done)
    b.position_at_end(done)
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
