"""Proofs of the parallel family's bias merges: ``p_k + b_k`` over the ``n`` parts of one Split along
the last axis = part k of ``Split(m + Concat(b_1..b_n))``, for m of rank 1..``RANK``, every size, each
bias order. (The MatMul/Gemm/Conv merges contract over an axis; they stay property-tested.)"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from tensoregg.rules.parallel import WAYS
from tensoregg.testing.proofs import Proof
from tensoregg.testing.proofs.symbolic import (
    Obligation,
    concat,
    elementwise,
    same_program,
    source,
    split_part,
)

RANK = 3


def merge_split_biases(n: int, bias_first: bool, reverse: bool = False) -> Iterator[Obligation]:
    """The premises: every part and sum has the shape of the first sum, each b_k is 1-D as wide as a
    part, and the Split is along the last axis. ``reverse`` concatenates the biases the wrong way round."""
    for rank in range(1, RANK + 1):
        m = source("m", rank)
        last = rank - 1
        biases = [source(f"b{k}", 1) for k in range(n)]
        parts = [split_part(m, last, n, k) for k in range(n)]
        sums = [elementwise("add", [b, p] if bias_first else [p, b]) for p, b in zip(parts, biases)]
        wide = concat(biases[::-1] if reverse else biases, 0)
        merged = elementwise("add", [wide, m] if bias_first else [m, wide])
        shape = sums[0].shape
        premises = [a == b for t in sums + parts for a, b in zip(t.shape, shape)]
        premises += [b.shape[0] == shape[last] for b in biases]
        premises += [f for t in parts + biases for f in t.facts]
        for k in range(n):
            rhs = split_part(merged, last, n, k)
            yield from same_program(f"rank {rank}, part {k}", sums[k], rhs, premises)


def proofs() -> list[Proof]:
    return [Proof(f"add-merge-split-{n}{'-bias-first' if first else ''}", f"ranks 1..{RANK}, every size",
                  f"merge-split-{n}-{first}", partial(merge_split_biases, n, first))
            for n in WAYS for first in (True, False)]
