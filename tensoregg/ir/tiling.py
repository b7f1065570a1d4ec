"""A chosen :class:`~tensoregg.ir.schedules.GemmSchedule` of a contraction, expanded into loop IR.

The trace is the BLIS nest of ``tensoregg.ir.schedules``: split M and N into parallel tasks, split N by
``nc``, K by ``kc``, M by ``mc``, pack the blocks of the operands computed at run time into stack
tiles (the factor expressions are evaluated while packing, so a Conv's im2col is its B packing),
tensorize the ``mr`` x ``nr`` tile with the target's micro-kernel and run the epilogue on each tile
after its last K block (that block is peeled). A constant operand is packed once, at compile time.

Every element of C accumulates its products in k order, one FMA each, starting from 0: the same
values as the default lowering's accumulate (also contracted), whatever the block sizes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from tensoregg.ir.compute import INDEX, Buffer, Expr, Load, Var, call, const, fresh, walk
from tensoregg.ir.contraction import Contraction, evaluate
from tensoregg.ir.loops import For, Invoke, Local, Ref, Stmt, Store, flat
from tensoregg.ir.schedules import GemmSchedule


def idx(value: int) -> Expr:
    return const(value, INDEX)


def _ceil_div(e: Expr, d: int) -> Expr:
    return call("div", e + idx(d - 1), idx(d)) if d > 1 else e


def _loop(var: Var, stop: Expr, upper: int, body: list[Stmt]) -> For:
    """``for var in [0, stop)`` where ``stop`` is at most ``upper`` (which ``loops.work`` counts)."""
    return For(var, idx(0), call("min", idx(upper), stop), body)


def _pack(dest: Buffer, outer: Var, count: Expr, upper: int, kc: int, kcur: Expr, width: int,
          value: Expr, lane: Var, kk: Var) -> For:
    """``dest[(outer * kc + kk) * width + lane] = value`` for the ``count`` panels of a block."""
    at = (outer * idx(kc) + kk) * idx(width) + lane
    inner: Stmt = For(lane, idx(0), idx(width), [Store(dest, (at,), value)])
    return _loop(outer, count, upper, [For(kk, idx(0), kcur, [inner])])


def constant_factor(c: Contraction, side: str, known: Mapping[int, np.ndarray]) -> bool:
    """Whether factor ``side`` (``a`` or ``b``) reads only constants and is the same in every batch."""
    factor = c.a_expr if side == "a" else c.b_expr
    batch_vars = {id(c.index[d]) for d in c.batch_axes}
    return c.reads(factor) <= set(known) and not any(id(x) in batch_vars for x in walk(factor))


def prepacked(c: Contraction, side: str, width: int, known: Mapping[int, np.ndarray]) -> np.ndarray | None:
    """The whole constant factor ``side`` (``a``: panels of ``width`` rows, ``b``: of ``width``
    columns) packed at compile time as [panel][k][lane], rows/columns past the edge repeating the
    last one; None if it is not a ``constant_factor`` or not one ``evaluate`` computes."""
    if not constant_factor(c, side, known):
        return None
    lines = c.m if side == "a" else c.n
    panels = -(-lines // width)
    line, k = fresh("line"), fresh("k")
    expr = c.a(idx(0), line, k) if side == "a" else c.b(idx(0), k, line)
    at = np.minimum(np.arange(panels * width), lines - 1)
    env = {id(line): at[:, None], id(k): np.arange(c.k)[None, :]}
    values = evaluate(expr, env, known)
    if values is None:
        return None
    grid = np.broadcast_to(np.asarray(values, np.float32), (panels * width, c.k))
    return np.ascontiguousarray(grid.reshape(panels, width, c.k).transpose(0, 2, 1)).reshape(-1)


def lower_gemm(c: Contraction, s: GemmSchedule,
               known: Mapping[int, np.ndarray]) -> tuple[list[Stmt], list[tuple[Buffer, np.ndarray]]]:
    """Loop IR computing ``c.out`` with schedule ``s``, and the constants it packed (buffer, value).
    ``known`` holds the values of constant buffers (by Buffer id)."""
    uk = s.ukernel
    mr, nr = uk.mr, uk.nr
    m, n, k, batch = c.m, c.n, c.k, c.batch
    mt = math.ceil(math.ceil(m / s.split_m) / mr) * mr  # rows per task, a multiple of mr
    nt = math.ceil(math.ceil(n / s.split_n) / nr) * nr
    mc, nc, kc = min(s.mc, mt), min(s.nc, nt), min(s.kc, k)
    constants: list[tuple[Buffer, np.ndarray]] = []
    pre: dict[str, Buffer] = {}
    for side, width in (("a", mr), ("b", nr)):
        value = prepacked(c, side, width, known)
        if value is not None:
            pre[side] = Buffer(f"{side}packed", np.dtype(np.float32), (value.size,))
            constants.append((pre[side], value))
    ap = Buffer("apack", np.dtype(np.float32), (mc * kc,))
    bp = Buffer("bpack", np.dtype(np.float32), (nc * kc,))

    bi, tn, tm = fresh("b"), fresh("tn"), fresh("tm")
    m0, n0 = tm * idx(mt), tn * idx(nt)
    m1, n1 = call("min", idx(m), m0 + idx(mt)), call("min", idx(n), n0 + idx(nt))
    jb, ib, q, p = fresh("jb"), fresh("ib"), fresh("q"), fresh("p")
    jc, ic = n0 + jb * idx(nc), m0 + ib * idx(mc)
    ncur, mcur = call("min", idx(nc), n1 - jc), call("min", idx(mc), m1 - ic)
    nq, np_ = _ceil_div(ncur, nr), _ceil_div(mcur, mr)
    i, j = ic + p * idx(mr), jc + q * idx(nr)
    rows, cols = call("min", idx(mr), idx(m) - i), call("min", idx(nr), idx(n) - j)
    at = bi * idx(m * n)

    def block(pc: Expr, kcur: Expr, accumulate: Expr, last: bool) -> list[Stmt]:
        """One K block of the jc block: pack B, then per mc block pack A and run the tiles."""
        a_ref = (Ref(pre["a"], (call("div", i, idx(mr)) * idx(k) + pc) * idx(mr)) if "a" in pre
                 else Ref(ap, p * idx(kc * mr)))
        b_ref = (Ref(pre["b"], (call("div", j, idx(nr)) * idx(k) + pc) * idx(nr)) if "b" in pre
                 else Ref(bp, q * idx(kc * nr)))
        c_ref = Ref(c.out, at + i * idx(n) + j)
        tile: list[Stmt] = [Invoke(uk, (kcur, a_ref, b_ref, c_ref, idx(n), rows, cols, accumulate),
                                   work=mr * nr * kc)]
        if last and c.value is not c.reduce:
            rr, cc = fresh("rr"), fresh("cc")
            where = flat(c.out, at + (i + rr) * idx(n) + j + cc)
            value = c.epilogue(bi, i + rr, j + cc, Load(c.out, where))
            tile.append(_loop(rr, rows, mr, [_loop(cc, cols, nr, [Store(c.out, where, value)])]))
        inner: list[Stmt] = [_loop(q, nq, nc // nr, [_loop(p, np_, mc // mr, tile)])]
        if "a" not in pre:
            r, kk = fresh("r"), fresh("kk")
            value = c.a(bi, call("min", ic + p * idx(mr) + r, idx(m - 1)), pc + kk)
            inner.insert(0, _pack(ap, p, np_, mc // mr, kc, kcur, mr, value, r, kk))
        body: list[Stmt] = [_loop(ib, _ceil_div(m1 - m0, mc), -(-mt // mc), inner)]
        if "b" not in pre:
            lane, kk = fresh("c"), fresh("kk")
            value = c.b(bi, pc + kk, call("min", jc + q * idx(nr) + lane, idx(n - 1)))
            body.insert(0, _pack(bp, q, nq, nc // nr, kc, kcur, nr, value, lane, kk))
        return body

    blocks = math.ceil(k / kc)
    last_pc = (blocks - 1) * kc
    pb = fresh("pb")
    per_jc: list[Stmt] = []
    if blocks > 1:
        pc = pb * idx(kc)
        per_jc.append(For(pb, idx(0), idx(blocks - 1), block(pc, idx(kc), call("min", pb, idx(1)), False)))
    per_jc += block(idx(last_pc), idx(k - last_pc), idx(int(blocks > 1)), True)
    task: list[Stmt] = [_loop(jb, _ceil_div(n1 - n0, nc), -(-nt // nc), per_jc)]
    for buf, side in ((ap, "a"), (bp, "b")):
        if side not in pre:
            task = [Local(buf, task)]
    tasks = batch * s.split_n * s.split_m
    loop = For(fresh("t"), idx(0), idx(tasks), task, "parallel",
               ((bi, batch), (tn, s.split_n), (tm, s.split_m)))
    return [loop], constants
