"""The race checker of GPU kernels: who last stored and who loaded each element of a block's shared
memory in the current barrier epoch (a block's epoch is numbered by the last barrier it passed), and
who stored each element of a kernel's global buffers, in which epoch.

Threads run in lockstep, statement by statement, so a kernel whose threads touch one shared element
without a barrier between may give the right result here and a wrong one on a GPU, where they run
in no set order. Between two barriers, a thread may load an element no other thread stored, and
store an element no other thread stored or loaded; anything else raises :class:`RaceError` naming
the kernel, the buffer, the element, the block and the two threads. In global memory (no barrier
orders blocks), two threads of a launch storing different values into one element is a race unless
they are of one block and a barrier lies between.

An asynchronous copy into shared memory (``cp.async``) counts as a store by its thread twice: when
it is issued (the GPU may write at any time after) and when the thread waits for it (its data is
there from then on); in between the element is in flight, and any load or store of it is a race.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from tensoregg.errors import RaceError
from tensoregg.targets.interp.frame import Frame

NONE, MANY = -1, -2
"""An element's reader before any load in the epoch, and after loads by several threads."""


class Lanes(NamedTuple):
    """The running lanes of one access: flat offsets, and the block, thread and epoch of each."""

    at: np.ndarray
    block: np.ndarray
    thread: np.ndarray
    epoch: np.ndarray


def running(f: Frame, *xs: Any) -> list[np.ndarray]:
    """``xs`` in the lanes of ``f`` that run, flat: broadcast together over the lane axes along which
    one of them or the mask varies (lanes that differ only along other axes are repeats)."""
    shape = np.broadcast_shapes(*(np.shape(x) for x in xs), () if f.mask is None else f.mask.shape)
    arrays = [np.broadcast_to(x, shape) for x in xs]
    if f.mask is None:
        return [a.ravel() for a in arrays]
    keep = np.broadcast_to(f.mask, shape)
    return [a[keep] for a in arrays]


def _thread(who: int) -> str:
    return "several threads" if who == MANY else f"thread {who}"


class SharedMemory:
    """The accesses to one allocation of a shared buffer (``name``, ``size`` elements per block)
    in the current epoch; ``where`` names the kernel."""

    def __init__(self, name: str, size: int, rows: int, where: str) -> None:
        self.name, self.size, self.where = name, size, where
        total = size * rows
        self.writer, self.written = np.full(total, NONE), np.full(total, -1)
        self.reader, self.read = np.full(total, NONE), np.full(total, -1)
        self.inflight = np.zeros(total, bool)

    def load(self, lanes: Lanes) -> None:
        at, thread, epoch = lanes.at, lanes.thread, lanes.epoch
        self._in_flight(lanes, "loads")
        self._check(lanes, (self.written[at] == epoch) & (self.writer[at] != thread), self.writer[at],
                    "loads", "stored")
        elements, low, high, first = _per_element(at, thread)
        mine, now = np.where(low == high, low, MANY), epoch[first]  # an element is one block's
        before = np.where(self.read[elements] == now, self.reader[elements], NONE)
        self.reader[elements] = np.where((before == NONE) | (before == mine), mine, MANY)
        self.read[elements] = now

    def store(self, lanes: Lanes) -> None:
        at, thread, epoch = lanes.at, lanes.thread, lanes.epoch
        self._in_flight(lanes, "stores")
        self._check(lanes, (self.written[at] == epoch) & (self.writer[at] != thread), self.writer[at],
                    "stores", "stored")
        self._check(lanes, (self.read[at] == epoch) & (self.reader[at] != thread), self.reader[at],
                    "stores", "loaded")
        elements, low, high, _ = _per_element(at, thread)
        twice = low != high  # two threads storing one element in this very statement
        if twice.any():
            k = int(np.flatnonzero(twice)[0])
            self._check(lanes, (at == elements[k]) & (thread == high[k]), np.full(at.shape, low[k]),
                        "stores", "stores")
        self.writer[at] = thread
        self.written[at] = epoch

    def issue(self, lanes: Lanes) -> None:
        """Asynchronous copies into ``lanes.at`` issued: a store, then in flight."""
        self.store(lanes)
        self.inflight[lanes.at] = True

    def land(self, lanes: Lanes) -> None:
        """Those copies waited for by their threads: no longer in flight, a store in this epoch."""
        self.inflight[lanes.at] = False
        self.store(lanes)

    def _in_flight(self, lanes: Lanes, verb: str) -> None:
        busy = self.inflight[lanes.at]
        if busy.any():
            k = int(np.flatnonzero(busy)[0])
            element = int(lanes.at[k]) % self.size
            raise RaceError(f"{self.where}: race on shared {self.name} element {element} "
                            f"in block {int(lanes.block[k])}: thread {int(lanes.thread[k])} {verb} it while "
                            "an asynchronous copy into it is in flight (no cp.async.wait_group between)")

    def _check(self, lanes: Lanes, clash: np.ndarray, other: np.ndarray, verb: str, did: str) -> None:
        """RaceError naming the first lane of ``clash`` (``other``: the thread it clashes with)."""
        if not clash.any():
            return
        k = int(np.flatnonzero(clash)[0])
        element, block = int(lanes.at[k]) % self.size, int(lanes.block[k])
        raise RaceError(f"{self.where}: race on shared {self.name} element {element} in block {block}: "
                        f"thread {int(lanes.thread[k])} {verb} it and {_thread(int(other[k]))} {did} it "
                        "with no barrier between")


def _per_element(at: np.ndarray, thread: np.ndarray) -> tuple[np.ndarray, ...]:
    """The distinct elements of ``at`` with the least and greatest thread touching each, and the
    first lane touching each."""
    order = np.argsort(at, kind="stable")
    ordered, threads = at[order], thread[order]
    if not ordered.size:
        return ordered, threads, threads, order
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return (ordered[starts], np.minimum.reduceat(threads, starts), np.maximum.reduceat(threads, starts),
            order[starts])


class GlobalWriters:
    """Which thread of the launch (block * threads + thread) last stored each element of a global
    buffer ``name`` of ``size`` elements, in which epoch; ``where`` names the kernel."""

    def __init__(self, name: str, size: int, threads: int, where: str) -> None:
        self.name, self.threads, self.where = name, threads, where
        self.writer, self.written = np.full(size, NONE), np.full(size, -1)

    def store(self, lanes: Lanes, values: np.ndarray, memory: np.ndarray) -> None:
        """Record the stores of ``values`` (one per running lane) before they are written into
        ``memory``; RaceError where a thread of another block, or of the same block with no barrier
        between, stored a different value."""
        who = lanes.block * self.threads + lanes.thread
        before = self.writer[lanes.at]
        clash = ((before != NONE) & (before != who)
                 & ((before // self.threads != lanes.block) | (self.written[lanes.at] == lanes.epoch)))
        if clash.any():
            old, new = memory[lanes.at[clash]], values[clash]
            bits = f"u{memory.dtype.itemsize}"
            differ = np.asarray(old).view(bits) != np.asarray(new, memory.dtype).view(bits)
            if differ.any():
                k = np.flatnonzero(clash)[np.flatnonzero(differ)[0]]
                other = int(before[k])
                raise RaceError(f"{self.where}: race on {self.name} element {int(lanes.at[k])}: thread "
                                f"{int(lanes.thread[k])} of block {int(lanes.block[k])} stores a value "
                                f"other than thread {other % self.threads} of block "
                                f"{other // self.threads} stored there in the same launch")
        self.writer[lanes.at] = who
        self.written[lanes.at] = lanes.epoch
