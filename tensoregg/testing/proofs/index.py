"""Proofs of algebra's index rules: Transpose composition and identity, and chains of views
(Reshape, Flatten, Squeeze, Unsqueeze, Expand) that give back their input's shape.

Flatten, Squeeze and Unsqueeze are proved as what they are, row-major views to a shape of as many
elements (``symbolic.view``): a proof for every such shape covers the shapes each one computes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import z3

from tensoregg.rules.algebra import MAX_RANK, VIEWS
from tensoregg.testing.proofs import Proof
from tensoregg.testing.proofs.symbolic import (
    Obligation,
    Perm,
    Sym,
    axes,
    expand,
    expand_keeps_count,
    fresh,
    permutation,
    same_program,
    source,
    transpose,
    view,
)

VIEW_RANKS = range(0, 4)
"""Ranks of x, of each intermediate result and of Expand's shape input in the view-chain proofs."""

Compose = Callable[[Perm, Perm], Perm]


def compose(p: Perm, q: Perm) -> Perm:
    """transpose-compose's right side: the perm p∘q, output axis i being input axis p[q[i]] (its
    inverse q⁻¹∘p⁻¹)."""
    k = z3.Int("k")
    return z3.Lambda([k], p[0][q[0][k]]), z3.Lambda([k], q[1][p[1][k]])


def transpose_compose(rank: int, rhs: Compose = compose) -> list[Obligation]:
    """transpose(transpose(x, p), q) = transpose(x, rhs(p, q)) for permutations p, q of ``rank``."""
    x = source("x", rank)
    p, q = permutation(rank, "p"), permutation(rank, "q")
    return same_program(f"rank {rank}", transpose(transpose(x, p), q), transpose(x, rhs(p, q)))


def transpose_identity(rank: int) -> list[Obligation]:
    x = source("x", rank)
    return same_program(f"rank {rank}", transpose(x, axes(range(rank))), x)


def _apply(kind: str, t: Sym, rank: int) -> Sym:
    """``t`` through a view (``view``) or an Expand (``expand``) whose shape input has ``rank``."""
    shape = fresh("s", rank)
    return expand(t, shape) if kind == "expand" else view(t, shape)


def view_chain(kinds: tuple[str, ...]) -> Iterator[Obligation]:
    """``kinds`` applied to x in turn = x when the result has x's shape, for every rank of x, of each
    intermediate result and of each Expand's shape input in ``VIEW_RANKS``."""
    for ranks in _rank_choices(len(kinds) + 1):
        x = source("x", ranks[0], flat=True)
        t = x
        for kind, r in zip(kinds, ranks[1:]):
            t = _apply(kind, t, r)
        if t.rank != x.rank:
            continue  # the premise (the result has x's shape) cannot hold
        same_shape = [a == b for a, b in zip(t.shape, x.shape)]
        yield from same_program(f"ranks {ranks}", t, x, same_shape)


def expand_lemmas() -> Iterator[Obligation]:
    """``symbolic.expand_keeps_count`` for the ranks the view-chain proofs use."""
    for rank in VIEW_RANKS:
        for target_rank in VIEW_RANKS:
            yield expand_keeps_count(rank, target_rank)


def _chain_proof(kinds: tuple[str, ...]) -> Iterator[Obligation]:
    if "expand" in kinds:
        yield from expand_lemmas()
    yield from view_chain(kinds)


def _rank_choices(n: int) -> Iterator[tuple[int, ...]]:
    if n == 0:
        yield ()
        return
    for head in VIEW_RANKS:
        for rest in _rank_choices(n - 1):
            yield (head, *rest)


def _kind(op: str) -> str:
    return "expand" if op == "Expand" else "view"


def proofs() -> list[Proof]:
    out = []
    for rank in range(1, MAX_RANK + 1):
        out.append(Proof(f"transpose-compose-rank{rank}", f"for every pair of permutations of {rank} axes",
                         f"transpose-compose-{rank}", partial(transpose_compose, rank)))
        out.append(Proof(f"transpose-identity-rank{rank}", f"for rank {rank}", f"transpose-identity-{rank}",
                         partial(transpose_identity, rank)))
    ranks = f"ranks {VIEW_RANKS.start}..{VIEW_RANKS.stop - 1}"
    for op in VIEWS:
        kinds: tuple[str, ...] = (_kind(op),)
        out.append(Proof(f"{op.lower()}-same-shape-elim", f"{ranks}, every shape", f"views-{kinds}",
                         partial(_chain_proof, kinds)))
        for outer in VIEWS:
            kinds = (_kind(op), _kind(outer))
            out.append(Proof(f"{op.lower()}-{outer.lower()}-round-trip", f"{ranks}, every shape",
                             f"views-{kinds}", partial(_chain_proof, kinds)))
    return out
