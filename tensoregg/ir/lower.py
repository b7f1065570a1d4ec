"""Default lowering: a node's compute definition -> a loop IR kernel.

Each output (and each stage first) becomes a loop nest over its axes that stores the defining
expression. A reduction becomes an accumulator: in the plain form, one scalar per output element
(initialised, combined over the reduction loops in order, then read by the rest of the expression).
The ``row`` form, used when the output's last axis is longer than 1, keeps a row of accumulators
along that axis (in chunks) and runs the reduction loops outside the row loop, so the innermost loop
walks the output's contiguous axis (i-k-j for MatMul) and vectorizes; every element still combines
its terms in the same order, so both forms compute identical values.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tensoregg.errors import UnsupportedOperator
from tensoregg.ir.compute import (
    INDEX,
    Buffer,
    Call,
    ComputeCtx,
    Expr,
    Load,
    Reduce,
    Var,
    call,
    compute_of,
    const,
    fresh,
    substitute,
    walk,
)
from tensoregg.ir.contraction import Contraction, find_contraction
from tensoregg.ir.graph import Node, infer_node
from tensoregg.ir.loops import For, Invoke, Kernel, Local, Stmt, Store, flat, offset, statements
from tensoregg.ir.registry import OpDef
from tensoregg.ir.schedules import GemmProblem, GemmSchedule, Schedule, Untiled
from tensoregg.ir.tiling import constant_factor, lower_gemm
from tensoregg.ir.types import TensorType

ROW_CHUNK = 64
"""Accumulators per row chunk in the row form (a 256-byte fp32 row: stays in L1)."""


@dataclass
class Inlined:
    """A node's single output as an expression, for a consumer to compute in place of loading it:
    its value at ``index`` (the output's index variables), loading ``inputs`` (graph value -> the
    buffer its loads read)."""

    index: tuple[Var, ...]
    value: Expr
    inputs: dict[str, Buffer]


@dataclass
class LoweredNode:
    """A node's kernel and what its params are: ``kernel.params`` is ``inputs`` (graph values, one
    param per distinct value the kernel reads), then ``outputs`` (graph values), then ``scratch``
    (stage buffers), then ``constants`` (buffers the compute definition derived from constant
    inputs, with their values)."""

    kernel: Kernel
    inputs: list[str]
    outputs: list[str]
    scratch: list[Buffer]
    constants: list[tuple[Buffer, np.ndarray]] = field(default_factory=list)
    inline: Inlined | None = None
    """The node as an expression, when it is element-wise in the wide sense (one output, no
    reduction, no stages or constants): a consumer may compute it instead of loading its output."""
    fused: list[str] = field(default_factory=list)
    """The inputs this kernel computes from their producers' ``inline`` instead of loading."""
    templates: list[str] = field(default_factory=list)
    """The names of the kernel templates the kernel was built from, as the lowering chose them:
    ``gemm-untiled`` or a tiled GEMM's parts (``tensoregg.ir.tiling.template_parts``, or a target's
    own ``Template`` class name) for a contraction, ``fused-producers`` when it computes producers
    in place; empty for a plain loop nest. What a fuzzer counts to know which templates it reached."""


def lower_node(opdef: OpDef, node: Node, types: Mapping[str, TensorType],
               values: Mapping[str, np.ndarray], *, target: str = "llvm", name: str = "k",
               row: bool = True, grid: bool = False, choose: Chooser | None = None,
               producers: Mapping[str, Inlined] | None = None) -> LoweredNode:
    """Lower ``node`` (its input types in ``types``, constant inputs in ``values``). An output that
    is a contraction (``tensoregg.ir.contraction``) is scheduled by ``choose`` when given: tiled as
    the schedule it returns says, or by the default lowering for ``Untiled``. If the node itself is
    element-wise in the wide sense (see ``LoweredNode.inline``), its inputs found in ``producers``
    are computed from their producers' expressions rather than loaded (the kernel fuses them).
    ``row`` and ``grid`` choose the loop form of what is not tiled (see ``assign``).

    Unused outputs (named ``""``) are computed too, into buffers the caller provides as scratch.
    """
    fn = compute_of(opdef)
    if fn is None:
        raise UnsupportedOperator(node.op, node=node.label, target=target, detail="no compute definition")
    distinct = list(dict.fromkeys(n for n in node.inputs if n))
    by_value = {n: Buffer(f"in{k}", types[n].dtype, types[n].shape) for k, n in enumerate(distinct)}
    inputs: list[Buffer | None] = [by_value[n] if n else None for n in node.inputs]
    out_types = infer_node(opdef, node, types, values)[:len(node.outputs)]
    outs = [Buffer(f"out{k}", t.dtype, t.shape) for k, t in enumerate(out_types)]
    ctx = ComputeCtx(node.op, node.label, inputs, out_types, node.attrs,
                     [values.get(n) if n else None for n in node.inputs])
    exprs = fn(ctx)
    if len(exprs) != len(outs):
        raise ValueError(f"{node.op}: compute definition gave {len(exprs)} outputs, node has {len(outs)}")
    pure = not ctx.stages and not ctx.constants and len(exprs) == 1 and not _has_reduce(exprs[0])
    fused = [n for n in distinct if pure and producers and n in producers
             and _reads(exprs[0], by_value[n]) == 1 and _size(producers[n].value) <= INLINE_MAX_NODES]
    for n in fused:
        assert producers is not None
        exprs = [_inline(exprs[0], by_value.pop(n), producers[n], by_value)]
    distinct = [n for n in distinct if n not in fused] + [n for n in by_value if n not in distinct]
    body: list[Stmt] = []
    for stage in ctx.stages:
        body += assign(stage.buffer, stage.index, stage.value, row=row, grid=grid)
    known = {id(by_value[n]): np.asarray(values[n]) for n in distinct if values.get(n) is not None}
    known.update((id(b), v) for b, v in ctx.constants)
    constants = list(ctx.constants)
    templates = ["fused-producers"] if fused else []
    for k, (buf, e) in enumerate(zip(outs, exprs)):
        if e.dtype != buf.dtype:
            raise TypeError(f"{node.op} output {k}: compute gives {e.dtype}, type says {buf.dtype}")
        tiled = None if choose is None else scheduled(buf, ctx.index(k), e, choose, known)
        if tiled is None or not tiled[0]:
            body += assign(buf, ctx.index(k), e, row=row, grid=grid)
        if tiled is not None:
            body += tiled[0]
            constants += tiled[1]
            templates += tiled[2]
    scratch = [s.buffer for s in ctx.stages]
    read = _loaded(body)
    kept = [n for n in distinct if id(by_value[n]) in read]  # e.g. weights the definition re-laid out
    constants = [(b, v) for b, v in constants if id(b) in read]
    params = [*(by_value[n] for n in kept), *outs, *scratch, *(b for b, _ in constants)]
    kernel = Kernel(name, params, body, [*outs, *scratch])
    inline = Inlined(ctx.index(0), exprs[0], {n: by_value[n] for n in distinct}) if pure else None
    return LoweredNode(kernel, kept, list(node.outputs), scratch, constants, inline, fused, templates)


INLINE_MAX_NODES = 64
"""The largest producer expression a consumer computes in place of loading it (fusing a chain of
producers that each read their input several times would grow the expression exponentially)."""


def _reads(e: Expr, buf: Buffer) -> int:
    """How many distinct loads of ``buf`` ``e`` makes (an element-wise consumer: one)."""
    return sum(1 for x in walk(e) if isinstance(x, Load) and x.buffer is buf)


def _size(e: Expr) -> int:
    return sum(1 for _ in walk(e))


def _inline(e: Expr, buf: Buffer, producer: Inlined, by_value: dict[str, Buffer]) -> Expr:
    """``e`` with each load of ``buf`` replaced by ``producer``'s value at that index, the producer's
    inputs read through ``by_value`` (the consumer's buffers, extended with those it lacks)."""
    ours: dict[int, Buffer] = {}
    for n, theirs in producer.inputs.items():
        if n not in by_value:  # a new param of the consumer's kernel, named apart from its others
            taken = {b.name for b in by_value.values()}
            by_value[n] = Buffer(next(f"in{k}" for k in itertools.count() if f"in{k}" not in taken),
                                 theirs.dtype, theirs.shape)
        ours[id(theirs)] = by_value[n]
    value = _map_loads(producer.value, lambda x: Load(ours[id(x.buffer)], x.index)
                       if id(x.buffer) in ours else x)
    return _map_loads(e, lambda x: substitute(value, dict(zip(map(id, producer.index), x.index)))
                      if x.buffer is buf else x)


def _map_loads(e: Expr, fn: Callable[[Load], Expr]) -> Expr:
    """``e`` with every load (inner ones first: indices may load too) replaced by ``fn`` of it."""
    memo: dict[int, Expr] = {}

    def go(x: Expr) -> Expr:
        if id(x) not in memo:
            if isinstance(x, Load):
                memo[id(x)] = fn(Load(x.buffer, tuple(go(i) for i in x.index)))
            elif isinstance(x, Call):
                memo[id(x)] = Call(x.fn, tuple(go(a) for a in x.args), x.dtype)
            elif isinstance(x, Reduce):
                memo[id(x)] = Reduce(x.combiner, x.axes, x.extents, go(x.body), go(x.init))
            else:
                memo[id(x)] = x
        return memo[id(x)]
    return go(e)


Chooser = Callable[[GemmProblem], Schedule]
"""Picks the schedule of a contraction's GEMM problem."""


def scheduled(buf: Buffer, index: Sequence[Var], e: Expr, choose: Chooser, known: Mapping[int, np.ndarray],
              ) -> tuple[list[Stmt], list[tuple[Buffer, np.ndarray]], list[str]] | None:
    """``e`` stored into ``buf`` as the schedule ``choose`` picks, if it is a contraction: the loop IR
    and the constants it packed (no loop IR if the schedule is untiled: the default lowering's), and
    the names of the templates used (``LoweredNode.templates``); None if it is no contraction."""
    c = find_contraction(buf, index, e)
    if c is None:
        return None
    schedule = choose(_problem(c, known))
    if isinstance(schedule, Untiled):
        return [], [], ["gemm-untiled"]
    if isinstance(schedule, GemmSchedule):
        return lower_gemm(c, schedule, known)
    return (*schedule.lower(c, known), [type(schedule).__name__])


def _problem(c: Contraction, known: Mapping[int, np.ndarray]) -> GemmProblem:
    return c.problem(constant_factor(c, "a", known), constant_factor(c, "b", known))


def contraction_problem(opdef: OpDef, node: Node, types: Mapping[str, TensorType],
                        constant: Collection[str]) -> GemmProblem | None:
    """The GEMM problem a schedule of ``node`` tiles (its first output, as ``lower_node`` finds it),
    or None where that output is no contraction (or the op has no compute definition). ``types``
    holds the node's input and output types; the inputs in ``constant`` are compile-time constants.
    Their values are not read (the definition runs without them: a problem's shape and which
    factors are constant do not depend on them)."""
    fn = compute_of(opdef)
    if fn is None or len(node.outputs) != 1:
        return None
    distinct = list(dict.fromkeys(n for n in node.inputs if n))
    by_value = {n: Buffer(f"in{k}", types[n].dtype, types[n].shape) for k, n in enumerate(distinct)}
    out_type = types[node.outputs[0]]
    ctx = ComputeCtx(node.op, node.label, [by_value[n] if n else None for n in node.inputs], [out_type],
                     node.attrs, [None] * len(node.inputs))
    expr = fn(ctx)[0]
    c = find_contraction(Buffer("out0", out_type.dtype, out_type.shape), ctx.index(0), expr)
    if c is None:
        return None
    known = {id(by_value[n]): np.empty(0) for n in distinct if n in constant}
    known.update((id(b), v) for b, v in ctx.constants)
    return _problem(c, known)


def _loaded(body: list[Stmt]) -> set[int]:
    """The ids of the buffers that ``body`` loads from (or passes to an intrinsic)."""
    found: set[int] = set()
    for s in statements(body):
        if isinstance(s, Invoke):
            found.update(id(r.buffer) for r in s.refs)
        exprs = [*s.index, s.value] if isinstance(s, Store) else [s.start, s.stop] if isinstance(s, For) \
            else []
        found.update(id(e.buffer) for x in exprs for e in walk(x) if isinstance(e, Load))
    return found


def _top_reduces(e: Expr) -> list[Reduce]:
    """The Reduce nodes of ``e`` not inside another Reduce, each once, in a fixed order."""
    found: list[Reduce] = []
    seen: set[int] = set()

    def go(x: Expr) -> None:
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, Reduce):
            found.append(x)
            return
        for c in (x.index if isinstance(x, Load) else getattr(x, "args", ())):
            go(c)
    go(e)
    return found


def _has_reduce(e: Expr) -> bool:
    return any(isinstance(x, Reduce) for x in walk(e))


def _loops(axes: Sequence[Var], extents: Sequence[int], body: list[Stmt]) -> list[Stmt]:
    for v, n in reversed(list(zip(axes, extents))):
        body = [For(v, const(0, INDEX), const(n, INDEX), body)]
    return body


def _parallel(axes: Sequence[Var], extents: Sequence[int], body: list[Stmt]) -> list[Stmt]:
    """One parallel loop over the fused ``axes`` (none: ``body`` as it is)."""
    if not axes:
        return body
    total = int(np.prod(extents, dtype=np.int64))
    return [For(fresh("p"), const(0, INDEX), const(total, INDEX), body, "parallel",
                tuple((v, int(n)) for v, n in zip(axes, extents)))]


def scalar_value(e: Expr, tail: Callable[[Expr], list[Stmt]]) -> list[Stmt]:
    """Statements computing ``e`` with one scalar accumulator per reduction, then ``tail(value)``."""
    reduces = _top_reduces(e)
    if not reduces:
        return tail(e)
    accs = [Buffer(f"acc{fresh('').name}", r.dtype, (1,)) for r in reduces]
    zero = (const(0, INDEX),)
    stmts: list[Stmt] = []
    for r, a in zip(reduces, accs):
        stmts += scalar_value(r.init, _store_to(a, zero))
        stmts += _loops(r.axes, r.extents, scalar_value(r.body, _combine_into(r, a, zero)))
    stmts += tail(substitute(e, {id(r): Load(a, zero) for r, a in zip(reduces, accs)}))
    for a in reversed(accs):
        stmts = [Local(a, stmts)]
    return stmts


def _store_to(buf: Buffer, index: tuple[Expr, ...]) -> Callable[[Expr], list[Stmt]]:
    return lambda value: [Store(buf, index, value)]


def _combine_into(r: Reduce, acc: Buffer, index: tuple[Expr, ...]) -> Callable[[Expr], list[Stmt]]:
    return lambda term: [Store(acc, index, call(r.combiner, Load(acc, index), term), contract=True)]


def assign(buf: Buffer, index: Sequence[Var], e: Expr, *, row: bool = True, grid: bool = False) -> list[Stmt]:
    """Loops storing ``e`` (a function of ``index``) into every element of ``buf``: for a CPU, parallel
    outer axes and a serial last one (reductions as a row of accumulators with ``row``); with
    ``grid``, one parallel loop over every element, each computing its own (a GPU thread each)."""
    shape = buf.shape
    if 0 in shape:
        return []
    if grid:
        return _parallel(index, shape, scalar_value(e, _store_to(buf, tuple(index))))
    reduces = _top_reduces(e)
    nested = any(_has_reduce(r.body) or _has_reduce(r.init) for r in reduces)
    if not row or not reduces or nested or not shape or shape[-1] == 1:
        merged = None if reduces else _coalesced(buf, index, e)
        if merged is not None:
            return merged
        inner = scalar_value(e, _store_to(buf, tuple(index)))
        return _parallel(index[:-1], shape[:-1], _loops(index[-1:], shape[-1:], inner))
    return _row(buf, index, e, reduces)


MIN_ROW = 64
"""An element-wise kernel whose rows are shorter merges its trailing axes into longer rows."""


def _coalesced(buf: Buffer, index: Sequence[Var], e: Expr) -> list[Stmt] | None:
    """Loops storing the element-wise ``e`` into ``buf`` with its last k axes as one (rows of at least
    ``MIN_ROW`` elements where the shape allows, at least one outer axis left to run in parallel), if
    ``e`` reads them only as the last k indices of buffers whose last k dims are the output's: each
    such load then reads element t of a contiguous row, as the store writes it. Short rows (a 7x7 or
    14x14 map) otherwise run mostly in the vectorizer's scalar remainder. None where no merge helps."""
    shape, rank = buf.shape, len(buf.shape)
    k = 1
    while k + 1 < rank and np.prod(shape[-k:]) < MIN_ROW and np.prod(shape[:-(k + 1)]) > 1:
        k += 1
    for width in range(k, 1, -1):
        inner, outer = index[-width:], index[:-width]
        t = fresh("t")
        at = flat(buf, offset(buf, outer) + t)
        rebuilt = _flat_rows(e, inner, shape[-width:], t, (buf.shape, outer, at))
        if rebuilt is None:
            continue
        row = int(np.prod(shape[-width:]))
        store = Store(buf, at, rebuilt)
        return _parallel(outer, shape[:-width], [For(t, const(0, INDEX), const(row, INDEX), [store])])
    return None


def _flat_rows(e: Expr, inner: Sequence[Var], extents: Sequence[int], t: Var,
               stored: tuple[tuple[int, ...], Sequence[Var], tuple[Expr, ...]]) -> Expr | None:
    """``e`` with each load whose last indices are exactly ``inner`` (over a buffer ending in
    ``extents``) reading element ``t`` of that row; None if ``inner`` occurs anywhere else. A load at
    the stored element (``stored``: the output's shape, leading index and flat index) reuses the
    store's index, so that in-place detection sees the same index."""
    width, ids = len(inner), {id(v) for v in inner}
    shape, outer, at = stored

    def row(x: Load) -> Expr:
        lead = x.index[:-width]
        if (len(x.index) < width or tuple(x.buffer.shape[-width:]) != tuple(extents)
                or not all(a is b for a, b in zip(x.index[-width:], inner))):
            return x
        if x.buffer.shape == shape and all(a is b for a, b in zip(lead, outer)):
            return Load(x.buffer, at)
        return Load(x.buffer, flat(x.buffer, offset(x.buffer, lead) + t))
    rebuilt = _map_loads(e, row)
    if any(isinstance(x, Reduce) or (isinstance(x, Var) and id(x) in ids) for x in walk(rebuilt)):
        return None
    return rebuilt


def _row(buf: Buffer, index: Sequence[Var], e: Expr, reduces: list[Reduce]) -> list[Stmt]:
    """The row form over the last axis: chunks of ROW_CHUNK accumulators per reduction, the
    chunks and the other output axes one parallel loop."""
    n = buf.shape[-1]
    chunk = min(n, ROW_CHUNK)
    jo, jj = fresh("jo"), fresh("jj")
    j = jo * const(chunk, INDEX) + jj
    stop: Expr = const(chunk, INDEX)
    if n % chunk:
        stop = call("min", const(chunk, INDEX), const(n, INDEX) - jo * const(chunk, INDEX))
    at_j = {id(index[-1]): j}
    accs = [Buffer(f"acc{fresh('').name}", r.dtype, (chunk,)) for r in reduces]
    slot: tuple[Expr, ...] = (jj,)
    stmts: list[Stmt] = []
    for r, a in zip(reduces, accs):
        stmts.append(For(jj, const(0, INDEX), stop, _store_to(a, slot)(substitute(r.init, at_j))))
        update = _combine_into(r, a, slot)(substitute(r.body, at_j))
        stmts += _loops(r.axes, r.extents, [For(jj, const(0, INDEX), stop, update)])
    value = substitute(substitute(e, {id(r): Load(a, slot) for r, a in zip(reduces, accs)}), at_j)
    stmts.append(For(jj, const(0, INDEX), stop, [Store(buf, (*index[:-1], j), value)]))
    for a in reversed(accs):
        stmts = [Local(a, stmts)]
    return _parallel((*index[:-1], jo), (*buf.shape[:-1], -(-n // chunk)), stmts)
