"""Proofs of the parallel family: ``p_k + b_k`` over the ``n`` parts of one Split along the last axis
= part k of ``Split(m + Concat(b_1..b_n))``, each bias order; ``op(x, W_k[, C_k])`` = part k of
``op(x, Concat(W)[, Concat(C)])`` for MatMul (x of rank 1..3, W of rank 2..3, batch axes broadcast)
and Gemm (every transA/transB, C of rank 1..2 or none), on the output's channels for Conv (group 1,
1 to 3 spatial axes, with or without B); every size."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from tensoregg.rules.parallel import WAYS
from tensoregg.testing.proofs import Proof
from tensoregg.testing.proofs.symbolic import (
    Obligation,
    Sym,
    concat,
    conv,
    elementwise,
    gemm,
    matmul,
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


def _merged(n: int, ys: list[Sym], merged: Sym, axis: int, premises: list,
            where: str) -> Iterator[Obligation]:
    """Each y_k (all of one shape, as the rule's premise has it) = part k of ``merged`` on ``axis``."""
    premises = premises + [a == b for y in ys for a, b in zip(y.shape, ys[0].shape)]
    for k in range(n):
        yield from same_program(f"{where}, part {k}", ys[k], split_part(merged, axis, n, k), premises)


def _same_shapes(ts: list[Sym]) -> list:
    return [a == b for t in ts for a, b in zip(t.shape, ts[0].shape)]


def merge_matmuls(n: int) -> Iterator[Obligation]:
    """x @ W_k = part k of x @ Concat(W, last axis) on the output's last axis."""
    for rx in (1, 2, 3):
        for rw in (2, 3):
            x, ws = source("x", rx), [source(f"w{k}", rw) for k in range(n)]
            ys = [matmul(x, w) for w in ws]
            merged = matmul(x, concat(ws, rw - 1))
            yield from _merged(n, ys, merged, ys[0].rank - 1, _same_shapes(ws), f"ranks {rx}, {rw}")


def merge_gemms(n: int, bias: bool, row_axis: bool = False) -> Iterator[Obligation]:
    """Gemm(x, W_k, C_k) = part k of Gemm(x, Concat(W) on B's column axis, Concat(C, last axis)) on
    axis 1, where C's last axis is as wide as the output's columns. ``row_axis`` joins the W on
    B's row axis instead (wrong)."""
    for trans_a in (False, True):
        for trans_b in (False, True):
            for rc in ((1, 2) if bias else (0,)):
                x, ws = source("x", 2), [source(f"w{k}", 2) for k in range(n)]
                cs = [source(f"c{k}", rc) for k in range(n)] if bias else [None] * n
                ys = [gemm(x, w, c, trans_a, trans_b) for w, c in zip(ws, cs)]
                wide_c = concat([c for c in cs if c is not None], rc - 1) if bias else None
                merged = gemm(x, concat(ws, int(trans_b == row_axis)), wide_c, trans_a, trans_b)
                premises = _same_shapes(ws)
                if bias:
                    premises += _same_shapes([c for c in cs if c is not None])
                    premises += [c.shape[-1] == ys[0].shape[1] for c in cs if c is not None]
                where = f"transA {trans_a:d}, transB {trans_b:d}, C rank {rc}"
                yield from _merged(n, ys, merged, 1, premises, where)


def merge_convs(n: int, bias: bool) -> Iterator[Obligation]:
    """Conv(x, W_k, B_k) = channel part k of Conv(x, Concat(W, 0), Concat(B, 0)), group 1."""
    for spatial in (1, 2, 3):
        x, ws = source("x", 2 + spatial), [source(f"w{k}", 2 + spatial) for k in range(n)]
        bs = [source(f"b{k}", 1) for k in range(n)] if bias else [None] * n
        ys = [conv(x, w, b) for w, b in zip(ws, bs)]
        merged = conv(x, concat(ws, 0), concat([b for b in bs if b is not None], 0) if bias else None)
        premises = _same_shapes(ws) + (_same_shapes([b for b in bs if b is not None]) if bias else [])
        yield from _merged(n, ys, merged, 1, premises, f"{spatial} spatial axes")


def proofs() -> list[Proof]:
    return [Proof(f"add-merge-split-{n}{'-bias-first' if first else ''}", f"ranks 1..{RANK}, every size",
                  f"merge-split-{n}-{first}", partial(merge_split_biases, n, first))
            for n in WAYS for first in (True, False)] + [
        Proof(f"matmul-merge-parallel-{n}", "x of rank 1..3, W of rank 2..3, every size",
              f"merge-matmul-{n}", partial(merge_matmuls, n)) for n in WAYS] + [
        Proof(f"gemm-merge-parallel-{n}{'' if bias else '-nobias'}", "every transA/transB, C of rank 1..2",
              f"merge-gemm-{n}-{bias}", partial(merge_gemms, n, bias))
        for n in WAYS for bias in (True, False)] + [
        Proof(f"conv-merge-parallel-{n}{'' if bias else '-nobias'}", "group 1, 1 to 3 spatial axes",
              f"merge-conv-{n}-{bias}", partial(merge_convs, n, bias))
        for n in WAYS for bias in (True, False)]
