"""What the interpreter proves about a kernel before running it: which loops may run vectorized (all
their iterations at once, statement by statement) and which stores need no check for two lanes
writing one element.

A ``parallel`` loop's iterations are independent by definition, and so are a GPU kernel's blocks and
a block's threads (what they share, the race checker watches). A serial loop's are when nothing it
stores (but locals declared inside it, which each iteration has its own of) is touched by two of
its iterations: every access to such a buffer in its body is at one index, and that index separates
the loop's iterations. An index separates a loop when each of the loop's variables appears in an
axis that is injective in the variables bound inside the loop: a linear combination of them (plus
terms invariant in the loop) whose coefficients, in increasing order, each exceed the reach of the
smaller ones over their ranges (a mixed radix). The interpreter checks at run time that every index
lies within its axis (within the whole buffer for a flat index), so distinct coordinates are distinct
elements.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from tensoregg.ir.compute import Buffer, Call, Const, Expr, Load, Var, walk
from tensoregg.ir.loops import Barrier, For, Invoke, Kernel, Local, Ref, Stmt, Store

Interval = tuple[float, float]
"""Inclusive bounds (-inf/inf where unknown)."""
UNKNOWN: Interval = (-math.inf, math.inf)


@dataclass
class Linear:
    """An index expression as ``const + sum(coef * atom)``; an atom is a Var or an expression that is
    not linear (a division, a min, a load...)."""

    terms: list[tuple[int, Expr]] = field(default_factory=list)
    const: int = 0


def linear(e: Expr) -> Linear:
    """``e`` (integer-valued) decomposed as a linear form (equal terms merged, zero ones dropped)."""
    coefs: dict[int, list] = {}
    const = 0

    def add(x: Expr, scale: int) -> None:
        nonlocal const
        if isinstance(x, Const) and x.dtype.kind in "iu":
            const += scale * int(x.value)
        elif isinstance(x, Call) and x.fn in ("add", "sub") and len(x.args) == 2:
            add(x.args[0], scale)
            add(x.args[1], scale if x.fn == "add" else -scale)
        elif isinstance(x, Call) and x.fn == "neg":
            add(x.args[0], -scale)
        elif isinstance(x, Call) and x.fn == "mul" and any(_is_int_const(a) for a in x.args):
            k, other = (x.args[0], x.args[1]) if _is_int_const(x.args[0]) else (x.args[1], x.args[0])
            assert isinstance(k, Const)
            add(other, scale * int(k.value))
        else:
            coefs.setdefault(id(x), [0, x])[0] += scale
    add(e, 1)
    return Linear([(c, x) for c, x in coefs.values() if c], const)


def _is_int_const(e: Expr) -> bool:
    return isinstance(e, Const) and e.dtype.kind in "iu"


def free_vars(e: Expr) -> set[int]:
    """The ids of the variables ``e`` reads."""
    return {id(x) for x in walk(e) if isinstance(x, Var)}


def has_load(e: Expr) -> bool:
    return any(isinstance(x, Load) for x in walk(e))


def interval(e: Expr, ranges: Mapping[int, Interval]) -> Interval:
    """Bounds of ``e`` given those of the variables (``ranges``, by id)."""
    if isinstance(e, Const) and e.dtype.kind in "iu":
        return (int(e.value), int(e.value))
    if isinstance(e, Var):
        return ranges.get(id(e), UNKNOWN)
    if not (isinstance(e, Call) and len(e.args) == 2 and e.fn in ("add", "sub", "mul", "min", "max", "div")):
        return UNKNOWN
    (a0, a1), (b0, b1) = (interval(x, ranges) for x in e.args)
    if e.fn == "add":
        return (a0 + b0, a1 + b1)
    if e.fn == "sub":
        return (a0 - b1, a1 - b0)
    if e.fn == "min":
        return (min(a0, b0), min(a1, b1))
    if e.fn == "max":
        return (max(a0, b0), max(a1, b1))
    if e.fn == "mul" and b0 == b1 and math.isfinite(b0):
        return (a0 * b0, a1 * b0) if b0 >= 0 else (a1 * b0, a0 * b0)
    if e.fn == "div" and b0 == b1 and b0 > 0:  # truncation toward zero is monotonic
        return (_trunc_div(a0, b0), _trunc_div(a1, b0))
    return UNKNOWN


def _trunc_div(a: float, b: float) -> float:
    return a if not math.isfinite(a) else int(a / b) if abs(a) < 2 ** 52 else -math.inf if a < 0 else math.inf


def loop_ranges(body: Sequence[Stmt], ranges: dict[int, Interval] | None = None) -> dict[int, Interval]:
    """Bounds of every loop variable bound in ``body`` (fused loops' parts included; a variable that
    several loops bind, over all of them)."""
    ranges = {} if ranges is None else ranges

    def bound(v: Var, lo: float, hi: float) -> None:
        old = ranges.get(id(v), (lo, hi))
        ranges[id(v)] = (min(old[0], lo), max(old[1], hi))

    for s in body:
        if isinstance(s, For):
            lo, hi = interval(s.start, ranges)[0], interval(s.stop, ranges)[1] - 1
            bound(s.var, lo, hi)
            below = 1
            for v, n in reversed(s.unpack[1:]):
                bound(v, 0, n - 1)
                below *= n
            if s.unpack:  # the outermost part is the fused index divided by the others' extents
                bound(s.unpack[0][0], _trunc_div(lo, below), _trunc_div(hi, below))
            loop_ranges(s.body, ranges)
        elif isinstance(s, Local):
            loop_ranges(s.body, ranges)
    return ranges


def axes(buf: Buffer, index: Sequence[Expr]) -> list[tuple[Expr, int, int]]:
    """(index expression, extent, stride) per axis that ``index`` addresses ``buf`` by: one axis
    spanning the whole buffer for a flat index (zeros on every axis but the last)."""
    if len(index) > 1 and all(_is_int_const(i) and i.value == 0 for i in index[:-1]):  # type: ignore[attr-defined]
        return [(index[-1], buf.size, 1)]
    out: list[tuple[Expr, int, int]] = []
    stride = 1
    for i, d in reversed(list(zip(index, buf.shape))):
        out.insert(0, (i, d, stride))
        stride *= d
    return out


def separates(buf: Buffer, index: Sequence[Expr], loop: For, inside: set[int],
              ranges: Mapping[int, Interval]) -> bool:
    """Whether distinct iterations of ``loop`` access distinct elements through ``index`` (see the
    module docstring); ``inside`` holds the ids of the variables bound by ``loop`` and within it."""
    covered: set[int] = set()
    for e, _, _ in axes(buf, index):
        form = linear(e)
        radix: list[tuple[int, float]] = []
        clean = True
        for coef, atom in form.terms:
            if isinstance(atom, Var):
                if id(atom) in inside:
                    lo, hi = ranges.get(id(atom), UNKNOWN)
                    radix.append((abs(coef), hi - lo))
            elif has_load(atom) or free_vars(atom) & inside:
                clean = False
        if clean and _mixed_radix(radix):
            covered |= {id(a) for c, a in form.terms if isinstance(a, Var) and id(a) in inside}
    own = [v for v, _ in loop.unpack] if loop.unpack else [loop.var]
    return all(id(v) in covered for v in own)


def _mixed_radix(terms: list[tuple[int, float]]) -> bool:
    reach = 0.0
    for coef, span in sorted(terms):  # a zero span (one value) before a wider one of the same coefficient
        if coef <= reach:
            return False
        reach += coef * max(span, 0)
    return True


def same(a: Expr, b: Expr, memory: Mapping[int, object]) -> bool:
    """Whether ``a`` and ``b`` compute the same value by the same expression (loads of one memory)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, Const) and isinstance(b, Const):
        return a.dtype == b.dtype and a.value == b.value
    if isinstance(a, Load) and isinstance(b, Load):
        return (key(a.buffer, memory) == key(b.buffer, memory) and a.buffer.shape == b.buffer.shape
                and same_index(a.index, b.index, memory))
    if isinstance(a, Call) and isinstance(b, Call):
        return (a.fn == b.fn and a.dtype == b.dtype and len(a.args) == len(b.args)
                and all(same(x, y, memory) for x, y in zip(a.args, b.args)))
    return False


def same_index(a: Sequence[Expr], b: Sequence[Expr], memory: Mapping[int, object]) -> bool:
    return len(a) == len(b) and all(same(x, y, memory) for x, y in zip(a, b))


def key(buf: Buffer, memory: Mapping[int, object]) -> object:
    """What identifies ``buf``'s memory: params that share bytes share a key."""
    return memory.get(id(buf), id(buf))


def _exprs(s: Stmt) -> Iterator[Expr]:
    """The expressions ``s`` itself evaluates (not those of statements inside it)."""
    if isinstance(s, For):
        yield from (s.start, s.stop)
    elif isinstance(s, Store):
        yield from (*s.index, s.value)
    elif isinstance(s, Invoke):
        yield from (a.offset if isinstance(a, Ref) else a for a in s.args)


def _within(body: Sequence[Stmt]) -> Iterator[tuple[Stmt, list[Stmt]]]:
    """Every statement in ``body`` with the statements that enclose it there (outermost first)."""
    for s in body:
        yield s, []
        if isinstance(s, (For, Local)):
            for inner, around in _within(s.body):
                yield inner, [s, *around]


def accesses(body: Sequence[Stmt]) -> Iterator[tuple[Buffer, tuple[Expr, ...], bool]]:
    """(buffer, index, is a store) of every load and store in ``body``."""
    for s, _ in _within(body):
        for e in _exprs(s):
            for x in walk(e):
                if isinstance(x, Load):
                    yield x.buffer, x.index, False
        if isinstance(s, Store):
            yield s.buffer, s.index, True


@dataclass
class Plan:
    """The decisions for one kernel: the loops to run vectorized and the stores proven to write
    distinct elements from distinct lanes (both by statement id)."""

    vectorized: set[int]
    proven: set[int]


GPU_KINDS = ("block", "thread")
"""The loop kinds of a GPU kernel: vectorized always, a block's threads in lockstep."""


def plan_kernel(kernel: Kernel, memory: Mapping[int, object]) -> Plan:
    """Decide which of ``kernel``'s loops run vectorized (``memory``: param id -> memory key). Block
    and thread loops always do; inside a thread loop, a loop whose bounds are not constants (they may
    differ between threads) or that holds a barrier never does: each thread runs its own iterations."""
    ranges = loop_ranges(kernel.body)
    vectorized: set[int] = set()
    for s, around in _within(kernel.body):
        if not isinstance(s, For):
            continue
        if s.kind in GPU_KINDS or s.kind == "parallel":
            vectorized.add(id(s))
        elif any(isinstance(x, For) and x.kind == "thread" for x in around) and (
                not (isinstance(s.start, Const) and isinstance(s.stop, Const))
                or any(isinstance(x, Barrier) for x, _ in _within(s.body))):
            continue
        elif _independent(s, memory, ranges):
            vectorized.add(id(s))
    proven: set[int] = set()
    for s, around in _within(kernel.body):
        if isinstance(s, Store) and all(_private_or_separated(s, loop, around, ranges)
                                        for loop in around if id(loop) in vectorized):
            proven.add(id(s))
    return Plan(vectorized, proven)


def _bound_inside(loop: For) -> set[int]:
    out = {id(loop.var), *(id(v) for v, _ in loop.unpack)}
    for s, _ in _within(loop.body):
        if isinstance(s, For):
            out |= {id(s.var), *(id(v) for v, _ in s.unpack)}
    return out


def _locals_inside(loop: For) -> set[int]:
    return {id(s.buffer) for s, _ in _within(loop.body) if isinstance(s, Local)}


def _private_or_separated(s: Store, loop: Stmt, around: list[Stmt], ranges: Mapping[int, Interval]) -> bool:
    assert isinstance(loop, For)
    inner = around[around.index(loop) + 1:]
    if any(isinstance(x, Local) and x.buffer is s.buffer for x in inner):
        return True
    return separates(s.buffer, s.index, loop, _bound_inside(loop), ranges)


def _independent(loop: For, memory: Mapping[int, object], ranges: Mapping[int, Interval]) -> bool:
    """Whether a serial loop's iterations touch no element another one stores (module docstring)."""
    if any(isinstance(s, Invoke) for s, _ in _within(loop.body)):
        return False
    private = _locals_inside(loop)
    found = list(accesses(loop.body))
    stored = {key(b, memory) for b, _, is_store in found if is_store and id(b) not in private}
    inside = _bound_inside(loop)
    for k in stored:
        touches = [(b, i) for b, i, _ in found if key(b, memory) == k]
        first_buf, first = touches[0]
        if not all(b.shape == first_buf.shape and same_index(i, first, memory) for b, i in touches[1:]):
            return False
        if not separates(first_buf, first, loop, inside, ranges):
            return False
    return True
