"""A GPU thread's 16-byte copies between global memory and its registers in the GPU emulation
(``tensoregg.ir.intrinsics.VectorCopy``): the elements copied lane by lane, the global side checked
to be aligned and inside its buffer, a store into global memory recorded for the race checker like
any other."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tensoregg.errors import CompileError, GuardViolation
from tensoregg.ir.intrinsics import VectorCopy
from tensoregg.ir.loops import Invoke, Ref
from tensoregg.targets.interp.access import Scope
from tensoregg.targets.interp.frame import Exec, Fn, Frame
from tensoregg.targets.interp.races import GlobalWriters, Lanes, running


def vector_copy(s: Invoke, scope: Scope, offsets: Sequence[Fn], where: str) -> Exec:
    """``s``, an invoke of a :class:`VectorCopy` (dst, src), run for every running thread."""
    copy: VectorCopy = s.intrinsic
    name = f"{where}: {copy.name}"
    gpu = scope.gpu
    refs = [a for a in s.args if isinstance(a, Ref)]
    if gpu is None or gpu.thread is None:
        raise CompileError(f"{name} invoked outside a thread loop")
    if len(s.args) != 2 or len(refs) != 2 or any(r.buffer.dtype != copy.dtype for r in refs):
        raise CompileError(f"{name} takes the addresses of two {copy.dtype} buffers")
    global_side = [id(r.buffer) in scope.params for r in refs]
    local = [scope.locals.get(id(r.buffer), -1) >= gpu.level + gpu.axes for r in refs]
    if sorted(global_side) != [False, True] or local != [not g for g in global_side]:
        raise CompileError(f"{name}: copies between a param and a local of the thread loop, not "
                           f"{refs[0].buffer.name} and {refs[1].buffer.name}")
    width, lane = copy.width, np.arange(copy.width)
    store = global_side[0]
    dst, src = refs

    def run(f: Frame) -> None:
        rows = [f.rows[id(r.buffer)] if not g else 0 for r, g in zip(refs, global_side)]
        to, at, to_row, at_row, block, thread = running(f, *(fn(f) for fn in offsets), *rows, *gpu.ids(f))
        for r, off, aligned in ((dst, to, store), (src, at, not store)):
            bad = (off < 0) | (off + width > r.buffer.size) | ((off % width != 0) & aligned)
            if bad.any():
                raise GuardViolation(f"{name}: {width} elements at {int(off[bad][0])} of {r.buffer.name} "
                                     f"({r.buffer.size} elements): outside it, or not aligned")
        places = [(row * r.buffer.size + off)[:, None] + lane for r, off, row in
                  ((dst, to, to_row), (src, at, at_row))]
        values = f.views[id(src.buffer)][places[1]]
        memory = f.views[id(dst.buffer)]
        if store:
            record = f.races.get(id(dst.buffer))
            if record is None:
                record = GlobalWriters(dst.buffer.name, dst.buffer.size, gpu.threads, where)
                f.races[id(dst.buffer)] = record
            block, thread = (np.repeat(x, width) for x in (block, thread))
            record.store(Lanes(places[0].ravel(), block, thread, f.epochs[block]), values.ravel(), memory)
        memory[places[0]] = values
    return run
