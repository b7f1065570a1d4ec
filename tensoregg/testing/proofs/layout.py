"""Proofs of the layout family: every Transpose-sinking rule, ``f(T(x, p), ...) = T(f(x, ...), p)``,
for operand ranks up to ``RANK``, each perm explicit or absent (the axes reversed) where the rule
admits both, and each scalar-shaped operand of shape () or (1,). The element function is
uninterpreted, so one proof per operand form covers every op of that form (attributes and inputs
that are not element-wise data pass through unchanged on both sides)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import partial

import z3

from tensoregg.rules.layout import AXIS_OPS, BINARY, UNARY, VARIADIC, _kebab, forms
from tensoregg.testing.proofs import Proof
from tensoregg.testing.proofs.symbolic import (
    Obligation,
    Perm,
    Sym,
    along_axis,
    elementwise,
    permutation,
    same_program,
    source,
    transpose,
)

RANK = 4
"""Largest rank of a transposed operand in these proofs."""


def sink(form: str, empty_perm: bool = False) -> Iterator[Obligation]:
    """``f`` of operands in ``form`` (``t``: transposed by p, ``s``: shape () or (1,)) sinks p.
    ``empty_perm`` drops a premise of the forms with an ``s``: an explicit perm has an axis."""
    explicit_only = form.count("t") > 1  # the rule's premise: an explicit perm (p.length() == 1)
    for rank in range(RANK + 1):
        for explicit in (True, False)[:1 if explicit_only else 2]:
            if explicit and rank == 0 and "s" in form and not empty_perm:
                continue
            for scalars in itertools.product((0, 1), repeat=form.count("s")):
                yield from _sink_case(form, rank, explicit, scalars)


def _sink_case(form: str, rank: int, explicit: bool, scalars: tuple[int, ...]) -> list[Obligation]:
    p: Perm | None = permutation(rank, "p") if explicit else None
    data: list[Sym] = []
    premises = []
    ranks = iter(scalars)
    for k, kind in enumerate(form):
        t = source(f"in{k}", rank if kind == "t" else next(ranks))
        if kind == "s":
            premises += [d == 1 for d in t.shape]  # shape () or (1,)
        data.append(t)
    outer = [transpose(t, p) if kind == "t" else t for t, kind in zip(data, form)]
    lhs = elementwise("f", outer)
    rhs = transpose(elementwise("f", data), p, rank if explicit else None)
    where = (f"rank {rank}, {'explicit' if explicit else 'default'} perm"
             + (f", scalar ranks {scalars}" if scalars else ""))
    return same_program(where, lhs, rhs, premises)


def sink_axis() -> Iterator[Obligation]:
    """op(T(x, p), axis) = T(op(x, p[axis]), p), for ops along one axis (an explicit perm)."""
    for rank in range(1, RANK + 1):
        x, p, axis = source("x", rank), permutation(rank, "p"), z3.Int("axis")
        lhs = along_axis("g", transpose(x, p), axis)
        rhs = transpose(along_axis("g", x, p[0][(axis + rank) % rank]), p)
        yield from same_program(f"rank {rank}", lhs, rhs)


def proofs() -> list[Proof]:
    out = []
    for op in UNARY + BINARY + VARIADIC:
        for form in forms(op):
            suffix = "" if set(form) == {"t"} else "-" + form
            out.append(Proof(f"{_kebab(op)}-transpose-sink{suffix}",
                             f"operand form {form}, ranks up to {RANK}, every perm", f"sink-{form}",
                             partial(sink, form)))
    out += [Proof(f"{_kebab(op)}-transpose-sink", f"ranks 1..{RANK}, every perm and axis", "sink-axis",
                  sink_axis) for op in AXIS_OPS]
    return out
