"""Proofs of the fusion family against the fused ops' definitions (``tensoregg.ir.ops.fused``): a
fused op is act(base + Z), Z of the base output's shape (FusedConv) or broadcasting to it
(FusedMatMul; FusedGemm's C is Gemm's own). The base op (Conv of any group, attributes and
sizes; Gemm; MatMul) is the same term on both sides, so it is an opaque tensor of its output's rank,
as is the activation (an uninterpreted element function). Add and two-input Sum commute (IEEE
addition does: the exact sum, rounded), so both operand orders are proved."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import z3

from tensoregg.rules.fusion import FUSED_ACTIVATIONS
from tensoregg.testing.proofs import Proof
from tensoregg.testing.proofs.symbolic import (
    VALUE,
    Obligation,
    Sym,
    broadcast_shape,
    elementwise,
    same_program,
    source,
)

BASE_RANKS = {"conv": (3, 4, 5), "gemm": (2,), "matmul": (1, 2, 3, 4)}
"""The output ranks of each base op (Conv: 1 to 3 spatial axes)."""
_ADD = z3.Function("add", VALUE, VALUE, VALUE)


def add(u: z3.ExprRef, v: z3.ExprRef) -> z3.ExprRef:
    """Addition of two elements, commutative: its operands in one order."""
    return _ADD(u, v) if u.sexpr() <= v.sexpr() else _ADD(v, u)


def fused(base: Sym, z: Sym | None, act: bool, exact: bool) -> Sym:
    """The fused op's definition: act(base + Z), Z exactly base's shape (``exact``) or broadcasting
    to it; without Z, act(base); without act, base + Z."""
    out = base
    if z is not None:
        total = elementwise(add, [base, z])
        shape, _ = broadcast_shape([z.shape, base.shape])
        fits = ([z3.BoolVal(z.rank == base.rank), *[a == b for a, b in zip(z.shape, base.shape)]] if exact
                else [z3.BoolVal(len(shape) == base.rank), *[a == b for a, b in zip(shape, base.shape)]])
        out = Sym(total.shape, total.read, (*total.facts, *fits))
    return elementwise("act", [out]) if act else out


def _residuals(base: Sym, exact: bool) -> list[Sym]:
    """Z of each rank that may reach ``base``'s shape."""
    return [source("z", r) for r in ((base.rank,) if exact else range(base.rank + 1))]


def activation_joins(op: str, exact: bool, residual: bool) -> Iterator[Obligation]:
    """act(op(..)) = fused(..; act), and with ``residual`` act(fused(.., z)) = fused(.., z; act)."""
    for rank in BASE_RANKS[op]:
        base = source(op, rank)
        for z in [None, *_residuals(base, exact)] if residual else [None]:
            lhs = elementwise("act", [fused(base, z, False, exact)])
            where = f"rank {rank}" + (f", Z rank {z.rank}" if z is not None else "")
            yield from same_program(where, lhs, fused(base, z, True, exact))


def residual_joins(op: str, exact: bool, z_first: bool, premise: bool = True) -> Iterator[Obligation]:
    """op(..) + z (or z + op(..)) = fused(.., z), where z has op's shape (``exact``) or the sum has it
    (``premise``: False drops the first, so z may broadcast)."""
    for rank in BASE_RANKS[op]:
        base = source(op, rank)
        for z in _residuals(base, exact):
            lhs = elementwise(add, [z, base] if z_first else [base, z])
            premises = [z3.BoolVal(lhs.rank == base.rank), *[a == b for a, b in zip(lhs.shape, base.shape)]]
            if exact and premise:
                premises += [z3.BoolVal(z.rank == base.rank), *[a == b for a, b in zip(z.shape, base.shape)]]
            rhs = fused(base, z, False, exact)
            yield from same_program(f"rank {rank}, Z rank {z.rank}", lhs, rhs, premises)


def proofs() -> list[Proof]:
    out = []
    for act in FUSED_ACTIVATIONS:
        name = act.lower()
        for op, exact in (("conv", True), ("gemm", False), ("matmul", False)):
            out.append(Proof(f"{op}-{name}-fuse", f"by the fused op's definition, output ranks "
                             f"{BASE_RANKS[op]}", f"act-{op}", partial(activation_joins, op, exact, False)))
        for op, exact in (("conv", True), ("matmul", False)):
            out.append(Proof(f"fused-{op}-{name}", "by the fused op's definition, with and without Z",
                             f"fused-act-{op}", partial(activation_joins, op, exact, True)))
    for op, exact in (("conv", True), ("matmul", False)):
        for rule, z_first in ((f"{op}-add-fuse", False), (f"add-{op}-fuse", True), (f"{op}-sum-fuse", False),
                              (f"sum-{op}-fuse", True)):
            out.append(Proof(rule, "by the fused op's definition, every Z shape the premise admits",
                             f"residual-{op}-{z_first}", partial(residual_joins, op, exact, z_first)))
    return out
