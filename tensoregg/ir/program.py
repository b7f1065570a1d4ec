"""A Graph lowered to one loop program: a kernel per node, fused where a consumer computes its
producer, in-place and view results sharing their input's memory, and the static memory plan.

This is the target-neutral half of code generation: every target that runs loop programs (``llvm``
and the cross CPU targets emit it as machine code, ``interp`` executes it with numpy) starts from
the same :class:`LoopProgram`, so what one of them computes checks the lowering the others run.
"""

from __future__ import annotations

import math
import re
from collections import ChainMap, Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tensoregg.errors import ResourceError
from tensoregg.ir.compute import Buffer, Const, Expr, Load, walk
from tensoregg.ir.graph import Graph
from tensoregg.ir.loops import For, Invoke, Kernel, Local, Store, format_kernel, statements, work
from tensoregg.ir.lower import Chooser, Inlined, LoweredNode, lower_node
from tensoregg.ir.memory_plan import MemoryPlan, check_values_fit
from tensoregg.ir.registry import get_op
from tensoregg.ir.schedules import Schedule
from tensoregg.runtime.signature import collect_outputs as gather


@dataclass
class LoopProgram:
    """``graph``'s nodes as kernels (``lowered[k]`` is node k's), run in order except the nodes in
    ``skipped`` (views of their input, and producers a consumer's kernel computes), on the memory
    ``plan``; ``aliases`` maps a value to the value whose memory it lives in."""

    graph: Graph
    lowered: list[LoweredNode]
    aliases: dict[str, str]
    skipped: set[int]
    plan: MemoryPlan

    @property
    def work(self) -> int:
        """Stores (multiply-adds for micro-kernels) one run executes."""
        return sum(work(low.kernel.body) for low in self.lowered)

    @property
    def templates(self) -> Counter[str]:
        """How many kernels that run used each template (``LoweredNode.templates``)."""
        return Counter(t for k, low in enumerate(self.lowered) if k not in self.skipped
                       for t in low.templates)


def _fixed(schedule: Schedule) -> Chooser:
    return lambda problem: schedule


def lower_graph(graph: Graph, *, target: str = "llvm", row: bool = True, grid: bool = False,
                choose: Chooser | None = None, fuse: bool = True, tile: bool = True,
                concats: bool = False) -> LoopProgram:
    """Lower every node of ``graph`` (``lower_node``). A contraction is tiled as its node's
    ``schedule`` says (extraction's choice), or as ``choose`` picks for a node without one (without
    ``choose``: untiled); with ``tile=False``, every contraction is untiled. With ``fuse``, a node
    that is element-wise in the wide sense and whose output only one node reads is computed inside
    that node's kernel when it is element-wise too (BatchNorm + Relu, a Mul/Add/Relu chain: one pass
    over memory instead of one per op). ``row`` and ``grid`` choose the loop form of what is not tiled
    (``assign``: ``grid`` for a GPU). ``target`` names the target in errors. With ``concats``, the
    inputs of a Concat that qualifies are written in its output's memory and the Concat runs no
    kernel (``place_concats``): for targets that run the program on its memory plan (llvm, the cross
    CPU targets, interp; not cuda, whose 16-byte vector accesses need buffers aligned to 16 bytes: a
    placed input starts wherever the inputs before it end)."""
    check_values_fit(graph)
    inside, placed = place_concats(graph) if concats else ({}, set())
    lowered: list[LoweredNode] = []
    uses = Counter(n for node in graph.nodes for n in node.inputs)
    uses.update(graph.outputs)
    inlinable: dict[str, tuple[int, Inlined]] = {}  # value -> (its node, the node as an expression)
    fused: set[int] = set()
    for k, node in enumerate(graph.nodes):
        opdef = get_op(node.op, node.domain)
        producers = {n: inlinable[n][1] for n in node.inputs if n in inlinable and k not in placed}
        chosen = None if not tile else choose if node.schedule is None else _fixed(node.schedule)
        try:
            low = lower_node(opdef, node, graph.types, graph.initializers, target=target, name=f"k{k}",
                             row=row, grid=grid, choose=chosen, producers=producers)
        except ResourceError:
            raise
        except MemoryError as e:  # numpy could not allocate a table of the lowering (index offsets)
            raise ResourceError(f"{node.op} node {node.label!r}: out of memory while lowering it for "
                                f"{graph.types[node.outputs[0]]}: {e}") from e
        lowered.append(low)
        fused.update(inlinable[n][0] for n in low.fused)
        if low.inline is not None and fuse and uses[node.outputs[0]] == 1 and k not in placed:
            inlinable[node.outputs[0]] = (k, low.inline)
    aliases, views = reuse_memory(graph, lowered, keep={*inside, *(out for out, _ in inside.values())})
    return LoopProgram(graph, lowered, aliases, views | fused | placed,
                       MemoryPlan(graph, lowered, aliases=aliases, inside=inside))


def outside_workspace(graph: Graph) -> set[str]:
    """The values that live in the caller's arrays or the weights: graph inputs, outputs, constants."""
    return {*graph.inputs, *graph.outputs, *graph.initializers}


def place_concats(graph: Graph) -> tuple[dict[str, tuple[str, int]], set[int]]:
    """Concats whose inputs can be written where the output holds them: (value -> the Concat output
    it lives in and its byte offset there, for the memory plan; the Concat nodes, which then run no
    kernel). A Concat qualifies when its axes before ``axis`` have extent 1 (each input is then one
    contiguous run of the output's bytes), its output is a workspace value, and its inputs are
    distinct workspace values that nodes make (not graph inputs, outputs or constants) and that no
    earlier Concat placed. Its inputs' producers then write them in place (each runs its own kernel:
    none is computed inline by the Concat), its output is read where it is (the Concat is computed
    inline by no consumer), and none of these values shares memory with another (``reuse_memory``).
    A Concat's output may be placed in a later one: DenseNet's chain, where each concat copied every
    layer before it, becomes each layer's output written once into the block's last concat."""
    fixed = outside_workspace(graph)
    made = {out for node in graph.nodes for out in node.outputs if out}
    inside: dict[str, tuple[str, int]] = {}
    placed: set[int] = set()
    for k, node in enumerate(graph.nodes):
        if node.op != "Concat" or node.domain != "":
            continue
        out, ins = node.outputs[0], list(node.inputs)
        shape = graph.types[out].shape
        axis = int(node.attrs["axis"]) % len(shape)
        if out in fixed or math.prod(shape[:axis]) != 1 or len(set(ins)) != len(ins):
            continue
        if any(v in fixed or v in inside or v not in made for v in ins):
            continue
        offset = 0
        for v in ins:
            inside[v] = (out, offset)
            offset += graph.types[v].nbytes
        placed.add(k)
    return inside, placed


VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
"""Ops whose output is their first input's bytes as they are (row-major order kept)."""


def reuse_memory(graph: Graph, lowered: Sequence[LoweredNode],
                 keep: set[str] | frozenset[str] = frozenset()) -> tuple[dict[str, str], set[int]]:
    """Values that can live in the memory of an input that dies at their node: (aliases for the
    memory plan, indices of the nodes that then need no kernel call). A view op's output is its input;
    an element-wise kernel that reads an input only at the index it writes (same shape and dtype)
    writes over that input (its stores are redirected to it). Only workspace values take part: graph
    inputs, outputs and constants are never overwritten, nor the values in ``keep``."""
    last_use: dict[str, int] = {}
    for k, low in enumerate(lowered):  # what kernels read (a fused kernel reads its producers' inputs)
        for n in low.inputs:
            last_use[n] = k
    fixed = outside_workspace(graph) | keep
    aliases: dict[str, str] = {}
    views: set[int] = set()

    def root(n: str) -> str:
        while n in aliases:
            n = aliases[n]
        return n

    def dies_here(n: str, k: int) -> bool:  # n and every value sharing its memory
        r = root(n)
        return r not in fixed and all(last_use.get(v, -1) <= k for v in [r, *aliases] if root(v) == r)

    for k, (node, low) in enumerate(zip(graph.nodes, lowered)):
        outs = [o for o in low.outputs if o]
        if len(low.outputs) != 1 or not outs or outs[0] in fixed:
            continue
        out_buf = low.kernel.params[len(low.inputs)]
        for name, buf in zip(low.inputs, low.kernel.params):
            if not dies_here(name, k) or buf.nbytes != out_buf.nbytes:
                continue
            if node.op in VIEWS and node.domain == "" and name == node.inputs[0]:
                aliases[outs[0]] = name
                views.add(k)
                break
            if writes_in_place(low, buf, out_buf):
                aliases[outs[0]] = name
                break
    return aliases, views


def writes_in_place(low: LoweredNode, source: Buffer, out: Buffer) -> bool:
    """Whether ``low``'s kernel may store into ``source`` instead of ``out`` (and if so, redirect its
    stores): no stages or locals, same dtype and shape, every store into ``out`` and every load of
    ``source`` at the very index being stored."""
    if low.scratch or source.dtype != out.dtype or source.shape != out.shape:
        return False
    stores = [s for s in statements(low.kernel.body) if isinstance(s, Store)]
    if any(isinstance(s, (Local, Invoke)) for s in statements(low.kernel.body)):
        return False
    if any(s.buffer is not out for s in stores):
        return False
    for s in statements(low.kernel.body):
        bounds = [s.start, s.stop] if isinstance(s, For) else []
        if any(isinstance(e, Load) and e.buffer is source for x in bounds for e in walk(x)):
            return False
    for s in stores:
        for e in [e for x in [*s.index, s.value] for e in walk(x)]:
            if isinstance(e, Load) and e.buffer is source and not _same_index(e.index, s.index):
                return False
    for s in stores:
        s.buffer = source
    return True


def _same_index(a: Sequence[Expr], b: Sequence[Expr]) -> bool:
    def same(x: Expr, y: Expr) -> bool:
        return x is y or (isinstance(x, Const) and isinstance(y, Const) and x.value == y.value)
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))




def canonical_text(kernel: Kernel) -> str:
    """The kernel's text without its name, its own names (loop variables, locals, params) renamed in
    order of appearance: equal exactly for kernels that compute the same thing on buffers of the same
    dtypes and shapes."""
    names = {b.name for b in kernel.params}
    for s in statements(kernel.body):
        if isinstance(s, For):
            names |= {s.var.name, *(v.name for v, _ in s.unpack)}
        elif isinstance(s, Local):
            names.add(s.buffer.name)
    text = format_kernel(kernel).split("(", 1)[1]
    renamed: dict[str, str] = {}

    def rename(word: re.Match[str]) -> str:
        name = word.group(0)
        return renamed.setdefault(name, f"#{len(renamed)}") if name in names else name

    return _WORD.sub(rename, text)


_WORD = re.compile(r"[\w.]+")
"""A run of name characters (and dots, so that no name matches inside a number like ``1.5e-06``): one
fixed pattern, where a pattern built from each kernel's names (fresh ones every compile) filled
``re``'s cache with a 10 KB entry per kernel."""


def collect_outputs(graph: Graph, produced: Mapping[str, np.ndarray],
                    feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The graph's outputs in order, for a program that computed ``produced`` (see
    ``tensoregg.runtime.signature.collect_outputs``; inputs and constants are passed through)."""
    return gather(graph.outputs, produced, ChainMap(dict(feeds), graph.initializers))
