"""Static memory plan of a compiled model: where every buffer a kernel touches lives.

Graph inputs and outputs live in the caller's arrays; constants (initializers, and constants that
compute definitions derived from them) are packed at 64-byte aligned offsets into one weights blob;
intermediate values and per-node scratch live in one workspace at offsets chosen by
:func:`plan_workspace`, so that values whose lifetimes do not overlap share bytes. A value may also
be declared an alias of another (an in-place element-wise result, a reshaped view): it then lives
where that one does, which stays allocated until the last of them is read. With ``guard``, every
buffer is surrounded by that many free bytes (for the guard-region test mode). A plan needing more
than the memory limit (``tensoregg.ir.limits``) is a ResourceError naming its largest value, raised
before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tensoregg.ir.graph import Graph
from tensoregg.ir.limits import check_memory
from tensoregg.ir.lower import LoweredNode
from tensoregg.runtime.memory import ALIGN, huge_zeros

POISON = 0xFF
"""The byte guard regions are filled with (0xFFFF... is NaN for floats, -1 for integers)."""


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class Place:
    """Where a kernel param lives: ``input``/``output`` k, or an offset into ``weights``/``work``."""

    kind: str
    at: int
    nbytes: int


def plan_workspace(lifetimes: Sequence[tuple[int, int, int]], guard: int = 0) -> tuple[list[int], int]:
    """First-fit offsets for (first step, last step, bytes) intervals; two intervals whose steps
    overlap never share bytes. Offsets are 64-byte aligned, and at least ``guard`` bytes (rounded up
    to 64) stay free before and after each interval. Returns the offsets and the workspace size."""
    pad = align(guard)
    placed: list[tuple[int, int, int, int]] = []  # (start, end, first, last)
    result = [0] * len(lifetimes)
    for i in sorted(range(len(lifetimes)), key=lambda i: -lifetimes[i][2]):  # big first: less fragmentation
        first, last, size = lifetimes[i]
        need = pad + align(size) + pad
        at = 0
        for s, e in sorted((s, e) for s, e, f, la in placed if not (la < first or f > last)):
            if at + need <= s:
                break
            at = max(at, e)
        placed.append((at, at + need, first, last))
        result[i] = at + pad
    return result, max((e for _, e, _, _ in placed), default=0)


class MemoryPlan:
    """The places of ``lowered``'s params for ``graph`` (see the module docstring)."""

    def __init__(self, graph: Graph, lowered: Sequence[LoweredNode], guard: int = 0,
                 aliases: Mapping[str, str] | None = None,
                 inside: Mapping[str, tuple[str, int]] | None = None) -> None:
        self.graph, self.lowered, self.guard = graph, list(lowered), align(guard)
        self.aliases = dict(aliases or {})
        """value -> the value whose memory it reuses (both in the workspace)."""
        self.inside = dict(inside or {})
        """value -> (the value it lives in, its byte offset there): a Concat's input written where
        the Concat's output holds it (``tensoregg.ir.program.place_concats``; both in the workspace,
        no guard bytes between them)."""
        places: dict[str, Place] = {}
        for k, name in enumerate(graph.inputs):
            places[name] = Place("input", k, graph.types[name].nbytes)
        for k, name in enumerate(graph.outputs):
            if name not in places and name not in graph.initializers:
                places.setdefault(name, Place("output", k, graph.types[name].nbytes))
        self.places = places
        self._plan_work()
        self._pack_weights()

    def _pack_weights(self) -> None:
        """Every constant a kernel reads, packed at aligned offsets into ``weights_blob``."""
        guard = self.guard
        used = {n for low in self.lowered for n in low.inputs}
        offset, packed = guard, []
        self.constant_places: dict[int, Place] = {}
        derived = [(buf, value) for low in self.lowered for buf, value in low.constants]
        for key, value in [*self.graph.initializers.items(), *derived]:
            if isinstance(key, str) and key not in used:
                continue
            place = Place("weights", offset, value.nbytes)
            if isinstance(key, str):
                self.places[key] = place
            else:
                self.constant_places[id(key)] = place
            packed.append((offset, value))
            offset += align(value.nbytes + guard) + guard
        self._check_memory(offset)
        self.weights_blob = huge_zeros(offset + guard + 2 * ALIGN)
        if guard:
            self.weights_blob[:] = POISON
        self.weights_base = (-self.weights_blob.ctypes.data) % ALIGN
        """Offset of the first aligned byte of ``weights_blob``: offsets count from there."""
        for off, value in packed:
            flat = np.ascontiguousarray(value).view(np.uint8).reshape(-1)
            start = self.weights_base + off
            self.weights_blob[start:start + flat.size] = flat

    def _check_memory(self, weights: int) -> None:
        """ResourceError if the weights, the workspace and the graph's inputs and outputs together
        exceed the memory limit, naming the largest value and the node that makes it."""
        g = self.graph
        io = sum(g.types[n].nbytes for n in {*g.inputs, *g.outputs})
        total = weights + self.work_size + io
        _, largest = _largest_value(g)
        check_memory(total, f"graph {g.name!r} (weights {weights} bytes, workspace {self.work_size} "
                            f"bytes, inputs and outputs {io} bytes{largest})")

    @property
    def weights_address(self) -> int:
        return int(self.weights_blob.ctypes.data) + self.weights_base

    def home(self, n: str) -> tuple[str, int]:
        """The value whose bytes hold ``n`` (following ``aliases`` and ``inside``) and ``n``'s byte
        offset in them."""
        offset = 0
        while n in self.aliases or n in self.inside:
            if n in self.aliases:
                n = self.aliases[n]
            else:
                n, at = self.inside[n]
                offset += at
        return n, offset

    def _plan_work(self) -> None:
        """Workspace offsets of intermediate values (live from their node to their last reader; a
        value holding others, from the first of them written to the last read) and of each node's
        scratch (stages, unused outputs: live during the node)."""
        last_use: dict[str, int] = {}
        for k, low in enumerate(self.lowered):
            for n in low.inputs:
                last_use[self.home(n)[0]] = k
        temps: list[tuple[object, tuple[int, int, int]]] = []
        holders: dict[str, int] = {}  # a value holding others -> its entry in temps
        for k, low in enumerate(self.lowered):
            for n, buf in zip(low.outputs, low.kernel.params[len(low.inputs):]):
                if not n:
                    temps.append((buf, (k, k, buf.nbytes)))
                elif n in self.inside:
                    h = self.home(n)[0]
                    if h not in holders:
                        holders[h] = len(temps)
                        temps.append((h, (k, max(k, last_use.get(h, k)), self.graph.types[h].nbytes)))
                elif n not in self.places and n not in self.aliases and n not in holders:
                    temps.append((n, (k, max(k, last_use.get(n, k)), buf.nbytes)))
            temps += [(buf, (k, k, buf.nbytes)) for buf in low.scratch]
        offsets, self.work_size = plan_workspace([t for _, t in temps], self.guard)
        self.scratch_places: dict[int, Place] = {}
        for (key, (_, _, size)), off in zip(temps, offsets):
            if isinstance(key, str):
                self.places[key] = Place("work", off, size)
            else:
                self.scratch_places[id(key)] = Place("work", off, size)
        for n in [*self.aliases, *self.inside]:
            h, offset = self.home(n)
            p = self.places[h]
            assert offset == 0 or p.kind == "work", f"{n!r} inside {p.kind} {h!r}"
            self.places[n] = p if offset == 0 and n in self.aliases else Place(
                p.kind, p.at + offset, self.graph.types[n].nbytes)

    def address(self, place: Place, io: Mapping[str, int], work: int) -> int:
        """The address of ``place``, given those of the graph's inputs and outputs (by name) and of
        the workspace."""
        if place.kind in ("input", "output"):
            names = list(self.graph.inputs) if place.kind == "input" else self.graph.outputs
            return io[names[place.at]]
        return (self.weights_address if place.kind == "weights" else work) + place.at

    def param_places(self, low: LoweredNode) -> list[Place]:
        """Where each of ``low``'s kernel params lives."""
        n_in = len(low.inputs)
        out: list[Place] = [self.places[n] for n in low.inputs]
        for n, buf in zip(low.outputs, low.kernel.params[n_in:n_in + len(low.outputs)]):
            out.append(self.places[n] if n else self.scratch_places[id(buf)])
        out += [self.scratch_places[id(buf)] for buf in low.scratch]
        out += [self.constant_places[id(buf)] for buf, _ in low.constants]
        return out




def _largest_value(g: Graph) -> tuple[int, str]:
    """The bytes of the largest input or node output of ``g``, and "; the largest value: ..." naming
    it and the node that makes it ("" for a graph without values)."""
    made = {out: node for node in g.nodes for out in node.outputs if out}
    big = max((n for n in g.types if n in made or n in g.inputs), key=lambda n: g.types[n].nbytes,
              default=None)
    if big is None:
        return 0, ""
    by = f"{made[big].op} node {made[big].label!r} output" if big in made else "graph input"
    return g.types[big].nbytes, f"; the largest value: {by} {big!r} {g.types[big]}"


def check_values_fit(g: Graph) -> None:
    """ResourceError, before lowering, if the graph's inputs and outputs together or its largest value
    alone exceed the memory limit: a memory plan holds them all (``MemoryPlan`` checks the whole
    plan after lowering, whose tables and packed constants grow with the values)."""
    io = sum(g.types[n].nbytes for n in {*g.inputs, *g.outputs})
    size, largest = _largest_value(g)
    check_memory(max(io, size), f"graph {g.name!r} (inputs and outputs {io} bytes{largest})")
