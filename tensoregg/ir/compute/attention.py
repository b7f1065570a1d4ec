"""Compute definitions of Attention and RotaryEmbedding.

Attention runs in stages, each in the dtype the reference computes it in (the inputs' dtype T step
by step, the softmax in ``softmax_precision``, products of float16 summed in float32):

- ``kT``: the keys (the past ones first) times sqrt(scale), transposed to (batch, kv heads, head
  size, keys), so that the score sum reads them along its output's contiguous axis;
- ``qk`` (only when the qk_matmul_output shows the raw or capped scores): Q sqrt(scale) . kT;
- ``biased``: the scores, softcapped, plus the bias of the mask, causality, windows and padding;
- ``dead`` (only with a bias): whether a query's bias is -inf at every key (its output is then 0);
- ``peak`` and ``sum``: the softmax's row max and its sum of exponentials;
- ``probs``: the softmax, then Y = probs . V (through a 4-D stage when Y is 3-D).

Key positions count from the start of the past: those below the past length read the past inputs,
the others K and V (both loads clamped into range, one discarded by a select).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tensoregg.ir.compute.expr import (
    BOOL,
    INDEX,
    Buffer,
    ComputeCtx,
    Expr,
    all_true,
    call,
    cast,
    clamp,
    const,
    define,
    idx,
    reduce,
    select,
)
from tensoregg.ir.compute.indexing import fetched
from tensoregg.ir.compute.linalg import wide
from tensoregg.ir.compute.reductions import kept, promoted, stat
from tensoregg.ir.dtypes import dtype_of

Heads = Callable[[Expr, Expr, Expr, Expr], Expr]
"""A tensor read at (batch, head, position, channel), whatever its layout."""
Bias = Callable[[Expr, Expr, Expr, Expr], Expr]
"""The additive score bias at (batch, query head, query, key)."""


def _heads(buf: Buffer, heads: int) -> Heads:
    """``buf`` (4-D, or 3-D with the heads side by side along its last axis) as :data:`Heads`."""
    if len(buf.shape) == 4:
        return lambda b, h, s, c: buf[b, h, s, c]
    size = buf.shape[2] // heads
    return lambda b, h, s, c: buf[b, s, h * idx(size) + c]


def _cache(past: Buffer | None, new: Heads, past_len: int, new_len: int) -> Heads:
    """The ``past_len`` entries of ``past`` followed by the ``new_len`` entries of ``new``."""
    if past is None or past_len == 0:
        return new

    def read(b: Expr, h: Expr, j: Expr, c: Expr) -> Expr:
        later = new(b, h, clamp(j - idx(past_len), 0, max(new_len - 1, 0)), c)
        return select(call("lt", j, idx(past_len)), past[b, h, clamp(j, 0, past_len - 1), c], later)
    return read


@dataclass
class _Attention:
    """An Attention node's geometry and its inputs as (batch, head, position, channel) reads."""

    batch: int
    q_heads: int
    kv_heads: int
    queries: int
    past: int
    keys: int
    head: int
    value_head: int
    q: Heads
    k: Heads
    v: Heads

    def kv_head(self, h: Expr) -> Expr:
        """The K/V head a query head reads (grouped-query attention)."""
        group = self.q_heads // self.kv_heads
        return h if group == 1 else call("div", h, idx(group))

    @property
    def scores(self) -> tuple[int, int, int, int]:
        return (self.batch, self.q_heads, self.queries, self.keys)


def _geometry(ctx: ComputeCtx) -> _Attention:
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    if len(q.shape) == 4:
        (b, hq, sq, d), hkv, skv, dv = q.shape, k.shape[1], k.shape[2], v.shape[3]
    else:
        hq, hkv = ctx.attrs["q_num_heads"], ctx.attrs["kv_num_heads"]
        (b, sq, _), skv, d, dv = q.shape, k.shape[1], q.shape[2] // hq, v.shape[2] // hkv
    past = ctx.input(4).shape[2] if ctx.has(4) else 0
    pk, pv = (ctx.input(i) if ctx.has(i) else None for i in (4, 5))
    return _Attention(b, hq, hkv, sq, past, past + skv, d, dv, _heads(q, hq),
                      _cache(pk, _heads(k, hkv), past, skv), _cache(pv, _heads(v, hkv), past, skv))


def _bias(ctx: ComputeCtx, g: _Attention, dtype: np.dtype) -> tuple[Bias | None, tuple[bool, bool, bool]]:
    """The score bias (None if there is none) and along which of batch, head and query it varies:
    the mask (bool: 0 or -inf; -inf past its last key), plus -inf where causality, the windows or
    nonpad_kv_seqlen forbid a key, as the reference adds them."""
    attrs = ctx.attrs
    zero, minus_inf = const(0, dtype), const(-np.inf, dtype)
    mask = ctx.input(3) if ctx.has(3) else None
    nonpad = ctx.input(6) if ctx.has(6) else None
    left, right = attrs["left_window_size"], attrs["right_window_size"]
    limits = bool(attrs["is_causal"]) or left >= 0 or right >= 0 or nonpad is not None
    if mask is None and not limits:
        return None, (False, False, False)
    dims = (1,) * (4 - len(mask.shape)) + mask.shape if mask is not None else (1, 1, 1, 1)

    def masked(b: Expr, h: Expr, i: Expr, j: Expr) -> Expr:
        assert mask is not None
        length = mask.shape[-1]
        if length == 0:
            return minus_inf
        at = [idx(0) if n == 1 else x for n, x in zip(dims[:3], (b, h, i))][4 - len(mask.shape):]
        full = length == g.keys  # j < keys: a shorter mask is read clamped, -inf past its end
        value: Expr = mask[(*at, j if full else clamp(j, 0, length - 1))]
        if value.dtype == BOOL:
            value = select(value, zero, minus_inf)
        return value if full else select(call("lt", j, idx(length)), value, minus_inf)

    def allowed(b: Expr, i: Expr, j: Expr) -> Expr:
        seen = cast(nonpad[b], INDEX) if nonpad is not None else None
        offset = idx(g.past) if g.past or seen is None else seen - idx(g.queries)
        diff = i + offset - j  # query position - key position
        conds = []
        if attrs["is_causal"]:
            conds.append(call("ge", diff, idx(0)))
        if left >= 0:
            conds.append(call("le", diff, idx(left)))
        if right >= 0:
            conds.append(call("le", -diff, idx(right)))
        if seen is not None:
            conds.append(call("lt", j, seen))
        return all_true(conds)

    def bias(b: Expr, h: Expr, i: Expr, j: Expr) -> Expr:
        value = masked(b, h, i, j) if mask is not None else None
        if limits:
            forbid = select(allowed(b, i, j), zero, minus_inf)
            value = forbid if value is None else value + forbid
        assert value is not None
        return value
    varies = (dims[0] > 1 or nonpad is not None, dims[1] > 1, dims[2] > 1 or limits)
    return bias, varies


def _dtype_code(code: int, default: np.dtype) -> np.dtype:
    """The dtype of an ONNX element type code (0: ``default``)."""
    return dtype_of(code) if code else default


@define("Attention")
def _attention(ctx: ComputeCtx) -> Sequence[Expr]:
    """softmax(softcap(Q K^T scale) + bias) V per query head, in the stages the module describes."""
    dtype = ctx.input(0).dtype
    soft = _dtype_code(ctx.attrs["softmax_precision"], dtype)
    others = {ctx.input(i).dtype for i in (1, 2, 4, 5) if ctx.has(i)}
    if dtype.kind != "f" or soft.kind != "f" or others != {dtype}:
        raise ctx.unsupported(f"Attention of {dtype} (K, V: {sorted(map(str, others))}) with a softmax in "
                              f"{soft}: only float16/32/64 throughout are lowered")
    g = _geometry(ctx)
    if g.keys == 0:
        raise ctx.unsupported("Attention with no keys")
    acc, mode, shown = wide(dtype), ctx.attrs["qk_matmul_output_mode"], len(ctx.outputs) > 3
    scale = ctx.attrs["scale"] or 1 / np.sqrt(g.head)
    root = const(np.sqrt(scale), dtype)  # Q and K are each scaled by sqrt(scale)
    keys = ctx.stage("kT", (g.batch, g.kv_heads, g.head, g.keys), lambda b, h, c, j: g.k(b, h, j, c) * root)

    def qk(b: Expr, h: Expr, i: Expr, j: Expr) -> Expr:
        def term(c: Expr) -> Expr:
            return cast(g.q(b, h, i, c) * root, acc) * cast(keys[b, g.kv_head(h), c, j], acc)
        return cast(reduce("add", [g.head], term, 0), dtype)

    cap = ctx.attrs["softcap"]

    def capped(x: Expr) -> Expr:
        return call("tanh", x / const(cap, dtype)) * const(cap, dtype) if cap > 0 else x

    raw = ctx.stage("qk", g.scores, qk) if shown and mode in (0, 1) else None
    bias, varies = _bias(ctx, g, dtype)

    def biased(b: Expr, h: Expr, i: Expr, j: Expr) -> Expr:
        x = capped(raw[b, h, i, j] if raw is not None else qk(b, h, i, j))
        return x if bias is None else x + bias(b, h, i, j)
    scores = ctx.stage("biased", g.scores, biased)
    probs = _softmax(ctx, g, scores, soft, bias, varies)

    def attend(b: Expr, h: Expr, i: Expr, e: Expr) -> Expr:
        def term(j: Expr) -> Expr:
            return cast(cast(probs[b, h, i, j], dtype), acc) * cast(g.v(b, g.kv_head(h), j, e), acc)
        return cast(reduce("add", [g.keys], term, 0), dtype)

    if len(ctx.input(0).shape) == 4:
        outputs = [attend(*ctx.index(0))]
    else:
        y = ctx.stage("y", (g.batch, g.q_heads, g.queries, g.value_head), attend)
        b, i, c = ctx.index(0)
        size = idx(g.value_head)
        outputs = [y[b, call("div", c, size), i, call("rem", c, size)]]
    if len(ctx.outputs) > 1:
        outputs.append(g.k(*ctx.index(1)))
    if len(ctx.outputs) > 2:
        outputs.append(g.v(*ctx.index(2)))
    if shown:  # the raw scores, after softcap, after the bias, or after the softmax
        at = ctx.index(3)
        if mode >= 2:
            outputs.append(scores[at] if mode == 2 else cast(probs[at], dtype))
        else:
            assert raw is not None
            outputs.append(raw[at] if mode == 0 else capped(raw[at]))
    return outputs


def _softmax(ctx: ComputeCtx, g: _Attention, scores: Buffer, dtype: np.dtype, bias: Bias | None,
             varies: tuple[bool, bool, bool]) -> Buffer:
    """A stage: the softmax over keys of ``scores`` in ``dtype`` (a row all -inf gives 0s, the sum
    in the accumulation dtype), 0 for a query whose bias is -inf at every key."""
    key = (3,)
    minus_inf, zero, one = (const(v, dtype) for v in (-np.inf, 0, 1))

    def score(at: tuple[Expr, ...]) -> Expr:
        return cast(scores[at], dtype)
    peak = stat(ctx, "peak", g.scores, key, "max", score,
                lambda m: select(call("eq", m, minus_inf), zero, m))

    def exp(at: tuple[Expr, ...]) -> Expr:
        return call("exp", score(at) - peak[kept(at, key)])

    def nonzero(s: Expr) -> Expr:
        return select(call("eq", s, zero), one, s)
    total = stat(ctx, "sum", g.scores, key, "add", lambda at: cast(exp(at), wide(dtype)),
                 lambda s: nonzero(cast(s, dtype)))
    dead = None
    if bias is not None:
        shape = tuple(n if vary else 1 for n, vary in zip(g.scores, (*varies, True)))
        minus_inf_t = const(-np.inf, scores.dtype)
        dead = stat(ctx, "dead", shape, key, "max", lambda at: bias(*at),
                    lambda m: call("eq", m, minus_inf_t))

    def prob(*at: Expr) -> Expr:
        p = exp(at) / total[kept(at, key)]
        if dead is None:
            return p
        row = tuple(idx(0) if n == 1 else x for n, x in zip(dead.shape, at))
        return select(dead[row], zero, p)
    return ctx.stage("probs", g.scores, prob)


# ---- RotaryEmbedding ------------------------------------------------------------------------------

@define("RotaryEmbedding")
def _rotary(ctx: ComputeCtx) -> Sequence[Expr]:
    """Each head's first ``rot`` channels in pairs (x1, x2) -> (cos x1 - sin x2, sin x1 + cos x2):
    pairs of halves, or of neighbours when interleaved; the angle's cos and sin at the position
    (position_ids wrapped and clamped like a gather)."""
    x, cos, sin = ctx.input(0), ctx.input(1), ctx.input(2)
    out = ctx.index()
    channel: Expr
    if len(x.shape) == 4:
        b, h, s, channel = out
        head = x.shape[3]

        def read(c: Expr) -> Expr:
            return x[b, h, s, c]
    else:
        b, s, flat = out
        head = x.shape[2] // ctx.attrs["num_heads"]
        start = call("div", flat, idx(head)) * idx(head)
        channel = flat - start

        def read(c: Expr) -> Expr:
            return x[b, s, start + c]
    rot = ctx.attrs["rotary_embedding_dim"] or head
    half = rot // 2
    if ctx.has(3):
        position = fetched(ctx.input(3)[b, s], cos.shape[0])

        def angle(cache: Buffer, m: Expr) -> Expr:
            return cache[position, m]
    else:
        def angle(cache: Buffer, m: Expr) -> Expr:
            return cache[b, s, m]
    if ctx.attrs["interleaved"]:
        m = clamp(call("div", channel, idx(2)), 0, half - 1)
        first = call("eq", call("rem", channel, idx(2)), idx(0))
        x1, x2 = read(m * idx(2)), read(m * idx(2) + idx(1))
    else:
        first = call("lt", channel, idx(half))
        m = clamp(select(first, channel, channel - idx(half)), 0, half - 1)
        x1, x2 = read(m), read(m + idx(half))
    c, sn = angle(cos, m), angle(sin, m)
    real = promoted("sub", promoted("mul", c, x1), promoted("mul", sn, x2))
    imag = promoted("add", promoted("mul", sn, x1), promoted("mul", c, x2))
    turned = cast(select(first, real, imag), x.dtype)
    if rot == head:
        return [turned]
    return [select(call("lt", channel, idx(rot)), turned, read(channel))]
