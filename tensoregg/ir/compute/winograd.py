"""Compute definitions of the Winograd F(2x2, 3x3) transforms, written for the loop vectorizer, which
vectorizes the innermost output axis.

The transform matrices have entries 0 and +-1 (BT, AT), so an element is a short signed sum of loads:
which loads and which signs depend only on the element position e = 4 xi + nu (WinogradInput's
outermost, loop-invariant axis) or on the output's row and column parity (WinogradOutput), picked
with ``select`` rather than loaded from a table. WinogradInput reads a zero-padded stage, so its
loads need no bounds tests; WinogradOutput is one expression (no reduction, no stage), which a
following element-wise op computes in place of loading it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tensoregg.ir.compute.expr import ComputeCtx, Expr, call, const, define, idx, reduce, select
from tensoregg.ir.compute.linalg import padded
from tensoregg.ir.ops.winograd import BT, DOMAIN, F32, G, input_pads, tiles

PLUS, MINUS = const(1.0, F32), const(-1.0, F32)
"""Shared sign constants (a consumer inlines WinogradOutput only while its expression is small)."""


def _sign(negative: Expr) -> Expr:
    """-1.0 where ``negative`` holds, else 1.0."""
    return select(negative, MINUS, PLUS)


@define("WinogradWeights", domain=DOMAIN)
def _winograd_weights(ctx: ComputeCtx) -> Sequence[Expr]:
    """U[e, k, c] = sum over a, b of G[xi, a] W[k, c, a, b] G[nu, b] (folded at compile time when W
    is a constant)."""
    w, g = ctx.input(0), ctx.constant("G", G)
    e, k, c = ctx.index()
    xi, nu = call("div", e, idx(4)), call("rem", e, idx(4))
    return [reduce("add", [3, 3], lambda a, b: g[xi, a] * w[k, c, a, b] * g[nu, b], 0)]


def _pick(at: Expr, values: Sequence[Expr]) -> Expr:
    """``values[at]`` for a small loop-invariant index ``at``, as a chain of selects."""
    out = values[-1]
    for v in reversed(range(len(values) - 1)):
        out = select(call("eq", at, idx(v)), values[v], out)
    return out


def _taps(xi: Expr) -> tuple[Expr, Expr, Expr]:
    """BT's row ``xi`` (two nonzeros) as (the tap taken with +1, the other tap, that one's sign)."""
    rows = []
    for row in BT:
        plus = int(np.flatnonzero(row == 1)[0])
        other = int(next(t for t in np.flatnonzero(row) if t != plus))
        rows.append((idx(plus), idx(other), MINUS if row[other] < 0 else PLUS))
    first, second, sign = zip(*rows)
    return _pick(xi, first), _pick(xi, second), _pick(xi, sign)


@define("WinogradInput", domain=DOMAIN)
def _winograd_input(ctx: ComputeCtx) -> Sequence[Expr]:
    """V[e, c, n, ty, tx] = (BT d BT^T)[xi, nu]: four signed loads of the tile d (BT's rows xi and nu
    have two nonzeros each), at stride 2 along the tiles of a row."""
    x = ctx.input(0)
    top, left, bottom, right = input_pads(ctx.attrs)
    h, w = x.shape[2:]
    th, tw = tiles(h + top + bottom - 2, w + left + right - 2)
    need = (2 * th + 2, 2 * tw + 2)
    source = x
    if top or left or need[0] > h or need[1] > w:
        source = padded(ctx, x, (top, left), need)
    e, c, n, ty, tx = ctx.index()
    rows, cols = _taps(call("div", e, idx(4))), _taps(call("rem", e, idx(4)))
    y0, x0 = ty * idx(2), tx * idx(2)

    def row(r: Expr) -> Expr:
        return source[n, c, y0 + r, x0 + cols[0]] + cols[2] * source[n, c, y0 + r, x0 + cols[1]]
    return [row(rows[0]) + rows[2] * row(rows[1])]


@define("WinogradOutput", domain=DOMAIN)
def _winograd_output(ctx: ComputeCtx) -> Sequence[Expr]:
    """Y[n, k, 2 ty + i, 2 tx + j] = (AT m AT^T)[i, j] + B[k]: nine signed loads of M, AT's row i
    taking xi = p + i for p < 3, negated where i = 1 and p > 0 (likewise j along the columns)."""
    m = ctx.input(0)
    n, k, y, x = ctx.index()
    offsets = {v: idx(v) for v in (0, 1, 2, 4, 5, 6, 8, 9, 10)}  # each constant once
    two = offsets[2]
    i, j = call("rem", y, two), call("rem", x, two)
    ty, tx = call("div", y, two), call("div", x, two)
    at = i * offsets[4] + j
    si, sj = _sign(call("ne", i, offsets[0])), _sign(call("ne", j, offsets[0]))

    def row(p: int) -> Expr:
        def load(q: int) -> Expr:
            return m[at + offsets[4 * p + q], k, n, ty, tx]
        return load(0) + sj * (load(1) + load(2))
    value = row(0) + si * (row(1) + row(2))
    return [value + ctx.input(1)[k] if ctx.has(1) else value]
