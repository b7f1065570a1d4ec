"""One kernel of a loop program, compiled to Python closures over numpy and run on flat buffers.

Loops the analysis allows (``analysis.plan_kernel``) run vectorized (``loops``): the body's
statements run once for all iterations, a store writes every lane at once, a local gets a row per
lane. The other loops run in order in Python. Every load and store is checked against its buffer
(``access``); a store that the analysis cannot prove writes distinct elements from distinct lanes is
checked at run time. Intrinsics run one lane at a time, in the loops' order; shared sub-expressions
of a statement are computed once, values of lane variables only once per lane epoch. GPU kernels
(block and thread loops, shared memory, barriers, warp intrinsics) run as ``gpu`` says, their
asynchronous copies as ``async_copies`` does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tensoregg.errors import CompileError
from tensoregg.ir.compute import Buffer, Call, Const, Expr, Load, Reduce, Var, walk
from tensoregg.ir.compute.expr import children
from tensoregg.ir.intrinsics import (
    AsyncCommit,
    AsyncCopy,
    AsyncWait,
    LoadMatrix,
    VectorCopy,
    WarpMMA,
    WarpShuffle,
)
from tensoregg.ir.loops import Barrier, For, Invoke, Kernel, Local, Ref, Stmt, Store
from tensoregg.ir.memory_plan import POISON
from tensoregg.targets.interp import gpu
from tensoregg.targets.interp.access import Access, Scope
from tensoregg.targets.interp.analysis import free_vars, has_load, plan_kernel
from tensoregg.targets.interp.async_copies import async_copy, async_group
from tensoregg.targets.interp.frame import Exec, Fn, Frame, cached, memoized
from tensoregg.targets.interp.intrinsics import Span, check_signature, execute
from tensoregg.targets.interp.loops import (
    bind_lanes,
    row_index,
    serial_loop,
    split_loop,
    trip_loop,
    vector_loop,
)
from tensoregg.targets.interp.numerics import call_function
from tensoregg.targets.interp.vector_copies import vector_copy

GPU_INTRINSICS: dict[type, Callable[[Invoke, Scope, Sequence[Fn], str], Exec]] = {
    WarpMMA: gpu.warp_mma, WarpShuffle: gpu.warp_shuffle, LoadMatrix: gpu.load_matrix,
    VectorCopy: vector_copy, AsyncCopy: async_copy}
"""The GPU intrinsics taking addresses and values, by type: what runs each (its statement, scope, the
compiled values of its arguments, the kernel's name)."""


class KernelExecutor:
    """``kernel`` compiled for the interpreter. ``where`` names it in errors; ``memory`` maps a
    param's id to what identifies its memory (params sharing bytes share it); ``readonly`` holds the
    ids of params it must not write (graph inputs, constants)."""

    def __init__(self, kernel: Kernel, where: str, memory: Mapping[int, object], readonly: set[int]) -> None:
        self.kernel, self.where, self.readonly = kernel, where, readonly
        self.plan = plan_kernel(kernel, memory)
        self.slots: dict[object, int] = {}
        self.levels: list[int] = []
        """The number of lane axes inside each vectorized loop (their most is the frame's rank)."""
        scope = Scope({}, 0, {}, {id(b) for b in kernel.params})
        self.body = self.block(kernel.body, scope)
        self.rank = max(self.levels, default=0)

    def run(self, views: Sequence[np.ndarray]) -> None:
        """Run on the params' memory (flat arrays of their dtypes, in ``kernel.params`` order)."""
        frame = Frame({id(b): v for b, v in zip(self.kernel.params, views)}, self.rank)
        with np.errstate(all="ignore"):
            self.body(frame)

    def slot(self, key: object) -> int:
        """A cache slot shared by computations with the same ``key``."""
        return self.slots.setdefault(key, len(self.slots))

    # ---- statements -------------------------------------------------------------------------------

    def block(self, body: Sequence[Stmt], scope: Scope) -> Exec:
        steps = [self.statement(s, scope) for s in body]
        if len(steps) == 1:
            return steps[0]

        def run(f: Frame) -> None:
            for step in steps:
                step(f)
        return run

    def statement(self, s: Stmt, scope: Scope) -> Exec:
        gpu.check_statement(s, scope, self.where)
        if isinstance(s, Barrier):
            return gpu.barrier(scope, self.where)
        if isinstance(s, For):
            return self.loop(s, scope)
        if isinstance(s, Store):
            return self.store(s, scope)
        if isinstance(s, Local):
            return self.local(s, scope)
        if isinstance(s, Invoke):
            return self.invoke(s, scope)
        raise CompileError(f"{self.where}: unknown statement {s!r}")

    def loop(self, s: For, scope: Scope) -> Exec:
        vectorized = id(s) in self.plan.vectorized
        own = not vectorized and gpu.varying(s, scope)  # a GPU thread's own loop
        kind = "lane" if vectorized else "varying" if own else "serial"
        start, stop = self.exprs([s.start, s.stop], scope)
        extents = [n for _, n in s.unpack]
        split = (vectorized and bool(s.unpack) and _is_const(s.start, 0)
                 and _is_const(s.stop, math.prod(extents)))  # each part along an axis of its own
        axes = len(extents) if split else int(vectorized)
        inner = scope.inside({id(v): kind for v in [s.var, *(u for u, _ in s.unpack)]}, axes,
                             gpu.loop_scope(s, scope, axes, self.where))
        self.levels.append(inner.level)
        body = self.block(s.body, inner)
        if s.kind == "block":
            body = gpu.launch(s, body)
        slot = self.slot(("loop", id(s)))
        if split:
            return split_loop(body, id(s.var), [id(u) for u, _ in s.unpack], extents, scope.level, slot)
        parts = [(id(u), n, u is s.unpack[0][0]) for u, n in reversed(s.unpack)]
        if vectorized:
            return vector_loop(start, stop, body, id(s.var), parts, scope.level, slot)
        if own:
            return trip_loop(start, stop, body, id(s.var), parts)
        return serial_loop(start, stop, body, id(s.var), parts)

    def store(self, s: Store, scope: Scope) -> Exec:
        buf, where = s.buffer, self.where
        self.check_buffer(buf, scope)
        if id(buf) in self.readonly:
            raise CompileError(f"{where}: stores into {buf.name}, a graph input or constant")
        if s.value.dtype != buf.dtype:
            raise CompileError(f"{where}: stores a {s.value.dtype} value into {buf.name} of {buf.dtype}")
        shared = _shared([*s.index, s.value])
        access = self.access(buf, s.index, scope, shared, "store")
        value = self.expr(s.value, scope, shared)
        bid, proven = id(buf), id(s) in self.plan.proven
        watch = gpu.watch_store(scope, access, bid, buf.name, buf.size, where)

        def run(f: Frame) -> None:
            f.memo.clear()
            access.write(f, f.views[bid], value(f), proven)

        def watched(f: Frame) -> None:
            assert watch is not None
            f.memo.clear()
            stored, memory = value(f), f.views[bid]
            watch(f, stored, memory)
            access.write(f, memory, stored, proven)
        return run if watch is None else watched

    def local(self, s: Local, scope: Scope) -> Exec:
        buf, where = s.buffer, self.where
        body = self.block(s.body, scope.with_local(buf, gpu.local_scope(s, scope, where)))
        bid, size, dtype, level, shared = id(buf), buf.size, buf.dtype, scope.level, s.scope == "shared"
        slot = self.slot(("local", bid))

        def run(f: Frame) -> None:  # filled with poison (NaN for floats): reading it before writing shows
            lanes = tuple(f.lanes)
            rows = math.prod(lanes)
            f.views[bid] = np.full(rows * size * dtype.itemsize, POISON, np.uint8).view(dtype)
            if shared:
                gpu.allocate_shared(s, f, rows, where)
            if level:
                hit = f.cache.get(slot)
                if hit is None or hit[0] != lanes:
                    row = row_index(lanes, f.rank)
                    hit = f.cache[slot] = (lanes, row, row * size)
                f.rows[bid] = hit[1]
                bind_lanes(f, [(bid, hit[2])])
            body(f)
        return run

    def invoke(self, s: Invoke, scope: Scope) -> Exec:
        refs = [isinstance(a, Ref) for a in s.args]
        buffers = [a.buffer for a in s.args if isinstance(a, Ref)]
        for buf in buffers:
            self.check_buffer(buf, scope)
        values = self.exprs([a.offset if isinstance(a, Ref) else a for a in s.args], scope)
        on_gpu = GPU_INTRINSICS.get(type(s.intrinsic))
        if on_gpu is not None:
            return on_gpu(s, scope, values, self.where)
        if isinstance(s.intrinsic, (AsyncCommit, AsyncWait)):
            return async_group(s, scope, self.where)
        check_signature(s.intrinsic, refs, [b.dtype for b in buffers], self.where)
        lanes = [id(b) if scope.locals.get(id(b), 0) > 0 else None for b in buffers]
        where, intrinsic = self.where, s.intrinsic

        def call(f: Frame, args: Sequence[Any], rows: Sequence[Any]) -> None:
            operands: list[Span | int] = []
            at = iter(zip(buffers, rows))
            for is_ref, arg in zip(refs, args):
                if not is_ref:
                    operands.append(int(arg))
                    continue
                buf, row = next(at)
                memory = f.views[id(buf)]
                if row is not None:
                    memory = memory[int(row) * buf.size:(int(row) + 1) * buf.size]
                operands.append(Span(memory, int(arg), buf.name))
            execute(intrinsic, operands, where)

        def run(f: Frame) -> None:
            f.memo.clear()
            args = [v(f) for v in values]
            rows = [None if b is None else f.rows[b] for b in lanes]
            if not f.lanes:
                call(f, args, rows)
                return
            mask = np.ones((), bool) if f.mask is None else f.mask
            every = f.lane_shape()  # each iteration calls it, varying or not
            given = [np.shape(x) for x in [*args, *rows] if x is not None]
            shape = np.broadcast_shapes(every, *given, mask.shape)
            running = np.broadcast_to(mask, shape)
            lanes_in_order = np.flatnonzero(running.ravel())  # C order: the loops' order
            per_lane = [np.broadcast_to(x, shape).ravel() if x is not None else None
                        for x in [*args, *rows]]
            for k in lanes_in_order:
                picked = [None if x is None else x[k] for x in per_lane]
                call(f, picked[:len(args)], picked[len(args):])
        return run

    def check_buffer(self, buf: Buffer, scope: Scope) -> None:
        if id(buf) not in scope.params and id(buf) not in scope.locals:
            raise CompileError(f"{self.where}: buffer {buf.name} is not a param or a local in scope")

    # ---- expressions ------------------------------------------------------------------------------

    def exprs(self, es: Sequence[Expr], scope: Scope) -> list[Fn]:
        """``es`` compiled as one statement's expressions (their shared sub-expressions computed once);
        the first clears the statement's memo."""
        shared = _shared(es)
        fns = [self.expr(e, scope, shared) for e in es]
        if not fns or not shared:
            return fns
        first = fns[0]

        def fresh(f: Frame) -> Any:
            f.memo.clear()
            return first(f)
        return [fresh, *fns[1:]]

    def access(self, buf: Buffer, index: tuple[Expr, ...], scope: Scope, shared: set[int],
               what: str) -> Access:
        held = tuple(sorted((v, scope.kinds.get(v)) for e in index for v in free_vars(e)))
        slot = self.slot(("index", id(buf), tuple(map(id, index)), held, scope.locals.get(id(buf), 0) > 0))
        return Access(buf, index, scope, lambda e: self.expr(e, scope, shared), self.where, what, slot)

    def expr(self, e: Expr, scope: Scope, shared: set[int]) -> Fn:
        if isinstance(e, Const):
            value = np.asarray(e.value).astype(e.dtype)[()]
            return lambda f: value
        if isinstance(e, Var):
            if id(e) not in scope.kinds:
                raise CompileError(f"{self.where}: index {e.name} used outside its loop")
            vid = id(e)
            return lambda f: f.values[vid]
        if isinstance(e, Load):
            self.check_buffer(e.buffer, scope)
            access = self.access(e.buffer, e.index, scope, shared, "load")
            bid = id(e.buffer)
            watch = gpu.shared_load(scope, access, bid)

            def load(f: Frame) -> Any:
                return access.read(f, f.views[bid])

            def watched(f: Frame) -> Any:
                assert watch is not None
                watch(f)
                return access.read(f, f.views[bid])
            fn: Fn = load if watch is None else watched
            return memoized(fn) if id(e) in shared else fn
        if isinstance(e, Call):
            fn = _apply(call_function(e, self.where), [self.expr(a, scope, shared) for a in e.args])
            uses = free_vars(e)
            if not has_load(e) and all(scope.kinds.get(v) == "lane" for v in uses):
                return cached(fn, self.slot(("expr", id(e))))
            return memoized(fn) if id(e) in shared else fn
        if isinstance(e, Reduce):
            raise CompileError(f"{self.where}: a Reduce reached the loop program; lower it first")
        raise CompileError(f"{self.where}: unknown expression {e!r}")


def _apply(op: Callable[..., Any], args: list[Fn]) -> Fn:
    if len(args) == 1:
        (a,) = args
        return lambda f: op(a(f))
    if len(args) == 2:
        a, b = args
        return lambda f: op(a(f), b(f))
    if len(args) == 3:
        a, b, c = args
        return lambda f: op(a(f), b(f), c(f))
    return lambda f: op(*(x(f) for x in args))


def _shared(roots: Iterable[Expr]) -> set[int]:
    """Ids of the sub-expressions that the expressions ``roots`` reach more than once."""
    count: Counter[int] = Counter()
    seen: set[int] = set()
    for root in roots:
        count[id(root)] += 1
        for x in walk(root):
            if id(x) not in seen:
                seen.add(id(x))
                count.update(id(c) for c in children(x))
    return {k for k, n in count.items() if n > 1}


def _is_const(e: Expr, value: int) -> bool:
    return isinstance(e, Const) and e.value == value
