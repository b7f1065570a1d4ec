"""Asynchronous copies into shared memory in the GPU emulation (``tensoregg.ir.intrinsics``:
``AsyncCopy``, ``AsyncCommit``, ``AsyncWait``; ``cp.async``): a copy reads its source when issued
and holds the data aside, in the open group of the launch; the destination is in flight (the race
checker refuses any access to it, ``races.SharedMemory``) until a wait lands the group, writing the
data. Every thread of a block commits and waits together, so one list of groups serves them all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from tensoregg.errors import CompileError, GuardViolation
from tensoregg.ir.intrinsics import AsyncCopy, AsyncWait
from tensoregg.ir.loops import Invoke, Ref
from tensoregg.targets.interp.access import Scope
from tensoregg.targets.interp.frame import Exec, Fn, Frame
from tensoregg.targets.interp.gpu import together
from tensoregg.targets.interp.races import Lanes, running


class Landing(NamedTuple):
    """Copies issued by one statement: into shared buffer ``bid`` at ``lanes.at`` (one row per
    copy's elements), the ``values`` they land."""

    bid: int
    lanes: Lanes
    values: np.ndarray


def async_copy(s: Invoke, scope: Scope, offsets: Sequence[Fn], where: str) -> Exec:
    """``s``, an invoke of an :class:`AsyncCopy` (dst, src, count), run for every running thread:
    its source read now, its destination in flight until a wait lands it."""
    copy: AsyncCopy = s.intrinsic
    name = f"{where}: {copy.name}"
    gpu = scope.gpu
    refs = [a for a in s.args[:2] if isinstance(a, Ref)]
    if gpu is None or gpu.thread is None:
        raise CompileError(f"{name} invoked outside a thread loop")
    if len(s.args) != 3 or len(refs) != 2 or any(r.buffer.dtype != copy.dtype for r in refs):
        raise CompileError(f"{name} takes the addresses of a shared and a global {copy.dtype} buffer and a "
                           "count")
    dst, src = refs
    if id(dst.buffer) not in gpu.shared or id(src.buffer) not in scope.params:
        raise CompileError(f"{name}: copies from a param ({src.buffer.name}) into a shared local "
                           f"({dst.buffer.name})")
    width, bid, sid = copy.width, id(dst.buffer), id(src.buffer)
    lane = np.arange(width)

    def run(f: Frame) -> None:
        to, at, count, row, block, thread = running(f, *(fn(f) for fn in offsets), f.rows[bid],
                                                    *gpu.ids(f))
        bad = (to % width != 0) | (at % width != 0) | (to < 0) | (to + width > dst.buffer.size) \
            | (count < 0) | (count > width)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise GuardViolation(f"{name}: {int(count[k])} of {width} elements from element {int(at[k])} of "
                                 f"{src.buffer.name} into element {int(to[k])} of {dst.buffer.name}: "
                                 "outside, or not aligned to the copy")
        read = lane < count[:, None]
        source = at[:, None] + lane
        outside = read & ((source < 0) | (source >= src.buffer.size))
        if outside.any():
            raise GuardViolation(f"{name}: reads element {int(source[outside][0])} of {src.buffer.name} "
                                 f"({src.buffer.size} elements)")
        memory = f.views[sid]
        values = np.where(read, memory[np.where(read, source, 0)], np.zeros((), memory.dtype))
        places = ((row * dst.buffer.size + to)[:, None] + lane).ravel()
        lanes = Lanes(places, *(np.repeat(x, width) for x in (block, thread, f.epochs[block])))
        f.races[bid].issue(lanes)
        f.groups[-1].append(Landing(bid, lanes, values.ravel()))
    return run


def async_group(s: Invoke, scope: Scope, where: str) -> Exec:
    """``s``, an :class:`AsyncCommit` (the open group closed) or an :class:`AsyncWait` (the committed
    groups but the newest ``pending`` landed), which every thread of every running block reaches."""
    name = f"{where}: {s.intrinsic.name}"
    if scope.gpu is None or scope.gpu.thread is None:
        raise CompileError(f"{name} invoked outside a thread loop")
    if s.args:
        raise CompileError(f"{name} takes no arguments")
    check = together(scope, where, s.intrinsic.name)
    pending = s.intrinsic.pending if isinstance(s.intrinsic, AsyncWait) else None

    def run(f: Frame) -> None:
        check(f)
        if f.mask is not None and not f.mask.all():
            raise CompileError(f"{name} reached by some blocks only (their groups would differ)")
        if pending is None:
            f.groups.append([])
            return
        *committed, open_group = f.groups
        keep = len(committed) - min(pending, len(committed))
        for group in committed[:keep]:
            for landing in group:
                lanes = landing.lanes._replace(epoch=f.epochs[landing.lanes.block])
                f.races[landing.bid].land(lanes)
                f.views[landing.bid][lanes.at] = landing.values
        f.groups = [*committed[keep:], open_group]
    return run
