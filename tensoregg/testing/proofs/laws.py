"""Proofs of algebra's element laws (signs, idempotent ops, exact cast round trips) for every dtype
their premises admit: integers as bit-vectors (wrap-around arithmetic), floats as IEEE
floating point in z3's FP theory (round to nearest even), compared bit for bit (NaN payloads aside:
z3 has one NaN), so -0 differs from +0. Binary laws also get their broadcasting proved: both sides
read their operands at the same indices and have one shape, for operand ranks up to ``BROADCAST_RANK``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import z3

from tensoregg.rules.algebra import ALL, EXACT_CASTS, INTEGERS, RELU_OF_ABS, SIGNED
from tensoregg.testing.proofs import Proof
from tensoregg.testing.proofs.symbolic import VALUE, Obligation, elementwise, same_program, source

BROADCAST_RANK = 4

_FLOAT_SORTS = {"float16": (5, 11), "bfloat16": (8, 8), "float32": (8, 24), "float64": (11, 53)}
RNE = z3.RNE()


def _bits(dtype: str) -> int:
    return int(dtype.removeprefix("u").removeprefix("int"))


def value(dtype: str, name: str) -> z3.ExprRef:
    """A z3 constant holding any value of ``dtype``."""
    if dtype == "bool":
        return z3.Bool(name)
    if dtype in _FLOAT_SORTS:
        return z3.FP(name, z3.FPSort(*_FLOAT_SORTS[dtype]))
    return z3.BitVec(name, _bits(dtype))


def _signed(dtype: str) -> bool:
    return not dtype.startswith("u")


def _zero(x: z3.ExprRef) -> z3.ExprRef:
    return z3.FPVal(0.0, x.sort()) if isinstance(x, z3.FPRef) else z3.BitVecVal(0, x.size())


def _commuted(a: z3.ExprRef, b: z3.ExprRef) -> tuple[z3.ExprRef, z3.ExprRef]:
    """Float + and * take their operands in one order: IEEE defines each as the exact result
    rounded, so they commute; z3 cannot bit-blast that in time (float16 takes it 20 s), so proofs
    take it as an axiom."""
    a, b = z3.simplify(a), z3.simplify(b)
    return (a, b) if a.sexpr() <= b.sexpr() else (b, a)


def float_axioms() -> Iterator[Obligation]:
    """What ``Ops.sub`` takes as IEEE's definition, proved in z3's semantics: a - b = a + (-b)."""
    for dtype in _FLOAT_SORTS:
        a, b = value(dtype, "a"), value(dtype, "b")
        yield f"{dtype}: a - b = a + (-b)", z3.fpSub(RNE, a, b) == z3.fpAdd(RNE, a, z3.fpNeg(b))


@dataclass(frozen=True)
class Ops:
    """The reference interpreter's element semantics (numpy) of one dtype."""

    dtype: str

    def neg(self, x: z3.ExprRef) -> z3.ExprRef:
        return z3.fpNeg(x) if isinstance(x, z3.FPRef) else -x

    def add(self, a: z3.ExprRef, b: z3.ExprRef) -> z3.ExprRef:
        return z3.fpAdd(RNE, *_commuted(a, b)) if isinstance(a, z3.FPRef) else a + b

    def sub(self, a: z3.ExprRef, b: z3.ExprRef) -> z3.ExprRef:
        """Floats: a + (-b), which is IEEE's definition (``float_axioms`` checks it)."""
        return self.add(a, self.neg(b)) if isinstance(a, z3.FPRef) else a - b

    def mul(self, a: z3.ExprRef, b: z3.ExprRef) -> z3.ExprRef:
        return z3.fpMul(RNE, *_commuted(a, b)) if isinstance(a, z3.FPRef) else a * b

    def abs(self, x: z3.ExprRef) -> z3.ExprRef:
        """np.abs: wraps at the signed minimum (|-128| is -128 in int8)."""
        if isinstance(x, z3.FPRef):
            return z3.fpAbs(x)
        return z3.If(x < 0, -x, x) if _signed(self.dtype) else x

    def relu(self, x: z3.ExprRef) -> z3.ExprRef:
        """np.maximum(x, 0): NaN stays, -0 becomes +0."""
        if isinstance(x, z3.FPRef):
            return z3.If(z3.fpIsNaN(x), x, z3.If(z3.fpGT(x, _zero(x)), x, _zero(x)))
        return z3.If(x > 0, x, _zero(x))


def cast(x: z3.ExprRef, src: str, dst: str) -> z3.ExprRef:
    """numpy's astype from ``src`` to ``dst`` (floats to integers: toward zero, in range)."""
    if src == dst:
        return x
    if dst == "bool":
        return z3.Not(z3.fpIsZero(x)) if src in _FLOAT_SORTS else x != 0
    if src == "bool":
        one = value(dst, "unused")
        one = z3.FPVal(1.0, one.sort()) if dst in _FLOAT_SORTS else z3.BitVecVal(1, _bits(dst))
        return z3.If(x, one, _zero(one))
    if dst in _FLOAT_SORTS:
        sort = z3.FPSort(*_FLOAT_SORTS[dst])
        if src in _FLOAT_SORTS:
            return z3.fpFPToFP(RNE, x, sort)
        return (z3.fpSignedToFP if _signed(src) else z3.fpUnsignedToFP)(RNE, x, sort)
    width = _bits(dst)
    if src in _FLOAT_SORTS:
        return (z3.fpToSBV if _signed(dst) else z3.fpToUBV)(z3.RTZ(), x, z3.BitVecSort(width))
    grow = width - _bits(src)
    if grow > 0:
        return (z3.SignExt if _signed(src) else z3.ZeroExt)(grow, x)
    return z3.Extract(width - 1, 0, x) if grow < 0 else x


Law = Callable[[Ops, Sequence[z3.ExprRef]], z3.ExprRef]


@dataclass(frozen=True)
class ElementLaw:
    """``lhs(ops, xs) = rhs(ops, xs)`` for every dtype in ``dtypes``; ``operands``: the order the
    right side's broadcast takes the left side's operands in (binary laws)."""

    lhs: Law
    rhs: Law
    dtypes: tuple[str, ...]
    arity: int = 1
    operands: tuple[int, ...] = (0, 1)

    def obligations(self) -> Iterator[Obligation]:
        for dtype in self.dtypes:
            xs = [value(dtype, n) for n in "ab"[:self.arity]]
            ops = Ops(dtype)
            yield f"{dtype}: values agree", self.lhs(ops, xs) == self.rhs(ops, xs)
        if any(d in _FLOAT_SORTS for d in self.dtypes):
            yield from float_axioms()
        if self.arity == 2:
            yield from broadcast_order(self.operands)


def broadcast_order(order: tuple[int, ...]) -> Iterator[Obligation]:
    """Broadcasting f(a, b) and g(operands in ``order``): one shape, and each element reads a and b
    at the same indices, for ranks of a and b up to ``BROADCAST_RANK``."""
    for ra in range(BROADCAST_RANK + 1):
        for rb in range(BROADCAST_RANK + 1):
            a, b = source("a", ra), source("b", rb)
            pair = z3.Function("pair", VALUE, VALUE, VALUE)
            lhs = elementwise(pair, [a, b])
            operands = [(a, b)[k] for k in order]
            rhs = elementwise(lambda *v: pair(*[v[order.index(k)] for k in (0, 1)]), operands)
            yield from same_program(f"ranks {ra}, {rb}", lhs, rhs)


LAWS: dict[str, ElementLaw] = {
    "relu-idempotent": ElementLaw(lambda o, x: o.relu(o.relu(x[0])), lambda o, x: o.relu(x[0]), SIGNED),
    "abs-idempotent": ElementLaw(lambda o, x: o.abs(o.abs(x[0])), lambda o, x: o.abs(x[0]), ALL),
    "relu-of-abs": ElementLaw(lambda o, x: o.relu(o.abs(x[0])), lambda o, x: o.abs(x[0]), RELU_OF_ABS),
    "neg-involution": ElementLaw(lambda o, x: o.neg(o.neg(x[0])), lambda o, x: x[0], ALL),
    "sub-of-neg": ElementLaw(lambda o, x: o.sub(x[0], o.neg(x[1])), lambda o, x: o.add(x[0], x[1]),
                             ALL, 2),
    "add-of-neg": ElementLaw(lambda o, x: o.add(x[0], o.neg(x[1])), lambda o, x: o.sub(x[0], x[1]),
                             ALL, 2),
    "neg-plus": ElementLaw(lambda o, x: o.add(o.neg(x[0]), x[1]), lambda o, x: o.sub(x[1], x[0]),
                           ALL, 2, (1, 0)),
    "mul-of-negs": ElementLaw(lambda o, x: o.mul(o.neg(x[0]), o.neg(x[1])), lambda o, x: o.mul(x[0], x[1]),
                              ALL, 2),
    "neg-of-sub": ElementLaw(lambda o, x: o.neg(o.sub(x[0], x[1])), lambda o, x: o.sub(x[1], x[0]),
                             INTEGERS, 2, (1, 0)),
    "abs-of-neg": ElementLaw(lambda o, x: o.abs(o.neg(x[0])), lambda o, x: o.abs(x[0]), SIGNED),
}
"""Each algebra element law with the dtypes its op and premises admit (ops without a dtype premise:
the dtypes the op accepts)."""


def cast_round_trips(pairs: Sequence[tuple[str, str]] = EXACT_CASTS) -> Iterator[Obligation]:
    """cast(cast(x, mid), src) = x for each (src, mid) in ``pairs``."""
    for src, mid in pairs:
        x = value(src, "x")
        yield f"{src} -> {mid} -> {src}", cast(cast(x, src, mid), mid, src) == x


def proofs() -> list[Proof]:
    out = [Proof(name, f"bit for bit in {', '.join(law.dtypes)}", f"law-{name}", law.obligations)
           for name, law in LAWS.items()]
    out.append(Proof("cast-round-trip", "for every (src, mid) the premise admits", "cast-round-trip",
                     partial(cast_round_trips, EXACT_CASTS)))
    return out
