"""GPU schedules of a loop program's stages: what runs as which grid of blocks and threads.

``lower_graph(grid=True)`` gives each stage as one parallel loop over every output element; the
element-wise template binds it to threads, one element each: ``blocks`` blocks of ``threads``
threads, thread t of block b computing element b * threads + t when there is one (the last block's
tail threads do nothing). A stage with no parallel loop (a scalar output) runs on one thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from tensoregg.ir.compute import INDEX, Const, Var, call, const, fresh
from tensoregg.ir.loops import For, Kernel, Local, Stmt

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


def bind_threads(stage: Stmt, threads: int = THREADS) -> For:
    """``stage`` as a block loop over a thread loop (see the module docstring)."""
    block, thread = fresh("blk"), fresh("thr")
    if not isinstance(stage, For) or stage.kind != "parallel":
        return _grid(block, 1, thread, 1, [stage])
    n = _extent(stage)
    per = min(threads, _round_up(n, 32))
    first = block * const(per, INDEX) + thread
    guarded = For(stage.var, first, call("min", first + const(1, INDEX), const(n, INDEX)), stage.body,
                  "serial", stage.unpack)
    return _grid(block, -(-n // per), thread, per, [guarded])


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
