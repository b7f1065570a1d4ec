"""GPU schedules of a loop program's stages: what runs as which grid of blocks and threads.

``lower_graph(grid=True)`` gives each stage as one parallel loop over every output element; the
element-wise template binds it to threads, one element each: ``blocks`` blocks of ``threads``
threads, thread t of block b computing element b * threads + t when there is one (the last block's
tail threads do nothing). A stage with no parallel loop (a scalar output) runs on one thread.

Where the stage is one store of 32- or 16-bit floats at the element's own offset (contiguous output
data), each thread computes ``width`` consecutive elements (16 bytes) instead: the operands read at
that same offset are loaded 16 bytes at once into registers, and the results stored so
(``VectorCopy``: ``float4``, eight halves); other operands are read element by element. When the
extent is no multiple of ``width``, the thread after the last whole vector computes the rest one
element at a time (the scalar tail)::

    q = b * threads + t
    if q < n / width:   registers <- 16 bytes of each contiguous operand at q * width
                        for v < width: out registers[v] = the element q * width + v
                        16 bytes of the output at q * width <- out registers
    if q == n / width:  for p in q * width .. n: the element p
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tensoregg.ir.compute import INDEX, Buffer, Const, Load, Var, call, const, fresh, substitute, walk
from tensoregg.ir.compute.expr import is_float
from tensoregg.ir.contraction import evaluate
from tensoregg.ir.intrinsics import VectorCopy
from tensoregg.ir.loops import For, Invoke, Kernel, Local, Ref, Stmt, Store, offset

THREADS = 256
"""Threads per block of the element-wise template: 8 warps, enough for latency hiding at full
occupancy (2048 threads per SM) while leaving registers to each thread."""


@dataclass
class Launch:
    """One ``__global__`` kernel: its statement (a block loop) and its grid."""

    name: str
    stage: For
    blocks: int
    threads: int
    shared_bytes: int


VECTOR_BYTES = 16
"""Bytes a thread of the element-wise template loads or stores at once where the data allow."""


def bind_threads(stage: Stmt, threads: int = THREADS) -> For:
    """``stage`` as a block loop over a thread loop (see the module docstring)."""
    block, thread = fresh("blk"), fresh("thr")
    if not isinstance(stage, For) or stage.kind != "parallel":
        return _grid(block, 1, thread, 1, [stage])
    n = _extent(stage)
    vector = _contiguous(stage, n)
    if vector is not None:
        return _vectors(stage, n, threads, *vector)
    per = min(threads, _round_up(n, 32))
    first = block * const(per, INDEX) + thread
    guarded = For(stage.var, first, call("min", first + const(1, INDEX), const(n, INDEX)), stage.body,
                  "serial", stage.unpack)
    return _grid(block, -(-n // per), thread, per, [guarded])


def _contiguous(stage: For, n: int) -> tuple[Store, list[Load]] | None:
    """The stage's one store and the loads of its value at the element's own offset, where the store
    is of 32- or 16-bit floats there (checked over every element) and ``n`` holds a whole vector."""
    if len(stage.body) != 1 or not isinstance(stage.body[0], Store):
        return None
    store = stage.body[0]
    dtype = store.buffer.dtype
    if not is_float(dtype) or dtype.itemsize not in (2, 4) or n < VECTOR_BYTES // dtype.itemsize:
        return None
    p = np.arange(n)
    env = {id(stage.var): p}
    inner = 1
    for v, extent in reversed(stage.unpack):
        env[id(v)] = p // inner % extent
        inner *= extent

    def own(buf: Buffer, index: tuple) -> bool:
        at = evaluate(offset(buf, index), env, {})
        return at is not None and np.array_equal(np.broadcast_to(at, p.shape), p)

    if not own(store.buffer, store.index):
        return None
    loads = {id(e): e for e in walk(store.value) if isinstance(e, Load) and e.buffer.dtype == dtype
             and not any(isinstance(x, Load) for i in e.index for x in walk(i)) and own(e.buffer, e.index)}
    return store, list(loads.values())


def _vectors(stage: For, n: int, threads: int, store: Store, loads: list[Load]) -> For:
    """``stage`` a vector of ``width`` elements per thread, the tail one element at a time (module
    docstring)."""
    dtype = store.buffer.dtype
    width = VECTOR_BYTES // dtype.itemsize
    whole, count = n // width, -(-n // width)
    per = min(threads, _round_up(count, 32))
    block, thread = fresh("blk"), fresh("thr")
    q = block * const(per, INDEX) + thread
    copy = VectorCopy(width, dtype)
    registers = {id(e): Buffer(f"{e.buffer.name}_v", dtype, (width,)) for e in loads}
    out = Buffer(f"{store.buffer.name}_v", dtype, (width,))
    v, at = fresh("v"), fresh("q")
    base = at * const(width, INDEX)
    value = substitute(store.value, {id(e): Load(registers[id(e)], (v,)) for e in loads})
    element = For(stage.var, base + v, base + v + const(1, INDEX), [Store(out, (v,), value)], "serial",
                  stage.unpack)
    zero = const(0, INDEX)
    body: list[Stmt] = [*(Invoke(copy, (Ref(registers[id(e)], zero), Ref(e.buffer, base))) for e in loads),
                        For(v, zero, const(width, INDEX), [element]),
                        Invoke(copy, (Ref(store.buffer, base), Ref(out, zero)))]
    for buf in [out, *registers.values()]:
        body = [Local(buf, body)]
    vectors = For(at, q, call("min", q + const(1, INDEX), const(whole, INDEX)), body)
    last, one = fresh("q"), const(1, INDEX)
    rest = For(stage.var, last * const(width, INDEX), const(n, INDEX), stage.body, "serial", stage.unpack)
    tail = For(last, call("max", q, const(whole, INDEX)), call("min", q + one, const(count, INDEX)), [rest])
    return _grid(block, -(-count // per), thread, per, [vectors, tail])


def launches(kernel: Kernel) -> list[Launch]:
    """The GPU kernels a GPU-scheduled kernel launches, one per statement of its body, in order."""
    out = []
    for k, stage in enumerate(kernel.body):
        if not (isinstance(stage, For) and stage.kind == "block"):
            raise ValueError(f"{kernel.name}: statement {k} is not a block loop")
        thread = _thread_loop(stage)
        out.append(Launch(f"{kernel.name}_{k}", stage, _extent(stage), _extent(thread), shared_bytes(stage)))
    return out


def shared_bytes(stage: For) -> int:
    """The shared memory one block of ``stage`` declares."""
    total, body = 0, stage.body
    while len(body) == 1 and isinstance(body[0], Local) and body[0].scope == "shared":
        total += body[0].buffer.nbytes
        body = body[0].body
    return total


def _thread_loop(stage: For) -> For:
    body = stage.body
    while len(body) == 1 and isinstance(body[0], Local) and body[0].scope == "shared":
        body = body[0].body
    if len(body) != 1 or not isinstance(body[0], For) or body[0].kind != "thread":
        raise ValueError(f"block loop {stage.var!r}: its body is not one thread loop (inside shared locals)")
    return body[0]


def _grid(block: Var, blocks: int, thread: Var, threads: int, body: list[Stmt]) -> For:
    zero = const(0, INDEX)
    return For(block, zero, const(blocks, INDEX), [For(thread, zero, const(threads, INDEX), body, "thread")],
               "block")


def _extent(loop: For) -> int:
    start, stop = loop.start, loop.stop
    if not (isinstance(start, Const) and isinstance(stop, Const)):
        raise ValueError(f"loop {loop.var!r}: a GPU grid needs constant bounds, not [{start!r}, {stop!r})")
    return int(stop.value) - int(start.value)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m
