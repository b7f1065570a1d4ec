"""A chosen :class:`~tensoregg.ir.schedules.GemmSchedule` of a contraction, expanded into loop IR.

The trace is the loop nest of ``tensoregg.ir.schedules``: split M and N into parallel tasks, split N by
``nc``, K by ``kc``, M by ``mc``, pack the blocks of the operands computed at run time into stack
tiles (the factor expressions are evaluated while packing, so a Conv's im2col is its B packing),
tensorize the ``mr`` x ``nr`` tile with the target's micro-kernel and run the epilogue on each tile
after its last K block (that block is peeled). A constant operand is packed once, at compile time.

Every element of C accumulates its products in k order, one FMA each, starting from 0: the same
values as the default lowering's accumulate (also contracted), whatever the block sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from tensoregg.ir.compute import (
    INDEX,
    Buffer,
    Call,
    Const,
    Expr,
    Load,
    Var,
    call,
    fresh,
    substitute,
    walk,
)
from tensoregg.ir.compute.expr import idx
from tensoregg.ir.contraction import Contraction, evaluate, variables
from tensoregg.ir.intrinsics import PanelRuns, PanelTranspose
from tensoregg.ir.loops import For, Invoke, Local, Ref, Stmt, Store, flat, offset
from tensoregg.ir.schedules import GemmSchedule


def _ceil_div(e: Expr, d: int) -> Expr:
    return call("div", e + idx(d - 1), idx(d)) if d > 1 else e


def _loop(var: Var, stop: Expr, upper: int, body: list[Stmt]) -> For:
    """``for var in [0, stop)`` where ``stop`` is at most ``upper`` (which ``loops.work`` counts)."""
    return For(var, idx(0), call("min", idx(upper), stop), body)


Factor = Callable[[Expr, Expr], Expr]
"""A factor's value at (line, k) of the current batch: a row of A or a column of B."""

Rows = tuple[Buffer, Expr, int]
"""A factor as rows of memory in the current batch: (buffer, offset of line 0 at k 0, line stride)."""


def _pack(dest: Buffer, count: Expr, upper: int, kc: int, kcur: Expr, width: int, first: Expr, lines: int,
          value: Factor, k0: Expr, runs: tuple[Runs, Expr] | None = None) -> list[Stmt]:
    """``dest[(panel * kc + kk) * width + lane] = value(first + panel * width + lane, k0 + kk)`` for
    the ``count`` panels of a block. The panels that lie wholly inside the operand's ``lines`` read
    their lines as they are, so that lines contiguous in memory load as vectors; the edge panel
    reads its lines past the last as the last (the micro-kernel ignores those lanes). With ``runs``
    (and the current batch's offset) the whole panels are copied run by run instead (``PanelRuns``)."""
    whole = call("min", count, call("div", idx(lines) - first, idx(width)))
    loops: list[Stmt] = []
    parts = [(whole, count, True)]  # the edge panel
    if runs is None:
        parts.insert(0, (idx(0), whole, False))
    else:
        loops.append(_copy_runs(dest, whole, upper, kc, kcur, width, first, *runs, k0))
    for start, stop, clamped in parts:
        panel, kk, lane = fresh("panel"), fresh("kk"), fresh("lane")
        line = first + panel * idx(width) + lane
        at = (panel * idx(kc) + kk) * idx(width) + lane
        v = value(call("min", line, idx(lines - 1)) if clamped else line, k0 + kk)
        inner: Stmt = For(lane, idx(0), idx(width), [Store(dest, (at,), v)])
        loops.append(For(panel, start, call("min", idx(upper), stop), [For(kk, idx(0), kcur, [inner])]))
    return loops


def _copy_runs(dest: Buffer, whole: Expr, upper: int, kc: int, kcur: Expr, width: int, first: Expr,
               runs: Runs, batch_offset: Expr, k0: Expr) -> For:
    """``_pack``'s whole panels, one ``PanelRuns`` each (``first`` is a multiple of ``width``)."""
    panel = fresh("panel")
    at = (call("div", first, idx(width)) + panel) * idx(runs.pack.runs * 3)
    args = (kcur, Ref(runs.src, batch_offset), Ref(runs.ks, k0), Ref(runs.table, at),
            Ref(dest, panel * idx(kc * width)))
    return For(panel, idx(0), call("min", idx(upper), whole), [Invoke(runs.pack, args, work=width * kc)])


def _transpose(dest: Buffer, count: Expr, upper: int, kc: int, kcur: Expr, width: int, first: Expr,
               lines: int, rows: Rows, k0: Expr) -> list[Stmt]:
    """What ``_pack`` stores, for a factor whose lines are rows of memory with k contiguous: one
    ``PanelTranspose`` per panel (the edge panel repeats its last row as ``_pack`` does)."""
    panel = fresh("panel")
    line = first + panel * idx(width)
    src, start, ld = rows
    args = (kcur, Ref(src, start + line * idx(ld) + k0), idx(ld), call("min", idx(width), idx(lines) - line),
            Ref(dest, panel * idx(kc * width)))
    return [For(panel, idx(0), call("min", idx(upper), count),
                [Invoke(PanelTranspose(width), args, work=width * kc)])]


def constant_factor(c: Contraction, side: str, known: Mapping[int, np.ndarray]) -> bool:
    """Whether factor ``side`` (``a`` or ``b``) reads only constants."""
    return c.reads(c.a_expr if side == "a" else c.b_expr) <= set(known)


def _per_batch(c: Contraction, side: str) -> bool:
    """Whether factor ``side`` differs between batches (it reads a batch axis)."""
    batch_vars = {id(c.index[d]) for d in c.batch_axes}
    return any(id(x) in batch_vars for x in walk(c.a_expr if side == "a" else c.b_expr))


def prepacked(c: Contraction, side: str, width: int, kc: int,
              known: Mapping[int, np.ndarray]) -> np.ndarray | None:
    """The whole constant factor ``side`` (``a``: panels of ``width`` rows, ``b``: of ``width``
    columns) packed at compile time, shaped (batches, packed size): per batch (one if the factor is
    the same in every batch) [k block of kc][panel][k][lane], rows/columns past the edge repeating
    the last one (each K block's panels are contiguous: the mc/nc loops stream them); None if it is
    not a ``constant_factor`` or not one ``evaluate`` computes."""
    if not constant_factor(c, side, known):
        return None
    lines = c.m if side == "a" else c.n
    panels = -(-lines // width)
    batches = c.batch if _per_batch(c, side) else 1
    bi, line, k = fresh("b"), fresh("line"), fresh("k")
    expr = c.a(bi, line, k) if side == "a" else c.b(bi, k, line)
    at = np.minimum(np.arange(panels * width), lines - 1)
    env = {id(bi): np.arange(batches)[:, None, None], id(line): at[None, :, None],
           id(k): np.arange(c.k)[None, None, :]}
    values = evaluate(expr, env, known)
    if values is None:
        return None
    grid = np.broadcast_to(np.asarray(values, np.float32), (batches, panels * width, c.k))

    def packed(g: np.ndarray) -> np.ndarray:
        return np.concatenate([g[:, at:at + kc].reshape(panels, width, -1).transpose(0, 2, 1).reshape(-1)
                               for at in range(0, c.k, kc)])
    return np.stack([packed(g) for g in grid])


def _affine(e: Expr) -> bool:
    """Whether ``e`` is a sum of index variables times constants."""
    if isinstance(e, (Const, Var)):
        return True
    if isinstance(e, Call) and e.fn in ("add", "sub"):
        return all(_affine(a) for a in e.args)
    if isinstance(e, Call) and e.fn == "mul":
        return all(_affine(a) for a in e.args) and any(not variables(a) for a in e.args)
    return False


def _offsets(c: Contraction, side: str, address: Expr, lines_at: np.ndarray) -> tuple[np.ndarray,
                                                                                      np.ndarray] | None:
    """``address`` (an expression of factor ``side``'s axes) in batch 0: at k 0 for each line of
    ``lines_at``, and at line 0 for each k (int64); None if ``evaluate`` cannot compute it."""
    line, k, zero = fresh("line"), fresh("k"), idx(0)
    env = {id(line): lines_at, id(k): np.arange(c.k)}
    line_offsets = evaluate(c.at(address, side, zero, line, zero), env, {})
    k_offsets = evaluate(c.at(address, side, zero, zero, k), env, {})
    if line_offsets is None or k_offsets is None:
        return None
    return (np.broadcast_to(line_offsets, lines_at.shape).astype(np.int64),
            np.broadcast_to(k_offsets, (c.k,)).astype(np.int64))


def in_rows(c: Contraction, side: str) -> Callable[[Expr], Rows] | None:
    """Factor ``side`` as rows of a float32 buffer, k contiguous within a row and the rows ``ld``
    apart (A of a MatMul, or B given transposed), as a function of the flat batch index; None if it
    is not one load at an index affine in the axes that addresses memory so."""
    load = c.a_expr if side == "a" else c.b_expr
    if not (isinstance(load, Load) and load.buffer.dtype == np.float32 and all(map(_affine, load.index))):
        return None
    src, lines = load.buffer, (c.m if side == "a" else c.n)
    address = offset(src, load.index)
    found = _offsets(c, side, address, np.arange(lines))
    if found is None:
        return None
    line_offsets, k_offsets = found
    base = int(k_offsets[0])
    ld = int(line_offsets[1] - base) if lines > 1 else c.k
    if not (np.array_equal(k_offsets - base, np.arange(c.k))
            and np.array_equal(line_offsets - base, ld * np.arange(lines))):
        return None
    bi, zero = fresh("b"), idx(0)
    start = c.at(address, side, bi, zero, zero)
    return lambda b: (src, substitute(start, {id(bi): b}), ld)


Gather = Callable[[Expr, Expr, Expr], Expr]
"""A factor's value at (flat batch index, line, k)."""


@dataclass(frozen=True)
class Runs:
    """The whole panels of a gathered factor as runs of consecutive elements (``PanelRuns``)."""

    pack: PanelRuns
    table: Buffer
    """Per whole panel (from the factor's first line), ``pack.runs`` triples (start, end, base)."""
    ks: Buffer
    """The factor's k table (offsets from a line's element at k = 0)."""
    src: Buffer
    batch_offset: Callable[[Expr], Expr]
    """How far batch ``bi``'s elements lie from batch 0's in ``src`` (flat elements)."""


MIN_RUN = 4
"""Panels whose runs are shorter than this on average (lines of a map narrower than about 4) gather."""


def _runs(line_offsets: np.ndarray, lines: int, width: int) -> np.ndarray | None:
    """Per whole panel of ``width`` lines, its runs of consecutive offsets as (start, end, base)
    (lane ``start <= lane < end`` at offset ``base + lane``), padded with empty runs to the most any
    panel has; None without a whole panel or with a panel of more than ``width // MIN_RUN`` runs."""
    whole = lines // width
    if whole == 0:
        return None
    offsets = line_offsets[:whole * width].reshape(whole, width)
    breaks = np.diff(offsets, axis=1) != 1
    most = 1 + int(breaks.sum(axis=1).max())
    if most > width // MIN_RUN:
        return None
    table = np.zeros((whole, most, 3), np.int64)
    for p, row in enumerate(breaks):
        starts = [0, *(np.flatnonzero(row) + 1)]
        for r, (start, end) in enumerate(zip(starts, [*starts[1:], width])):
            table[p, r] = (start, end, offsets[p, start] - start)
    return table


def gathered(c: Contraction, side: str, width: int) -> tuple[Gather, list[tuple[Buffer, np.ndarray]],
                                                            Runs | None] | None:
    """Factor ``side`` read through offset tables, if its lines span several axes (a Conv's output
    pixels: the line's coordinates would take a division per element) and it is one load (or a cast
    of one) at an index affine in the axes: the element it reads is then line_table[line] +
    k_table[k] + a batch offset (the address is linear, so it separates), with both tables computed
    at compile time, so packing does no index arithmetic. Where consecutive lines are consecutive in
    memory (a 1x1 Conv's pixels) the line table is the line itself plus a start, and is left out:
    packing a whole panel then loads vectors instead of gathering. Where they are runs of consecutive
    elements (a stride-1 Conv's output rows), the whole panels of B (float32, not cast) are packed
    run by run (``Runs``)."""
    factor = c.a_expr if side == "a" else c.b_expr
    load = factor.args[0] if isinstance(factor, Call) and factor.fn == "cast" else factor
    axes = c.m_axes if side == "a" else c.n_axes
    if sum(c.shape[d] > 1 for d in axes) < 2:  # one axis: its index is the line itself, no division
        return None
    if not isinstance(load, Load) or not all(_affine(i) for i in load.index):
        return None
    src = load.buffer
    address = offset(src, load.index)
    lines = c.m if side == "a" else c.n
    found = _offsets(c, side, address, np.minimum(np.arange(-(-lines // width) * width), lines - 1))
    if found is None:
        return None
    line_offsets, k_offsets = found
    base, count = int(k_offsets[0]), line_offsets.size  # base: the element at line 0, k 0
    bi, zero = fresh("b"), idx(0)
    start = int(line_offsets[0])
    contiguous = bool(np.array_equal(line_offsets[:lines] - start, np.arange(lines)))
    tables = [] if contiguous else [(Buffer(f"{side}lines", INDEX, (count,)), line_offsets)]
    ks = Buffer(f"{side}ks", INDEX, (c.k,))
    tables.append((ks, k_offsets - base))
    batch_offset = c.at(address, side, bi, zero, zero) - idx(base)

    def value(b: Expr, at_line: Expr, at_k: Expr) -> Expr:
        at = at_line + idx(start) if contiguous else tables[0][0][at_line]
        offset = at + ks[at_k] + substitute(batch_offset, {id(bi): b})
        read = Load(src, flat(src, offset))
        return read if factor is load else Call("cast", (read,), factor.dtype)
    runs = None
    table = None if contiguous or side != "b" or factor is not load or src.dtype != np.float32 \
        else _runs(line_offsets, lines, width)
    if table is not None:
        tables.append((Buffer(f"{side}runs", INDEX, (table.size,)), table.reshape(-1)))
        runs = Runs(PanelRuns(width, table.shape[1]), tables[-1][0], ks, src,
                    lambda b: substitute(batch_offset, {id(bi): b}))
    return value, [(buf, np.ascontiguousarray(v, np.int64)) for buf, v in tables], runs


@dataclass
class Sources:
    """How each factor (``a``, ``b``) is packed, the first that applies: ``prepacked`` at compile time
    (side -> (packed constant, elements per batch or 0)), transposed from ``rows`` of memory,
    ``gather``ed through offset tables (their whole panels copied as ``runs`` where they are runs),
    or (none of these) by a loop over its expression; and the ``constants`` that takes."""

    prepacked: dict[str, tuple[Buffer, int]] = field(default_factory=dict)
    rows: dict[str, Callable[[Expr], Rows]] = field(default_factory=dict)
    gather: dict[str, Gather] = field(default_factory=dict)
    runs: dict[str, Runs] = field(default_factory=dict)
    constants: list[tuple[Buffer, np.ndarray]] = field(default_factory=list)


def _sources(c: Contraction, mr: int, nr: int, kc: int, known: Mapping[int, np.ndarray]) -> Sources:
    found = Sources()
    for side, width in (("a", mr), ("b", nr)):
        value = prepacked(c, side, width, kc, known)
        if value is not None:
            buf = Buffer(f"{side}packed", np.dtype(np.float32), (value.size,))
            found.prepacked[side] = (buf, value.shape[1] if value.shape[0] > 1 else 0)
            found.constants.append((buf, value.reshape(-1)))
            continue
        rows = in_rows(c, side)
        if rows is not None:
            found.rows[side] = rows
            continue
        tables = gathered(c, side, width)
        if tables is not None:
            found.gather[side] = tables[0]
            found.constants += tables[1]
            if tables[2] is not None:
                found.runs[side] = tables[2]
    return found


def lower_gemm(c: Contraction, s: GemmSchedule, known: Mapping[int, np.ndarray],
               ) -> tuple[list[Stmt], list[tuple[Buffer, np.ndarray]], list[str]]:
    """Loop IR computing ``c.out`` with schedule ``s``, the constants it packed (buffer, value) and
    the names of the template's parts it used (``template_parts``). ``known`` holds the values of
    constant buffers (by Buffer id)."""
    uk = s.ukernel
    mr, nr = uk.mr, uk.nr
    m, n, k, batch = c.m, c.n, c.k, c.batch
    mt = math.ceil(math.ceil(m / s.split_m) / mr) * mr  # rows per task, a multiple of mr
    nt = math.ceil(math.ceil(n / s.split_n) / nr) * nr
    mc, nc, kc = min(s.mc, mt), min(s.nc, nt), min(s.kc, k)
    src = _sources(c, mr, nr, kc, known)
    pre, as_rows, gather, constants = src.prepacked, src.rows, src.gather, src.constants
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

    def read(side: str) -> Factor:
        """Factor ``side`` of batch ``bi`` at (line, k): through its offset tables where it has them."""
        if side in gather:
            return lambda line, kk: gather[side](bi, line, kk)
        return (lambda line, kk: c.a(bi, line, kk)) if side == "a" else (lambda line, kk: c.b(bi, kk, line))

    def pack(side: str, count: Expr, upper: int, kcur: Expr, first: Expr, k0: Expr) -> list[Stmt]:
        """Pack ``count`` panels of factor ``side`` from line ``first`` and k ``k0``."""
        dest, width, lines = (ap, mr, m) if side == "a" else (bp, nr, n)
        if side in as_rows:
            return _transpose(dest, count, upper, kc, kcur, width, first, lines, as_rows[side](bi), k0)
        runs = (src.runs[side], src.runs[side].batch_offset(bi)) if side in src.runs else None
        return _pack(dest, count, upper, kc, kcur, width, first, lines, read(side), k0, runs)

    def block(pc: Expr, kcur: Expr, accumulate: Expr, last: bool) -> list[Stmt]:
        """One K block of the jc block: pack B, then per mc block pack A and run the tiles."""
        a_ref = (Ref(pre["a"][0], bi * idx(pre["a"][1]) + pc * idx(-(-m // mr) * mr) + i * kcur) if "a" in pre
                 else Ref(ap, p * idx(kc * mr)))
        b_ref = (Ref(pre["b"][0], bi * idx(pre["b"][1]) + pc * idx(-(-n // nr) * nr) + j * kcur) if "b" in pre
                 else Ref(bp, q * idx(kc * nr)))
        c_ref = Ref(c.out, at + i * idx(n) + j)
        tile: list[Stmt] = [Invoke(uk, (kcur, a_ref, b_ref, c_ref, idx(n), rows, cols, accumulate),
                                   work=mr * nr * kc)]
        if last and c.value is not c.reduce:
            rr, cc = fresh("rr"), fresh("cc")
            where = flat(c.out, at + (i + rr) * idx(n) + j + cc)
            value = c.epilogue(bi, i + rr, j + cc, Load(c.out, where))
            tile.append(_loop(rr, rows, mr, [_loop(cc, cols, nr, [Store(c.out, where, value)])]))
        inner: list[Stmt] = [_loop(p, np_, mc // mr, [_loop(q, nq, nc // nr, tile)])]
        if "a" not in pre:
            inner[:0] = pack("a", np_, mc // mr, kcur, ic, pc)
        body: list[Stmt] = [_loop(ib, _ceil_div(m1 - m0, mc), -(-mt // mc), inner)]
        if "b" not in pre:
            body[:0] = pack("b", nq, nc // nr, kcur, jc, pc)
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
    return [loop], constants, template_parts(s, src, epilogue=c.value is not c.reduce)


def template_parts(s: GemmSchedule, src: Sources, *, epilogue: bool) -> list[str]:
    """What a tiled kernel is made of, by name: ``gemm-tiled``, its micro-kernel (``ukernel-<name>``),
    ``gemm-split`` (M x N in several parallel tasks), ``gemm-epilogue`` (an epilogue run on each
    tile) and how each factor is packed (``pack-<a|b>-<prepacked|rows|gather|runs|loop>``; gather and
    runs are a Conv's im2col)."""
    parts = ["gemm-tiled", f"ukernel-{s.ukernel.name}"]
    if s.split_m * s.split_n > 1:
        parts.append("gemm-split")
    if epilogue:
        parts.append("gemm-epilogue")
    for side in ("a", "b"):
        kinds = [kind for kind, found in (("prepacked", src.prepacked), ("rows", src.rows),
                                          ("runs", src.runs), ("gather", src.gather)) if side in found]
        parts.append(f"pack-{side}-{kinds[0] if kinds else 'loop'}")
    return parts
