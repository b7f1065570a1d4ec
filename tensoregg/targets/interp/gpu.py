"""GPU kernels in the interpreter: a ``block`` loop's iterations are the grid's blocks, the ``thread``
loop inside it each block's threads, both vectorized (blocks along lane axes of their own, threads
along the next), so that a block's threads run in lockstep, statement by statement, and a barrier is
where the whole block is. A loop in a thread whose bounds differ between threads runs each thread's
own iterations (``loops.trip_loop``). A ``shared`` local directly inside the block loop gets a row
per block; a local inside the thread loop a row per thread (its registers).

What this module adds to the executor: the structure rules (a thread loop directly inside a block
loop or its shared locals, shared locals only there, barriers, stores and intrinsics only inside a
thread loop), the checks of barriers and warp intrinsics reached by only part of a block or warp
(non-uniform control flow), the race checker's hooks on shared and global accesses (``races``), and
the warp MMA (``tensoregg.ir.intrinsics.WarpMMA``), the warp shuffle (``WarpShuffle``) and the warp's
matrix load (``LoadMatrix``) executed a whole warp at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tensoregg.errors import CompileError, GuardViolation
from tensoregg.ir.compute import Const
from tensoregg.ir.intrinsics import WARP, LoadMatrix, WarpMMA, WarpShuffle
from tensoregg.ir.loops import Barrier, For, Invoke, Local, Ref, Stmt, Store
from tensoregg.targets.interp.access import Access, Scope
from tensoregg.targets.interp.analysis import free_vars, has_load
from tensoregg.targets.interp.frame import Exec, Fn, Frame
from tensoregg.targets.interp.races import GlobalWriters, Lanes, SharedMemory, running

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


@dataclass(frozen=True)
class GpuScope:
    """Where a statement of a GPU kernel is: in ``block`` (directly, outside any thread loop, while
    ``direct``), in its ``thread`` loop (whose lane axes are ``level`` .. ``level + axes - 1``, over
    ``threads`` threads), with the ids of the ``shared`` buffers in scope."""

    block: For
    thread: For | None = None
    direct: bool = True
    level: int = 0
    axes: int = 0
    threads: int = 0
    shared: frozenset[int] = frozenset()

    def ids(self, f: Frame) -> tuple[Any, Any]:
        """Each lane's block and thread (index within its block)."""
        assert self.thread is not None
        return f.values[id(self.block.var)], f.values[id(self.thread.var)]


def loop_scope(s: For, scope: Scope, axes: int, where: str) -> GpuScope | None:
    """The GPU scope inside loop ``s`` (binding ``axes`` lane axes), if it changes; CompileError for a
    block loop inside another or a thread loop not directly inside a block loop."""
    gpu = scope.gpu
    if s.kind == "block":
        if gpu is not None:
            raise CompileError(f"{where}: block loop {s.var.name} inside another block or thread loop")
        if not (isinstance(s.start, Const) and s.start.value == 0):
            raise CompileError(f"{where}: block loop {s.var.name} from {s.start!r}: a grid's blocks are "
                               "[0, n)")
        return GpuScope(s)
    if s.kind == "thread":
        if gpu is None or not gpu.direct:
            raise CompileError(f"{where}: thread loop {s.var.name} not directly inside a block loop")
        if not (isinstance(s.start, Const) and s.start.value == 0 and isinstance(s.stop, Const)):
            raise CompileError(f"{where}: thread loop {s.var.name} over [{s.start!r}, {s.stop!r}): a "
                               "block's threads are [0, n) for a constant n")
        return replace(gpu, thread=s, direct=False, level=scope.level, axes=axes, threads=int(s.stop.value))
    return replace(gpu, direct=False) if gpu is not None and gpu.direct else None


def launch(s: For, blocks: Exec) -> Exec:
    """``blocks``, the body of block loop ``s``, run as one launch: every block in epoch 0; the stores
    of earlier launches (block loops) in the kernel are ordered before it, no race with its own."""
    vid = id(s.var)

    def run(f: Frame) -> None:
        f.races.clear()
        f.groups = [[]]
        f.epochs = np.zeros(int(np.max(f.values[vid])) + 1, np.int64)
        blocks(f)
    return run


def accesses(f: Frame, gpu: GpuScope, at: Any, *values: Any) -> tuple[Lanes, list[np.ndarray]]:
    """The running lanes of an access at ``at`` (with their blocks, threads and epochs), and ``values``
    (broadcast over the lanes) in them."""
    at, block, thread, *rest = running(f, at, *gpu.ids(f), *values)
    return Lanes(at, block, thread, f.epochs[block]), rest


def local_scope(s: Local, scope: Scope, where: str) -> GpuScope | None:
    """The GPU scope inside local ``s``, if it changes; CompileError for a shared local elsewhere than
    directly inside a block loop."""
    if s.scope != "shared":
        if scope.gpu is not None and scope.gpu.direct:
            raise CompileError(f"{where}: local {s.buffer.name} in a block loop outside its thread loop (a "
                               "thread's registers are locals of the thread loop; a block's, shared locals)")
        return None
    if scope.gpu is None or not scope.gpu.direct:
        raise CompileError(f"{where}: shared local {s.buffer.name} not directly inside a block loop")
    return replace(scope.gpu, shared=scope.gpu.shared | {id(s.buffer)})


def check_statement(s: Stmt, scope: Scope, where: str) -> None:
    """CompileError for a barrier outside a thread loop, or a store or invoke in a block loop outside
    its thread loop (where no thread runs it)."""
    gpu = scope.gpu
    if isinstance(s, Barrier) and (gpu is None or gpu.thread is None):
        raise CompileError(f"{where}: barrier outside a thread loop")
    if isinstance(s, (Store, Invoke)) and gpu is not None and gpu.thread is None:
        raise CompileError(f"{where}: {type(s).__name__.lower()} in block loop {gpu.block.var.name} outside "
                           "its thread loop")


def varying(s: For, scope: Scope) -> bool:
    """Whether loop ``s`` in a GPU thread has bounds that may differ between its lanes (they read a
    lane variable or memory): it runs as each thread's own loop (``loops.trip_loop``)."""
    gpu = scope.gpu
    if gpu is None or gpu.thread is None:
        return False
    uses = free_vars(s.start) | free_vars(s.stop)
    loads = has_load(s.start) or has_load(s.stop)
    return loads or any(scope.kinds.get(v) in ("lane", "varying") for v in uses)


def allocate_shared(s: Local, f: Frame, rows: int, where: str) -> None:
    """A fresh race record for an allocation of shared local ``s`` (``rows``: one per block)."""
    f.races[id(s.buffer)] = SharedMemory(s.buffer.name, s.buffer.size, rows, where)


def shared_load(scope: Scope, access: Access, bid: int) -> Callable[[Frame], None] | None:
    """The race check of a load of buffer ``bid`` through ``access``, if it is shared memory."""
    gpu = scope.gpu
    if gpu is None or bid not in gpu.shared:
        return None

    def check(f: Frame) -> None:
        f.races[bid].load(accesses(f, gpu, access.positions(f))[0])
    return check


def watch_store(scope: Scope, access: Access, bid: int, name: str, size: int,
                where: str) -> Callable[[Frame, Any, np.ndarray], None] | None:
    """The race check of a store (frame, value, memory) into buffer ``bid``, before it is written:
    shared memory's epochs, or a global buffer's writers; None outside GPU threads and for a thread's
    own locals."""
    gpu = scope.gpu
    if gpu is None or gpu.thread is None or (bid in scope.locals and bid not in gpu.shared):
        return None
    if bid in gpu.shared:
        def shared(f: Frame, value: Any, memory: np.ndarray) -> None:
            f.races[bid].store(accesses(f, gpu, access.positions(f))[0])
        return shared

    def writes(f: Frame, value: Any, memory: np.ndarray) -> None:
        lanes, (values,) = accesses(f, gpu, access.positions(f), value)
        record = f.races.get(bid)
        if record is None:
            record = f.races[bid] = GlobalWriters(name, size, gpu.threads, where)
        record.store(lanes, values, memory)
    return writes


def together(scope: Scope, where: str, what: str) -> Callable[[Frame], None]:
    """The check that every thread of each block that runs reaches ``what`` (a barrier) together:
    CompileError for one in a vectorized loop of a thread, or reached by part of a block."""
    gpu = scope.gpu
    assert gpu is not None and gpu.thread is not None
    if scope.level != gpu.level + gpu.axes:
        raise CompileError(f"{where}: {what} inside a vectorized loop of a thread")
    axes = tuple(range(gpu.level, gpu.level + gpu.axes))

    def check(f: Frame) -> None:
        if f.mask is not None:
            shape = np.broadcast_shapes(f.lane_shape(), f.mask.shape)
            mask, block, thread = (np.broadcast_to(x, shape) for x in (f.mask, *gpu.ids(f)))
            _uniform(mask, block, thread, axes,
                     f"{where}: thread {{}} of block {{}} reaches a {what} that thread {{}} does not (a "
                     "condition or loop bound that differs between the block's threads)")
    return check


def barrier(scope: Scope, where: str) -> Exec:
    """A barrier: CompileError unless every thread of each block that runs reaches it together;
    starts a new epoch of those blocks for the race checker."""
    gpu = scope.gpu
    assert gpu is not None
    check = together(scope, where, "barrier")

    def run(f: Frame) -> None:
        check(f)
        f.barriers += 1
        (blocks,) = running(f, gpu.ids(f)[0])
        f.epochs[blocks] = f.barriers
    return run


def _uniform(mask: np.ndarray, block: np.ndarray, thread: np.ndarray, axes: tuple[int, ...],
             message: str) -> None:
    """CompileError (``message`` formatted with a thread that runs, its block and one that does not)
    unless ``mask`` is all true or all false along ``axes``."""
    mixed = mask.any(axis=axes, keepdims=True) != mask.all(axis=axes, keepdims=True)
    if mixed.any():
        mixed = np.broadcast_to(mixed, mask.shape)
        yes, no = tuple(np.argwhere(mixed & mask)[0]), tuple(np.argwhere(mixed & ~mask)[0])
        raise CompileError(message.format(int(thread[yes]), int(block[yes]), int(thread[no])))


def _warp_scope(scope: Scope, name: str) -> GpuScope:
    """The GPU scope of a warp intrinsic; CompileError unless it is directly in a thread loop (no
    vectorized loop around it) of whole warps."""
    gpu = scope.gpu
    if gpu is None or gpu.thread is None:
        raise CompileError(f"{name} invoked outside a thread loop")
    if gpu.threads % WARP:
        raise CompileError(f"{name} in thread loop {gpu.thread.var.name} of {gpu.threads} threads, not a "
                           f"multiple of the warp's {WARP}")
    if scope.level != gpu.level + gpu.axes:
        raise CompileError(f"{name} invoked inside a vectorized loop of a thread")
    return gpu


def _whole_warps(f: Frame, gpu: GpuScope, name: str) -> Any:
    """Which warps run (True: all): CompileError where part of a warp does (non-uniform control
    flow)."""
    if f.mask is None:
        return True
    mask, block, thread = (_per_warp(f, x, gpu.threads // WARP) for x in (f.mask, *gpu.ids(f)))
    _uniform(mask, block, thread, (2,), f"{name}: thread {{}} of block {{}} invokes it and thread {{}} of "
             "its warp does not (a condition or loop bound that differs within the warp)")
    return mask.all(axis=2)


def _per_warp(f: Frame, x: Any, warps: int) -> np.ndarray:
    """``x`` over the running frame's lanes as (lane groups, warps, lanes of a warp)."""
    return np.broadcast_to(x, f.lane_shape()).reshape(-1, warps, WARP)


def warp_shuffle(s: Invoke, scope: Scope, offsets: Sequence[Fn], where: str) -> Exec:
    """``s``, an invoke of a :class:`WarpShuffle` (dst, src, lane mask), run for every warp of every
    block at once: each running thread's ``dst`` element gets the ``src`` element of lane ``lane ^
    mask`` of its warp."""
    shuffle: WarpShuffle = s.intrinsic
    name = f"{where}: {shuffle.name}"
    gpu = _warp_scope(scope, name)
    refs = [a for a in s.args[:2] if isinstance(a, Ref)]
    mask = s.args[2] if len(s.args) == 3 else None
    if (len(refs) != 2 or not isinstance(mask, Const)
            or not 0 <= int(mask.value) < WARP or any(r.buffer.dtype != shuffle.dtype for r in refs)):
        raise CompileError(f"{name} takes the addresses of two {shuffle.dtype} registers and a constant "
                           f"lane mask below {WARP}")
    for r in refs:
        if scope.locals.get(id(r.buffer), -1) < gpu.level + gpu.axes:
            raise CompileError(f"{name}: register {r.buffer.name} is not a local of the thread loop")
    warps, partner = gpu.threads // WARP, np.arange(WARP) ^ int(mask.value)

    def run(f: Frame) -> None:
        go = _whole_warps(f, gpu, name)
        at = []
        for r, fn in zip(refs, offsets[:2]):
            offset = _per_warp(f, fn(f), warps)
            if offset.size and (offset.min() < 0 or offset.max() >= r.buffer.size):
                raise GuardViolation(f"{name}: element {int(offset.max())} of {r.buffer.name} "
                                     f"({r.buffer.size} elements)")
            at.append(_per_warp(f, f.rows[id(r.buffer)], warps) * r.buffer.size + offset)
        got = f.views[id(refs[1].buffer)][at[1][..., partner]]
        keep = np.broadcast_to(np.asarray(go)[..., None] if np.ndim(go) else go, got.shape)
        f.views[id(refs[0].buffer)][at[0][keep]] = got[keep]
    return run


def warp_mma(s: Invoke, scope: Scope, offsets: Sequence[Fn], where: str) -> Exec:
    """``s``, an invoke of a :class:`WarpMMA` on its four fragments (A, B, C, D), run for every warp
    of every block at once: each warp's fragments gathered into its matrices by the intrinsic's
    layout, D = A . B + C computed in float64 from the inputs as the tensor cores take them (tf32
    rounded), rounded once to float32, and scattered back into each thread's D fragment."""
    mma: WarpMMA = s.intrinsic
    name = f"{where}: {mma.name}"
    gpu = _warp_scope(scope, name)
    refs = [a for a in s.args if isinstance(a, Ref)]
    want = [mma.dtype, mma.dtype, F32, F32]
    if len(s.args) != 4 or len(refs) != 4 or [r.buffer.dtype for r in refs] != want:
        raise CompileError(f"{name} takes the addresses of fragments A, B, C, D of "
                           f"{[str(d) for d in want]}")
    for r in refs:
        if scope.locals.get(id(r.buffer), -1) < gpu.level + gpu.axes:
            raise CompileError(f"{name}: fragment {r.buffer.name} is not a local of the thread loop")
    tables = [mma.layout(op) for op in "abc"]
    counts = [mma.fragment(op) for op in "abcc"]
    warps = gpu.threads // WARP

    def per_warp(f: Frame, x: Any) -> np.ndarray:
        return _per_warp(f, x, warps)

    def run(f: Frame) -> None:
        go = _whole_warps(f, gpu, name)
        at = []
        for r, fn, count in zip(refs, offsets, counts):
            offset = per_warp(f, fn(f))
            if offset.size and (offset.min() < 0 or offset.max() + count > r.buffer.size):
                bad = int(offset[(offset < 0) | (offset + count > r.buffer.size)].flat[0])
                raise GuardViolation(f"{name}: fragment of {count} elements at {bad} of {r.buffer.name} "
                                     f"({r.buffer.size} elements)")
            start = per_warp(f, f.rows[id(r.buffer)]) * r.buffer.size + offset
            at.append(start[..., None] + np.arange(count))
        a, b, c = (f.views[id(r.buffer)][p].astype(F64) for r, p in zip(refs[:3], at))
        if mma.ab == "tf32":
            a, b = _tf32(a), _tf32(b)
        groups = a.shape[0]
        (ar, ac), (br, bc), (cr, cc) = tables
        lhs, rhs = np.zeros((groups, warps, mma.m, mma.k)), np.zeros((groups, warps, mma.k, mma.n))
        lhs[:, :, ar, ac], rhs[:, :, br, bc] = a, b
        d = (np.matmul(lhs, rhs)[:, :, cr, cc] + c).astype(F32)
        go = np.broadcast_to(go, d.shape[:2])
        f.views[id(refs[3].buffer)][at[3][go]] = d[go]
    return run


def _tf32(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to tf32 (10 mantissa bits; to nearest, ties away from zero), in float64."""
    bits = x.astype(F32).view(np.uint32)
    rounded = ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(F32)
    return np.where(np.isfinite(x), rounded, x).astype(F64)


def load_matrix(s: Invoke, scope: Scope, offsets: Sequence[Fn], where: str) -> Exec:
    """``s``, an invoke of a :class:`LoadMatrix` (dst, src), run for every warp of every block at
    once: each thread's ``dst`` elements gathered from the rows the warp's lanes address in the
    shared ``src`` (loads of the receiving thread for the race checker)."""
    ldm: LoadMatrix = s.intrinsic
    name = f"{where}: {ldm.name}"
    gpu = _warp_scope(scope, name)
    refs = [a for a in s.args if isinstance(a, Ref)]
    if len(s.args) != 2 or len(refs) != 2 or any(r.buffer.dtype != ldm.dtype for r in refs):
        raise CompileError(f"{name} takes the addresses of a register and a shared {ldm.dtype} buffer")
    dst, src = refs
    if scope.locals.get(id(dst.buffer), -1) < gpu.level + gpu.axes or id(src.buffer) not in gpu.shared:
        raise CompileError(f"{name}: loads from a shared local ({src.buffer.name}) into a local of the "
                           f"thread loop ({dst.buffer.name})")
    warps, count = gpu.threads // WARP, 2 * ldm.count
    source, column = ldm.rows(np.arange(WARP))
    row_bytes = 8 * ldm.dtype.itemsize

    def run(f: Frame) -> None:
        go = _whole_warps(f, gpu, name)
        to, at = (_per_warp(f, fn(f), warps) for fn in offsets)
        block, thread = (_per_warp(f, x, warps) for x in gpu.ids(f))
        used = at[..., :8 * ldm.count]
        if used.size and ((used % 8).any() or used.min() < 0 or used.max() + 8 > src.buffer.size
                          or to.min() < 0 or to.max() + count > dst.buffer.size):
            raise GuardViolation(f"{name}: a row outside {src.buffer.name} ({src.buffer.size} elements) or "
                                 f"not {row_bytes}-byte aligned, or {count} elements outside "
                                 f"{dst.buffer.name}")
        row = _per_warp(f, f.rows[id(src.buffer)], warps)
        places = (row * src.buffer.size + at)[..., source] + column  # (groups, warps, lanes, count)
        keep = np.broadcast_to(np.asarray(go)[..., None, None] if np.ndim(go) else go, places.shape)
        every = [np.broadcast_to(x[..., None], places.shape)[keep] for x in (block, thread)]
        f.races[id(src.buffer)].load(Lanes(places[keep], every[0], every[1], f.epochs[every[0]]))
        values = f.views[id(src.buffer)][places]
        start = _per_warp(f, f.rows[id(dst.buffer)], warps) * dst.buffer.size + to
        into = start[..., None] + np.arange(count)
        f.views[id(dst.buffer)][into[keep]] = values[keep]
    return run
