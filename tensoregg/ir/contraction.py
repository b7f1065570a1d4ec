"""Contractions: compute definitions that are batches of GEMMs, found by their index structure.

An output ``out[batch..., M..., N...] = epilogue(sum over K of a * b)`` is a contraction when the
sum's term is a product whose factor ``a`` reads the M axes and ``b`` the N axes and not each
other's: MatMul, Gemm, Conv (an implicit GEMM: M = output channels, N = output pixels, K = input
channels x window) and their fused forms. The axes are read off the expressions, not the op's name,
so every definition of that shape qualifies. Output axes of extent 1 are dropped first. An output
axis that one factor reads only as ``axis // G`` (a grouped Conv's output channel, read by X as its
group) is split into (group, channel within the group): the group becomes a batch axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from tensoregg.ir.compute import (
    INDEX,
    Buffer,
    Call,
    Const,
    Expr,
    Load,
    Reduce,
    Var,
    call,
    const,
    substitute,
    walk,
)
from tensoregg.ir.schedules import GemmProblem

F32 = np.dtype(np.float32)
HALVES = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
"""16-bit float outputs whose contraction sums in float32 (the reference's precision)."""


@dataclass
class Contraction:
    """``out`` (flat: ``batch`` x ``m`` x ``n``) = ``value`` with ``reduce`` = sum_k a(i, k) * b(k, j).
    ``a(bi, i, k)`` and ``b(bi, k, j)`` give the factors at a flat batch index, row, column and k."""

    out: Buffer
    shape: tuple[int, ...]
    """The output's shape as the index sees it (``out.shape`` with grouped axes split)."""
    index: tuple[Var, ...]
    value: Expr
    reduce: Reduce
    batch: int
    m: int
    n: int
    k: int
    a_expr: Expr
    b_expr: Expr
    batch_axes: tuple[int, ...]
    m_axes: tuple[int, ...]
    n_axes: tuple[int, ...]

    def problem(self, a_constant: bool, b_constant: bool) -> GemmProblem:
        return GemmProblem(self.batch, self.m, self.n, self.k, not a_constant, not b_constant,
                           self.operand_dtype.name,
                           row_form=self.out.shape[-1] > 1 if self.out.shape else False)

    @property
    def operand_dtype(self) -> np.dtype:
        """The dtype both factors are read in: a 16-bit float where each is a cast of one to the
        sum's dtype (float16 data summed in float32), else the sum's."""
        for d in HALVES:
            if all(uncast(e, d) is not e for e in (self.a_expr, self.b_expr)):
                return d
        return self.reduce.dtype

    def _at(self, bi: Expr, axes: Sequence[int], flat_index: Expr) -> dict[int, Expr]:
        """The output index variables of ``axes`` and the batch axes at flat positions (the axes of
        extent 1 at 0)."""
        at: dict[int, Expr] = {id(v): const(0, INDEX) for v, n in zip(self.index, self.shape) if n == 1}
        for group, where in ((self.batch_axes, bi), (tuple(axes), flat_index)):
            extents = [self.shape[d] for d in group]
            for d, e in zip(group, unflatten(where, extents)):
                at[id(self.index[d])] = e
        return at

    def at(self, e: Expr, side: str, bi: Expr, line: Expr, k: Expr) -> Expr:
        """``e`` (an expression of factor ``side``'s axes) at a flat batch index, row of A (``side``
        ``a``) or column of B (``b``) and k."""
        axes = self.m_axes if side == "a" else self.n_axes
        return substitute(e, {**self._at(bi, axes, line), **self._k(k)})

    def a(self, bi: Expr, i: Expr, k: Expr) -> Expr:
        return self.at(self.a_expr, "a", bi, i, k)

    def b(self, bi: Expr, k: Expr, j: Expr) -> Expr:
        return self.at(self.b_expr, "b", bi, j, k)

    def _k(self, k: Expr) -> dict[int, Expr]:
        return {id(v): e for v, e in zip(self.reduce.axes, unflatten(k, self.reduce.extents))}

    def epilogue(self, bi: Expr, i: Expr, j: Expr, total: Expr) -> Expr:
        """The output's value at (bi, i, j) given the sum there."""
        at = {**self._at(bi, self.m_axes, i), **self._at(bi, self.n_axes, j)}
        return substitute(self.value, {**at, id(self.reduce): total})

    def reads(self, factor: Expr) -> set[int]:
        return {id(e.buffer) for e in walk(factor) if isinstance(e, Load)}


def uncast(e: Expr, dtype: np.dtype) -> Expr:
    """``x`` where ``e`` is ``cast(x)`` of an ``x`` of ``dtype``, else ``e``."""
    if isinstance(e, Call) and e.fn == "cast" and e.args[0].dtype == dtype:
        return e.args[0]
    return e


def unflatten(flat_index: Expr, extents: Sequence[int]) -> list[Expr]:
    """The row-major multi-index of ``flat_index`` over ``extents`` (axes of extent 1 are 0)."""
    out: list[Expr] = []
    rest = flat_index
    live = [k for k, n in enumerate(extents) if n > 1]
    for k in range(len(extents)):
        if k not in live:
            out.append(const(0, INDEX))
            continue
        inner = math.prod(extents[j] for j in live if j > k)
        q = rest if inner == 1 else call("div", rest, const(inner, INDEX))
        out.append(q if k == live[0] else call("rem", q, const(extents[k], INDEX)))
    return out


def variables(e: Expr) -> set[int]:
    """The ids of the index variables ``e`` reads."""
    return {id(x) for x in walk(e) if isinstance(x, Var)}


def _split_groups(shape: tuple[int, ...], index: tuple[Var, ...], value: Expr, factors: Sequence[Expr],
                  ) -> tuple[tuple[int, ...], tuple[Var, ...], Expr]:
    """Each output axis that a factor reads only as ``axis // G`` (G > 1 dividing its extent) split
    into (axis // G, axis % G) with the quotient substituted for those divisions."""
    for d, v in enumerate(index):
        for factor in factors:
            divs = [e for e in walk(factor) if isinstance(e, Call) and e.fn == "div" and e.args[0] is v
                    and isinstance(e.args[1], Const)]
            sizes = {int(e.args[1].value) for e in divs}  # type: ignore[attr-defined]
            if len(sizes) != 1 or min(sizes) < 2 or shape[d] % min(sizes):
                continue
            direct = variables(substitute(factor, {id(e): const(0, INDEX) for e in divs}))
            if id(v) in direct:
                continue
            g, within, size = Var(f"{v.name}g"), Var(f"{v.name}w"), min(sizes)
            mapping: dict[int, Expr] = {id(e): g for e in divs}
            mapping[id(v)] = g * const(size, INDEX) + within
            return _split_groups((*shape[:d], shape[d] // size, size, *shape[d + 1:]),
                                 (*index[:d], g, within, *index[d + 1:]), substitute(value, mapping),
                                 [substitute(f, mapping) for f in factors])
    return shape, index, value


def find_contraction(out: Buffer, index: Sequence[Var], value: Expr) -> Contraction | None:
    """``value`` (stored at ``out[index]``) as a contraction summed in float32 (into a float32,
    float16 or bfloat16 output), or None."""
    if out.dtype != F32 and out.dtype not in HALVES:
        return None
    bodies = [x.body for x in walk(value) if isinstance(x, Reduce)]
    if len(bodies) != 1 or not isinstance(bodies[0], Call):
        return None
    return _recognize(out, *_split_groups(tuple(out.shape), tuple(index), value, bodies[0].args))


def _recognize(out: Buffer, shape: tuple[int, ...], index: tuple[Var, ...],
               value: Expr) -> Contraction | None:
    reduces = [x for x in walk(value) if isinstance(x, Reduce)]
    if len(reduces) != 1:
        return None
    r = reduces[0]
    if (r.combiner != "add" or r.dtype != F32 or not isinstance(r.init, Const) or r.init.value != 0
            or any(isinstance(x, Reduce) for x in walk(r.body) if x is not r)):
        return None
    body = r.body
    if not (isinstance(body, Call) and body.fn == "mul" and len(body.args) == 2):
        return None
    x, y = body.args
    vx, vy = variables(x), variables(y)
    live = [d for d, n in enumerate(shape) if n > 1]
    owner = {d: ("x" if id(index[d]) in vx else "") + ("y" if id(index[d]) in vy else "") for d in live}
    if live and owner[live[-1]] not in ("x", "y"):
        return None
    n_side = owner[live[-1]] if live else "y"  # no axis longer than 1: one dot product
    cut = len(live)
    while cut > 0 and owner[live[cut - 1]] == n_side:
        cut -= 1
    m_side = "y" if n_side == "x" else "x"
    start = cut
    while start > 0 and owner[live[start - 1]] == m_side:
        start -= 1
    batch_axes, m_axes, n_axes = tuple(live[:start]), tuple(live[start:cut]), tuple(live[cut:])
    a_expr, b_expr = (x, y) if m_side == "x" else (y, x)
    size = lambda axes: math.prod(shape[d] for d in axes)  # noqa: E731
    return Contraction(out, shape, tuple(index), value, r, size(batch_axes), size(m_axes), size(n_axes),
                       math.prod(r.extents), a_expr, b_expr, batch_axes, m_axes, n_axes)


# ---- constant factors -----------------------------------------------------------------------------

_NUMPY: Mapping[str, Any] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "min": np.minimum, "max": np.maximum,
    "rem": np.remainder, "neg": np.negative, "and": np.logical_and, "or": np.logical_or,
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal,
    "ne": np.not_equal}


def evaluate(e: Expr, env: Mapping[int, np.ndarray], buffers: Mapping[int, np.ndarray]) -> np.ndarray | None:
    """``e`` computed with numpy over index arrays ``env`` (by Var id), loads from ``buffers`` (by
    Buffer id); None if it reads another buffer or calls something outside index arithmetic,
    casts and selects (the factor is then packed at run time instead)."""
    memo: dict[int, np.ndarray | None] = {}

    def go(x: Expr) -> np.ndarray | None:
        if id(x) in memo:
            return memo[id(x)]
        out: np.ndarray | None = None
        if isinstance(x, Const):
            out = np.asarray(x.value, x.dtype)
        elif isinstance(x, Var):
            out = env.get(id(x))
        elif isinstance(x, Load) and id(x.buffer) in buffers:
            idx = [go(i) for i in x.index]
            if all(i is not None for i in idx):
                data = buffers[id(x.buffer)].reshape(x.buffer.shape)
                out = np.asarray(data[tuple(np.asarray(i, np.int64) for i in idx)])
        elif isinstance(x, Call):
            found = [go(a) for a in x.args]
            args = [a for a in found if a is not None]
            if len(args) < len(found):
                out = None
            elif x.fn == "cast":
                out = np.asarray(args[0]).astype(x.dtype)
            elif x.fn == "select":
                out = np.where(args[0], args[1], args[2])
            elif x.fn == "div" and x.dtype == INDEX:
                out = np.floor_divide(*args)
            elif x.fn in _NUMPY and (x.dtype == INDEX or x.fn in ("add", "sub", "mul", "neg")):
                out = np.asarray(_NUMPY[x.fn](*args)).astype(x.dtype)
        memo[id(x)] = out
        return out

    return go(e)
