"""Loop IR: kernels as loop nests of loads and stores over buffers.

A :class:`Kernel` takes buffers (inputs, outputs, intermediate stages; all dense row-major) and runs
statements: :class:`For` loops over ``[start, stop)`` of i64 index variables, :class:`Store` of a
scalar :class:`~tensoregg.ir.compute.Expr` into a buffer element, :class:`Local` stack buffers
(accumulators, packed tiles) that live for their body, and :class:`Invoke` of a target intrinsic (a
GEMM micro-kernel: an inner tile tensorized). Expressions are those of compute definitions, without
:class:`~tensoregg.ir.compute.Reduce` (lowering turns reductions into loops). An index may also
address a buffer as flat memory: zeros on every axis but the last, which holds the flat offset
(:func:`flat`).

GPU kernels use the same statements: a ``block`` loop runs its iterations as a grid's blocks, a
``thread`` loop inside it as each block's threads (all at once, in lockstep only between barriers); a
:class:`Local` of scope ``shared`` directly inside a block loop is one buffer per block that its
threads share, and a :class:`Barrier` makes every thread of the block wait until all have reached it
(what they stored before it is what the others load after it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tensoregg.ir.compute import INDEX, Buffer, Call, Const, Expr, Var, const
from tensoregg.ir.compute.expr import BOUND, walk


class Stmt:
    """A loop IR statement."""


@dataclass(eq=False)
class For(Stmt):
    var: Var
    start: Expr
    stop: Expr
    body: list[Stmt]
    kind: str = "serial"
    """``serial``, ``parallel`` (iterations independent: the target may split them over threads), or on
    a GPU ``block`` (the grid's blocks) and ``thread`` (a block's threads; only directly inside a
    block loop, or inside the shared locals it declares there)."""
    unpack: tuple[tuple[Var, int], ...] = ()
    """When set, ``var`` is a fused index over these (variable, extent) axes, outermost first: each
    variable is ``var`` read in that mixed radix (``stop`` is the product of the extents)."""


@dataclass(eq=False)
class Store(Stmt):
    buffer: Buffer
    index: tuple[Expr, ...]
    value: Expr
    contract: bool = False
    """Float multiplies and adds in ``value`` may fuse into FMAs (one rounding instead of two): set on
    a reduction's accumulate, where it is what BLAS does; elsewhere values round as numpy's do."""


@dataclass(eq=False)
class Local(Stmt):
    """``buffer`` allocated on the stack (a GPU thread's registers) for the duration of ``body``; of
    scope ``shared``, once per GPU block, shared by its threads."""

    buffer: Buffer
    body: list[Stmt]
    scope: str = "local"


@dataclass(eq=False)
class Barrier(Stmt):
    """Every thread of a GPU block waits here until all of them have come (``__syncthreads()``): what
    they stored into shared memory before, the others may load after. Threads must reach it together
    (not under a condition or loop bound that differs between them)."""


@dataclass(eq=False)
class Ref:
    """The address of element ``offset`` (flat, row-major) of ``buffer``."""

    buffer: Buffer
    offset: Expr

    def __repr__(self) -> str:
        return f"&{self.buffer.name}[{self.offset!r}]"


@dataclass(eq=False)
class Invoke(Stmt):
    """A call of the target intrinsic ``intrinsic`` (e.g. a ``MicroKernel``) on addresses and i64
    values. It reads and writes only what its definition says, within the addressed buffers."""

    intrinsic: Any
    args: tuple[Ref | Expr, ...]
    work: int = 1
    """The stores it stands for (multiply-adds for a micro-kernel), for :func:`work`."""

    @property
    def refs(self) -> list[Ref]:
        return [a for a in self.args if isinstance(a, Ref)]


def flat(buf: Buffer, offset: Expr) -> tuple[Expr, ...]:
    """An index addressing element ``offset`` of ``buf`` as flat memory (see the module docstring)."""
    return (*(const(0, INDEX) for _ in buf.shape[:-1]), offset)


def offset(buf: Buffer, index: Sequence[Expr]) -> Expr:
    """The flat (row-major) offset of ``buf``'s element at ``index``; an index of its leading axes
    only gives where that block of ``buf`` starts."""
    strides: list[int] = []
    stride = 1
    for d in reversed(buf.shape):
        strides.insert(0, stride)
        stride *= d
    terms = [i if s == 1 else i * const(s, INDEX) for i, s in zip(index, strides)]
    return sum(terms[1:], terms[0]) if terms else const(0, INDEX)


@dataclass(eq=False)
class Kernel:
    name: str
    params: list[Buffer]
    """Every buffer the kernel reads or writes, in argument order."""
    body: list[Stmt]
    outputs: list[Buffer] = field(default_factory=list)
    """The params it writes (outputs and stages)."""


def statements(body: list[Stmt]) -> Iterator[Stmt]:
    """Every statement in ``body``, loops' and locals' bodies included, in program order."""
    for s in body:
        yield s
        if isinstance(s, (For, Local)):
            yield from statements(s.body)


def bounds_checked(kernel: Kernel) -> bool:
    """Whether ``kernel`` computes a ``bound`` index (one that may be out of range: a fault to report)."""
    roots: list[Expr] = []
    for s in statements(kernel.body):
        if isinstance(s, Store):
            roots += [s.value, *s.index]
        elif isinstance(s, For):
            roots += [s.start, s.stop]
    return any(isinstance(e, Call) and e.fn == BOUND for root in roots for e in walk(root))


def work(body: list[Stmt]) -> int:
    """How many stores ``body`` executes (loops with bounds known at compile time; a bound that is
    an expression counts as its constant part's upper limit, or 1)."""
    def extent(s: For) -> int:
        if isinstance(s.stop, Const) and isinstance(s.start, Const):
            return max(0, int(s.stop.value) - int(s.start.value))
        consts = [a.value for a in (s.stop.args if isinstance(s.stop, Call) else ()) if isinstance(a, Const)]
        return int(min(consts)) if consts else 1

    total = 0
    for s in body:
        if isinstance(s, For):
            total += extent(s) * work(s.body)
        elif isinstance(s, Local):
            total += work(s.body)
        elif isinstance(s, Store):
            total += 1
        elif isinstance(s, Invoke):
            total += s.work
    return total


def format_kernel(kernel: Kernel) -> str:
    """The kernel as indented text, one statement per line."""
    params = ", ".join(f"{b.name}: {b.dtype}{list(b.shape)}" for b in kernel.params)
    lines = [f"kernel {kernel.name}({params}) {{"]

    def emit(body: list[Stmt], depth: int) -> None:
        pad = "  " * depth
        for s in body:
            if isinstance(s, For):
                tag = "" if s.kind == "serial" else f" {s.kind}"
                fused = f" = ({', '.join(f'{v!r}<{n}' for v, n in s.unpack)})" if s.unpack else ""
                lines.append(f"{pad}for{tag} {s.var!r}{fused} in [{s.start!r}, {s.stop!r}):")
                emit(s.body, depth + 1)
            elif isinstance(s, Local):
                scope = "" if s.scope == "local" else f" {s.scope}"
                lines.append(f"{pad}local{scope} {s.buffer.name}: {s.buffer.dtype}{list(s.buffer.shape)}")
                emit(s.body, depth + 1)
            elif isinstance(s, Store):
                index = ", ".join(map(repr, s.index))
                note = "  # contract" if s.contract else ""
                lines.append(f"{pad}{s.buffer.name}[{index}] = {s.value!r}{note}")
            elif isinstance(s, Invoke):
                name = getattr(s.intrinsic, "name", s.intrinsic)
                lines.append(f"{pad}invoke {name}({', '.join(map(repr, s.args))})")
            elif isinstance(s, Barrier):
                lines.append(f"{pad}barrier")
    emit(kernel.body, 1)
    lines.append("}")
    return "\n".join(lines)
