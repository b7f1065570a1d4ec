"""Attention operators: scaled dot-product Attention (MHA/GQA/MQA, KV cache, masks, windows) and
RotaryEmbedding.

Arithmetic stays in the inputs' dtype step by step (float16 and bfloat16 included), in the order
the ONNX definition gives, so results agree with it to the last rounding.
"""

from __future__ import annotations

import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.ir.dtypes import dtype_of
from tensoregg.ir.registry import Attr, InferCtx, op
from tensoregg.ir.types import TensorType

_SOFTMAX_PRECISIONS = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
"""Attributes ONNX leaves unset default to 0 here: q/kv_num_heads 0 = take them from 4-D shapes,
scale 0 = 1/sqrt(head_size), softmax_precision 0 = the scores' own dtype."""


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype.name.startswith("bfloat")


def _check_attention_attrs(ctx: InferCtx) -> None:
    a = ctx.attrs
    for side in ("left_window_size", "right_window_size"):
        if a[side] < -1:
            raise InvalidModel(f"Attention node {ctx.node!r}: {side} must be -1 or >= 0, got {a[side]}")
    if a["qk_matmul_output_mode"] not in (0, 1, 2, 3):
        raise InvalidModel(f"Attention node {ctx.node!r}: qk_matmul_output_mode must be 0..3, "
                           f"got {a['qk_matmul_output_mode']}")
    if a["softmax_precision"] and a["softmax_precision"] not in _SOFTMAX_PRECISIONS:
        raise InvalidModel(f"Attention node {ctx.node!r}: softmax_precision must be one of "
                           f"{_SOFTMAX_PRECISIONS}, got {a['softmax_precision']}")


def _heads_4d(ctx: InferCtx) -> tuple[tuple[int, ...], ...]:
    """Q, K, V as (batch, heads, seq, head_size) shapes, splitting the hidden size of 3-D inputs."""
    q, k, v = ctx.shape(0), ctx.shape(1), ctx.shape(2)
    if len(q) not in (3, 4) or not len(q) == len(k) == len(v):
        ctx.fail(f"Q, K and V must all be 3-D or all 4-D, got shapes {list(q)}, {list(k)}, {list(v)}")
    hq, hkv = ctx.attrs["q_num_heads"], ctx.attrs["kv_num_heads"]
    if len(q) == 4:
        if hq not in (0, q[1]) or hkv not in (0, k[1]):
            ctx.fail("q_num_heads/kv_num_heads disagree with 4-D Q/K shapes")
        return q, k, v
    if hq <= 0 or hkv <= 0:
        ctx.fail("3-D Q, K, V need positive q_num_heads and kv_num_heads attributes")
    for name, shape, heads in (("Q", q, hq), ("K", k, hkv), ("V", v, hkv)):
        if shape[2] % heads:
            ctx.fail(f"{name} hidden size {shape[2]} is not a multiple of its {heads} heads")
    return ((q[0], hq, q[1], q[2] // hq), (k[0], hkv, k[1], k[2] // hkv), (v[0], hkv, v[1], v[2] // hkv))


def _attention_shape(ctx: InferCtx) -> list[TensorType]:
    _check_attention_attrs(ctx)
    for i in range(3):
        if not _is_float(ctx.dtype(i)):
            ctx.fail(f"input {i} must be a float tensor, got {ctx.dtype(i)}")
    q, k, v = _heads_4d(ctx)
    b, hq, sq, d = q
    hkv = k[1]
    if k[0] != b or v[0] != b or v[1] != hkv or k[2] != v[2]:
        ctx.fail(f"K and V must share batch, heads and sequence length with Q's batch: {k}, {v}")
    if k[3] != d:
        ctx.fail(f"Q head size {d} differs from K head size {k[3]}")
    if hq % hkv:
        ctx.fail(f"q_num_heads {hq} is not a multiple of kv_num_heads {hkv}")
    past = 0
    if ctx.has(4) != ctx.has(5):
        ctx.fail("past_key and past_value must be given together")
    if ctx.has(4):
        if ctx.has(6):
            ctx.fail("nonpad_kv_seqlen cannot be combined with past_key/past_value")
        pk, pv = ctx.shape(4), ctx.shape(5)
        if len(pk) != 4 or pk[:2] != (b, hkv) or pk[3] != d or pv != (b, hkv, pk[2], v[3]):
            ctx.fail(f"past_key {list(pk)} / past_value {list(pv)} do not fit K {list(k)} and V {list(v)}")
        past = pk[2]
    total = past + k[2]
    if ctx.has(6) and ctx.shape(6) != (b,):
        ctx.fail(f"nonpad_kv_seqlen must have shape [{b}], got {list(ctx.shape(6))}")
    if ctx.has(3):
        m = ctx.shape(3)
        if ctx.dtype(3) != np.bool_ and ctx.dtype(3) != ctx.dtype(0):
            ctx.fail(f"attn_mask must be bool or {ctx.dtype(0)}, got {ctx.dtype(3)}")
        full = (b, hq, sq, total)
        if not m or m[-1] > total or len(m) > 4 or any(
                x not in (1, y) for x, y in zip(m[-2::-1], full[-2::-1])):
            ctx.fail(f"attn_mask shape {list(m)} does not broadcast to {list(full)}")
    y = (b, hq, sq, v[3]) if len(ctx.shape(0)) == 4 else (b, sq, hq * v[3])
    kdt = ctx.dtype(1)
    return [TensorType(ctx.dtype(0), y), TensorType(kdt, (b, hkv, total, d)),
            TensorType(ctx.dtype(2), (b, hkv, total, v[3])), TensorType(ctx.dtype(0), (b, hq, sq, total))]


def _to_4d(x: np.ndarray, heads: int) -> np.ndarray:
    """(batch, seq, heads * size) -> (batch, heads, seq, size)."""
    b, s, h = x.shape
    return x.reshape(b, s, heads, h // heads).transpose(0, 2, 1, 3)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched matmul in ``a``'s dtype (numpy may widen bfloat16)."""
    return np.matmul(a, b).astype(a.dtype, copy=False)


def _allowed_keys(attrs: dict, sq: int, skv: int, past: int | None,
                  nonpad: np.ndarray | None) -> np.ndarray | None:
    """Keys each query may see under is_causal, the windows and nonpad_kv_seqlen, or None if all.

    A query's absolute position is ``i + offset``: offset is the past length, else
    ``nonpad_kv_seqlen - sq`` per batch (the result then has shape (batch, 1, sq, skv)), else 0.
    """
    if not attrs["is_causal"] and attrs["left_window_size"] < 0 and attrs["right_window_size"] < 0 \
            and nonpad is None:
        return None
    offset: np.ndarray | int = past or 0
    if past is None and nonpad is not None:  # per-batch key lengths
        offset = nonpad.reshape(-1, 1, 1, 1).astype(np.int64) - sq
    diff = np.arange(sq)[:, None] + offset - np.arange(skv)[None, :]  # query position - key
    allowed = np.ones(diff.shape, np.bool_)
    if attrs["is_causal"]:
        allowed &= diff >= 0
    if attrs["left_window_size"] >= 0:
        allowed &= diff <= attrs["left_window_size"]
    if attrs["right_window_size"] >= 0:
        allowed &= -diff <= attrs["right_window_size"]
    if nonpad is not None:
        allowed = allowed & (np.arange(skv) < nonpad.reshape(-1, 1, 1, 1))
    return allowed


def _attention_bias(attrs: dict, mask: np.ndarray | None, dtype: np.dtype, sq: int, skv: int,
                    past: int | None, nonpad: np.ndarray | None) -> np.ndarray:
    """The additive score bias: the mask (bool -> 0/-inf, padded with -inf up to skv) plus -inf
    wherever causality, the windows or the padding forbid a key."""
    zero, neginf = dtype.type(0), dtype.type(-np.inf)
    bias = np.zeros((sq, skv), dtype)
    if mask is not None:
        if mask.dtype == np.bool_:
            mask = np.where(mask, zero, neginf)
        pad = [(0, 0)] * (mask.ndim - 1) + [(0, skv - mask.shape[-1])]
        bias = bias + np.pad(mask, pad, constant_values=neginf)
    allowed = _allowed_keys(attrs, sq, skv, past, nonpad)
    if allowed is not None:
        bias = bias + np.where(allowed, zero, neginf)
    return bias


def _masked_softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; an all -inf row gives zeros instead of NaN."""
    top = np.max(x, axis=-1, keepdims=True)
    zero, one = np.zeros((), x.dtype), np.ones((), x.dtype)
    e = np.exp(x - np.where(np.isneginf(top), zero, top))
    s = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(s == zero, one, s)


@op("Attention", "Q K V attn_mask? past_key? past_value? nonpad_kv_seqlen?",
    "Y present_key? present_value? qk_matmul_output?", shape=_attention_shape,
    attrs={"is_causal": Attr("int", 0), "kv_num_heads": Attr("int", 0), "q_num_heads": Attr("int", 0),
           "qk_matmul_output_mode": Attr("int", 0), "scale": Attr("float", 0.0),
           "softcap": Attr("float", 0.0),
           "softmax_precision": Attr("int", 0), "left_window_size": Attr("int", -1),
           "right_window_size": Attr("int", -1)})
def attention(attrs, q, k, v, mask=None, past_key=None, past_value=None, nonpad=None):
    """softmax(softcap(Q K^T * scale) + bias) V with GQA head sharing, a KV cache and masks."""
    rank3 = q.ndim == 3
    if rank3:
        hkv = attrs["kv_num_heads"]
        q, k, v = _to_4d(q, attrs["q_num_heads"]), _to_4d(k, hkv), _to_4d(v, hkv)
    scale = attrs["scale"] or 1 / np.sqrt(q.shape[3])
    root = q.dtype.type(np.sqrt(scale))  # Q and K are each scaled by sqrt(scale)
    past = None if past_key is None else past_key.shape[2]
    if past_key is not None:
        k, v = np.concatenate((past_key, k), axis=2), np.concatenate((past_value, v), axis=2)
    present_k, present_v = k, v
    sq, skv = q.shape[2], k.shape[2]
    bias = _attention_bias(attrs, mask, q.dtype, sq, skv, past, nonpad)
    reps = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, reps, axis=1), np.repeat(v, reps, axis=1)
    with np.errstate(all="ignore"):
        qk = _matmul(q * root, np.swapaxes(k, 2, 3) * root)
        cap = attrs["softcap"]
        capped = np.tanh(qk / cap) * cap if cap > 0 else qk
        biased = capped + bias
        scores = biased
        if attrs["softmax_precision"]:
            scores = biased.astype(dtype_of(attrs["softmax_precision"]))
        probs = _masked_softmax(scores)
        dead_row = np.isneginf(np.max(bias, axis=-1, keepdims=True))
        probs = np.where(dead_row, np.zeros((), probs.dtype), probs)
        y = _matmul(probs.astype(q.dtype), v)
    shown = (qk, capped, biased, probs)[attrs["qk_matmul_output_mode"]].astype(q.dtype)
    if rank3:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], sq, -1)
    return y, present_k, present_v, shown


def _rotary_shape(ctx: InferCtx) -> TensorType:
    x = ctx.shape(0)
    if len(x) not in (3, 4):
        ctx.fail(f"X must be 3-D or 4-D, got shape {list(x)}")
    heads = ctx.attrs["num_heads"]
    if len(x) == 3 and (not heads or x[2] % heads):
        ctx.fail(f"3-D X needs num_heads dividing its hidden size {x[2]}, got {heads}")
    b, s, d = (x[0], x[2], x[3]) if len(x) == 4 else (x[0], x[1], x[2] // heads)
    rot = ctx.attrs["rotary_embedding_dim"] or d
    if rot > d or rot % 2:
        ctx.fail(f"rotary_embedding_dim {rot} must be even and at most the head size {d}")
    cache = ctx.shape(1)
    if ctx.shape(2) != cache:
        ctx.fail(f"cos_cache {list(cache)} and sin_cache {list(ctx.shape(2))} differ in shape")
    if ctx.has(3):
        if ctx.shape(3) != (b, s) or len(cache) != 2 or cache[1] != rot // 2:
            ctx.fail(f"position_ids {list(ctx.shape(3))} must be [{b}, {s}] and the caches "
                     f"[max_position, {rot // 2}], got {list(cache)}")
    elif cache != (b, s, rot // 2):
        ctx.fail(f"without position_ids the caches must be [{b}, {s}, {rot // 2}], got {list(cache)}")
    return ctx.type(0)


@op("RotaryEmbedding", "X cos_cache sin_cache position_ids?", "Y", shape=_rotary_shape,
    attrs={"interleaved": Attr("int", 0), "num_heads": Attr("int", 0),
           "rotary_embedding_dim": Attr("int", 0)})
def rotary_embedding(attrs, x, cos, sin, position_ids=None):
    """Rotate pairs (halves, or even/odd when interleaved) of each head's first dims by position angles."""
    shape = x.shape
    # work as (batch, seq, heads, head_size)
    h = x.transpose(0, 2, 1, 3) if x.ndim == 4 else x.reshape(shape[0], shape[1], attrs["num_heads"], -1)
    rot = attrs["rotary_embedding_dim"] or h.shape[3]
    if position_ids is not None:
        cos, sin = cos[position_ids], sin[position_ids]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    part = h[..., :rot]
    x1, x2 = (part[..., 0::2], part[..., 1::2]) if attrs["interleaved"] else np.split(part, 2, axis=-1)
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if attrs["interleaved"]:
        turned = np.stack((real, imag), axis=-1).reshape(part.shape)
    else:
        turned = np.concatenate((real, imag), axis=-1)
    out = np.concatenate((turned, h[..., rot:]), axis=-1)
    return out.transpose(0, 2, 1, 3) if x.ndim == 4 else out.reshape(shape)
