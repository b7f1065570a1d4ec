"""The ATen -> IR table: how each core ATen operator (torch.export's op set after its default
decompositions) becomes IR nodes. ``ATEN`` is the one place that maps them; ``tensoregg.frontends.torch``
walks the exported graph and calls these converters (those of the network layers and fused
attention kernels are in ``aten_nn``).

A converter is called as ``fn(b, *args, **kwargs)`` with the ATen node's own arguments: a tensor
argument is an fx ``Node``, turned into an IR value name by ``b.tensor``; other arguments are Python
values. It returns the IR value name of its result, or a tuple of names (``None`` for an output the
IR does not compute) for an op with several results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from tensoregg.frontends.aten_nn import (
    adaptive_avg_pool,
    avg_pool,
    batch_norm,
    convolution,
    encoder_layer,
    group_norm,
    layer_norm,
    max_pool,
    multi_head_attention,
    upsample,
)

INT64_MAX = np.iinfo(np.int64).max


class Builder(Protocol):
    """What a converter may do: read its arguments and the node's result type, add IR nodes."""

    out_shape: tuple[int, ...]
    out_dtype: np.dtype

    def tensor(self, x: Any) -> str: ...
    def dtype(self, x: Any) -> np.dtype: ...  # of a tensor argument, or an IR value by name
    def shape(self, x: Any) -> tuple[int, ...]: ...
    def operand(self, x: Any, dtype: np.dtype) -> str: ...
    def promoted(self, x: Any, y: Any) -> np.dtype: ...
    def const(self, value: Any, dtype: Any = None) -> str: ...
    def emit(self, op: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> Any: ...
    def unsupported(self, detail: str) -> Any: ...


Converter = Callable[..., Any]


def _unary(op: str, **attrs: Any) -> Converter:
    return lambda b, x: b.emit(op, [b.tensor(x)], **attrs)


def _arith(op: str) -> Converter:
    """``x op y`` computed in the result's dtype (torch promotes; the IR op wants one dtype)."""

    def convert(b: Builder, x: Any, y: Any, *, alpha: Any = 1) -> str:
        other = b.operand(y, b.out_dtype)
        if alpha != 1:
            other = b.emit("Mul", [other, b.const(alpha, b.out_dtype)])
        return b.emit(op, [b.operand(x, b.out_dtype), other])

    return convert


def _compare(op: str, negate: bool = False) -> Converter:
    """A comparison, both sides in the dtype torch promotes them to."""

    def convert(b: Builder, x: Any, y: Any) -> str:
        dtype = b.promoted(x, y)
        out = b.emit(op, [b.operand(x, dtype), b.operand(y, dtype)])
        return b.emit("Not", [out]) if negate else out

    return convert


def _logical(op: str) -> Converter:
    return lambda b, x, y: b.emit(op, [b.operand(x, np.dtype(bool)), b.operand(y, np.dtype(bool))])


def _bitwise(op: str, logical: str) -> Converter:
    """A bitwise op: the logical one on bools (torch writes ``a & b`` of masks so)."""

    def convert(b: Builder, x: Any, y: Any) -> str:
        if b.out_dtype == np.dtype(bool):
            return _logical(logical)(b, x, y)
        return b.emit(op, [b.operand(x, b.out_dtype), b.operand(y, b.out_dtype)])

    return convert


def _bitwise_not(b: Builder, x: Any) -> str:
    return b.emit("Not" if b.out_dtype == np.dtype(bool) else "BitwiseNot", [b.tensor(x)])


def _axes(dims: Any, rank: int) -> list[int]:
    """``dims`` (an int, a list, or None / [] for every axis) as non-negative axes."""
    if dims is None or dims == []:
        return list(range(rank))
    return [d % max(rank, 1) for d in ([dims] if isinstance(dims, int) else dims)]


def _reduce(op: str) -> Converter:
    def convert(b: Builder, x: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> str:
        axes = _axes(dim, len(b.shape(x)))
        return b.emit(op, [b.operand(x, b.out_dtype), b.const(axes, np.int64)], keepdims=int(keepdim))

    return convert


def _arg(op: str) -> Converter:
    """argmax/argmin: over ``dim``, or over the flattened tensor when dim is None."""

    def convert(b: Builder, x: Any, dim: Any = None, keepdim: bool = False) -> str:
        if dim is None:
            flat = b.emit("Reshape", [b.tensor(x), b.const([-1], np.int64)])
            return b.emit("Reshape", [b.emit(op, [flat], axis=0), b.const(b.out_shape, np.int64)])
        return b.emit(op, [b.tensor(x)], axis=dim % len(b.shape(x)), keepdims=int(keepdim))

    return convert


def _extreme(reduce: str, arg: str) -> Converter:
    """max.dim/min.dim: (values, indices) along ``dim``."""

    def convert(b: Builder, x: Any, dim: int, keepdim: bool = False) -> tuple[str, str]:
        axis = dim % len(b.shape(x))
        values = b.emit(reduce, [b.tensor(x), b.const([axis], np.int64)], keepdims=int(keepdim))
        return values, b.emit(arg, [b.tensor(x)], axis=axis, keepdims=int(keepdim))

    return convert


def _var(b: Builder, x: Any, dim: Any = None, *, correction: Any = None, keepdim: bool = False) -> str:
    """Variance: mean squared deviation, times n / (n - correction) (Bessel's by default)."""
    shape, name = b.shape(x), b.operand(x, b.out_dtype)
    axes = _axes(dim, len(shape))
    n = int(np.prod([shape[a] for a in axes]))
    deviation = b.emit("Sub", [name, b.emit("ReduceMean", [name, b.const(axes, np.int64)])])
    squares = b.emit("Mul", [deviation, deviation])
    total = b.emit("ReduceSum", [squares, b.const(axes, np.int64)], keepdims=int(keepdim))
    return b.emit("Div", [total, b.const(n - (1 if correction is None else correction), b.out_dtype)])


def _remainder(b: Builder, x: Any, y: Any) -> str:
    """Python's modulo (the divisor's sign): Mod for integers, x - floor(x / y) * y for floats."""
    x, y = b.operand(x, b.out_dtype), b.operand(y, b.out_dtype)
    if b.out_dtype.kind in "iu":
        return b.emit("Mod", [x, y])
    return b.emit("Sub", [x, b.emit("Mul", [b.emit("Floor", [b.emit("Div", [x, y])]), y])])


def _flip(b: Builder, x: Any, dims: Sequence[int]) -> str:
    axes = _axes(list(dims), len(b.shape(x)))
    return b.emit("Slice", [b.tensor(x), b.const([-1] * len(axes), np.int64),
                            b.const([-INT64_MAX - 1] * len(axes), np.int64), b.const(axes, np.int64),
                            b.const([-1] * len(axes), np.int64)])


def _repeat(b: Builder, x: Any, repeats: Sequence[int]) -> str:
    shape = b.shape(x)
    padded = (1,) * (len(repeats) - len(shape)) + shape
    name = b.emit("Reshape", [b.tensor(x), b.const(padded, np.int64)]) if padded != shape else b.tensor(x)
    return b.emit("Tile", [name, b.const(list(repeats), np.int64)])


def _any(b: Builder, x: Any, dim: Any = None, keepdim: bool = False) -> str:
    as_int = b.emit("Cast", [b.tensor(x)], to=6)  # INT32
    axes = b.const(_axes(dim, len(b.shape(x))), np.int64)
    return b.emit("Cast", [b.emit("ReduceMax", [as_int, axes], keepdims=int(keepdim))], to=9)  # BOOL


def _reshape(b: Builder, x: Any, *_: Any) -> str:
    return b.emit("Reshape", [b.tensor(x), b.const(b.out_shape, np.int64)])


def _expand(b: Builder, x: Any, *_: Any, **__: Any) -> str:
    if b.shape(x) == b.out_shape:
        return b.tensor(x)
    return b.emit("Expand", [b.tensor(x), b.const(b.out_shape, np.int64)])


def _bmm(b: Builder, x: Any, y: Any) -> str:
    """A batched matmul. torch.matmul of a batch by a matrix (a linear layer on 3-d input)
    decomposes to expanding the matrix to every batch, then ``bmm``: MatMul broadcasts the matrix
    instead of copying it per batch."""
    return b.emit("MatMul", [_unexpanded(b, x), _unexpanded(b, y)])


def _unexpanded(b: Builder, x: Any) -> str:
    """``x``, or the matrix it was expanded from when ``x`` is view(expand(matrix, [B, M, K]))."""
    if str(getattr(x, "target", "")) in ("aten.view.default", "aten._unsafe_view.default"):
        expanded = x.args[0]
        if str(getattr(expanded, "target", "")) == "aten.expand.default":
            source = expanded.args[0]
            if len(b.shape(source)) == 2 and b.shape(x)[1:] == b.shape(source):
                return b.tensor(source)
    return b.tensor(x)


def _permute(b: Builder, x: Any, dims: Sequence[int]) -> str:
    return b.emit("Transpose", [b.tensor(x)], perm=_axes(list(dims), len(dims)))


def _transpose(b: Builder, x: Any, d0: int = 0, d1: int = 1) -> str:
    rank = len(b.shape(x))
    perm = list(range(rank))
    if rank >= 2:
        a, c = d0 % rank, d1 % rank
        perm[a], perm[c] = perm[c], perm[a]
    return b.emit("Transpose", [b.tensor(x)], perm=perm)


def _unsqueeze(b: Builder, x: Any, dim: int) -> str:
    return b.emit("Unsqueeze", [b.tensor(x), b.const([dim % len(b.out_shape)], np.int64)])


def _squeeze(b: Builder, x: Any, dims: Any = None) -> str:
    shape = b.shape(x)
    axes = [a for a in _axes(dims, len(shape)) if shape[a] == 1]
    if not axes:
        return b.tensor(x)
    return b.emit("Squeeze", [b.tensor(x), b.const(axes, np.int64)])


def _select(b: Builder, x: Any, dim: int, index: int) -> str:
    shape = b.shape(x)
    axis = dim % len(shape)
    return b.emit("Gather", [b.tensor(x), b.const(index % shape[axis], np.int64)], axis=axis)


def _slice(b: Builder, x: Any, dim: int = 0, start: Any = None, end: Any = None, step: int = 1) -> str:
    shape = b.shape(x)
    axis = dim % len(shape)
    start, end = start or 0, INT64_MAX if end is None else end
    if step == 1 and start in (0, -INT64_MAX - 1) and end >= shape[axis]:
        return b.tensor(x)
    return b.emit("Slice", [b.tensor(x), b.const([start], np.int64), b.const([end], np.int64),
                            b.const([axis], np.int64), b.const([step], np.int64)])


def _cat(b: Builder, tensors: Sequence[Any], dim: int = 0) -> str:
    return b.emit("Concat", [b.operand(t, b.out_dtype) for t in tensors], axis=dim % len(b.out_shape))


def _split(b: Builder, x: Any, sizes: Sequence[int], dim: int = 0) -> tuple[str, ...]:
    axis = dim % len(b.shape(x))
    return tuple(b.emit("Split", [b.tensor(x), b.const(list(sizes), np.int64)], outputs=len(sizes),
                        axis=axis))


def _alias(b: Builder, x: Any, *_: Any, **__: Any) -> str:
    return b.tensor(x)


def _to_copy(b: Builder, x: Any, **_: Any) -> str:
    return b.operand(x, b.out_dtype)


def _addmm(b: Builder, bias: Any, x: Any, y: Any, *, beta: float = 1, alpha: float = 1) -> str:
    return b.emit("Gemm", [b.tensor(x), b.tensor(y), b.operand(bias, b.out_dtype)], alpha=alpha, beta=beta)


def _clip(b: Builder, x: Any, low: Any = None, high: Any = None) -> str:
    bounds = [b.const(v, b.out_dtype) if v is not None else "" for v in (low, high)]
    while bounds and not bounds[-1]:
        bounds.pop()
    return b.emit("Clip", [b.operand(x, b.out_dtype), *bounds])


def _where(b: Builder, cond: Any, x: Any, y: Any) -> str:
    return b.emit("Where", [b.operand(cond, np.dtype(bool)), b.operand(x, b.out_dtype),
                            b.operand(y, b.out_dtype)])


def _full(b: Builder, value: Any) -> str:
    """A tensor of the node's shape and dtype filled with ``value``: a broadcast scalar."""
    return b.emit("Expand", [b.const(value, b.out_dtype), b.const(b.out_shape, np.int64)])


def _softmax(op: str) -> Converter:
    return lambda b, x, dim, half_to_float=False: b.emit(op, [b.tensor(x)], axis=dim % len(b.shape(x)))


def _rsqrt(b: Builder, x: Any) -> str:
    return b.emit("Reciprocal", [b.emit("Sqrt", [b.tensor(x)])])


def _pad(b: Builder, x: Any, pad: Sequence[int], value: float = 0) -> str:
    rank = len(b.shape(x))
    begins, ends = [0] * rank, [0] * rank
    for k in range(len(pad) // 2):  # torch lists (begin, end) pairs from the last axis
        begins[rank - 1 - k], ends[rank - 1 - k] = pad[2 * k], pad[2 * k + 1]
    return b.emit("Pad", [b.tensor(x), b.const(begins + ends, np.int64), b.const(value, b.out_dtype)])


ATEN: dict[str, Converter] = {
    # convolution, pooling, normalization
    "aten.convolution.default": convolution,
    "aten._native_batch_norm_legit_no_training.default": batch_norm,
    "aten.native_group_norm.default": group_norm,
    "aten.upsample_nearest2d.vec": upsample("nearest"),
    "aten.upsample_bilinear2d.vec": upsample("linear"),
    "aten.native_layer_norm.default": layer_norm,
    "aten.max_pool2d_with_indices.default": max_pool,
    "aten.avg_pool2d.default": avg_pool,
    "aten._adaptive_avg_pool2d.default": adaptive_avg_pool,
    # matrix products, attention
    "aten.addmm.default": _addmm,
    "aten.mm.default": lambda b, x, y: b.emit("MatMul", [b.tensor(x), b.tensor(y)]),
    "aten.bmm.default": _bmm,
    "aten._native_multi_head_attention.default": multi_head_attention,
    "aten._transformer_encoder_layer_fwd.default": encoder_layer,
    # elementwise
    "aten.add.Tensor": _arith("Add"),
    "aten.add.Scalar": _arith("Add"),
    "aten.sub.Tensor": _arith("Sub"),
    "aten.sub.Scalar": _arith("Sub"),
    "aten.mul.Tensor": _arith("Mul"),
    "aten.mul.Scalar": _arith("Mul"),
    "aten.div.Tensor": _arith("Div"),
    "aten.div.Scalar": _arith("Div"),
    "aten.pow.Tensor_Scalar": _arith("Pow"),
    "aten.pow.Tensor_Tensor": _arith("Pow"),
    "aten.pow.Scalar": _arith("Pow"),
    "aten.fmod.Tensor": lambda b, x, y: b.emit("Mod", [b.operand(x, b.out_dtype), b.operand(y, b.out_dtype)],
                                               fmod=1),
    "aten.fmod.Scalar": lambda b, x, y: b.emit("Mod", [b.operand(x, b.out_dtype), b.operand(y, b.out_dtype)],
                                               fmod=1),
    "aten.remainder.Tensor": _remainder,
    "aten.remainder.Scalar": _remainder,
    "aten.maximum.default": _arith("Max"),
    "aten.minimum.default": _arith("Min"),
    "aten.relu.default": _unary("Relu"),
    "aten.sigmoid.default": _unary("Sigmoid"),
    "aten.tanh.default": _unary("Tanh"),
    "aten.exp.default": _unary("Exp"),
    "aten.log.default": _unary("Log"),
    "aten.sqrt.default": _unary("Sqrt"),
    "aten.rsqrt.default": _rsqrt,
    "aten.reciprocal.default": _unary("Reciprocal"),
    "aten.neg.default": _unary("Neg"),
    "aten.abs.default": _unary("Abs"),
    "aten.erf.default": _unary("Erf"),
    "aten.sin.default": _unary("Sin"),
    "aten.cos.default": _unary("Cos"),
    "aten.floor.default": _unary("Floor"),
    "aten.round.default": _unary("Round"),
    "aten.sign.default": _unary("Sign"),
    "aten.isnan.default": _unary("IsNaN"),
    "aten.isinf.default": _unary("IsInf"),
    "aten.log1p.default": lambda b, x: b.emit("Log", [b.emit("Add", [b.tensor(x), b.const(1, b.out_dtype)])]),
    "aten.expm1.default": lambda b, x: b.emit("Sub", [b.emit("Exp", [b.tensor(x)]), b.const(1, b.out_dtype)]),
    "aten.ceil.default": _unary("Ceil"),
    "aten.gelu.default": lambda b, x, approximate="none": b.emit("Gelu", [b.tensor(x)],
                                                                 approximate=approximate),
    "aten.leaky_relu.default": lambda b, x, slope=0.01: b.emit("LeakyRelu", [b.tensor(x)], alpha=slope),
    "aten.hardsigmoid.default": _unary("HardSigmoid", alpha=1 / 6, beta=0.5),
    "aten.hardswish.default": _unary("HardSwish"),
    "aten.hardtanh.default": lambda b, x, low=-1.0, high=1.0: _clip(b, x, low, high),
    "aten.clamp.default": _clip,
    "aten.where.self": _where,
    "aten.eq.Scalar": _compare("Equal"),
    "aten.eq.Tensor": _compare("Equal"),
    "aten.ne.Scalar": _compare("Equal", negate=True),
    "aten.ne.Tensor": _compare("Equal", negate=True),
    "aten.lt.Scalar": _compare("Less"),
    "aten.lt.Tensor": _compare("Less"),
    "aten.le.Scalar": _compare("LessOrEqual"),
    "aten.le.Tensor": _compare("LessOrEqual"),
    "aten.gt.Scalar": _compare("Greater"),
    "aten.gt.Tensor": _compare("Greater"),
    "aten.ge.Scalar": _compare("GreaterOrEqual"),
    "aten.ge.Tensor": _compare("GreaterOrEqual"),
    "aten.logical_not.default": lambda b, x: b.emit("Not", [b.operand(x, np.dtype(bool))]),
    "aten.logical_and.default": _logical("And"),
    "aten.logical_or.default": _logical("Or"),
    "aten.logical_xor.default": _logical("Xor"),
    "aten.bitwise_and.Tensor": _bitwise("BitwiseAnd", "And"),
    "aten.bitwise_or.Tensor": _bitwise("BitwiseOr", "Or"),
    "aten.bitwise_xor.Tensor": _bitwise("BitwiseXor", "Xor"),
    "aten.bitwise_not.default": _bitwise_not,
    # reductions and softmax
    "aten.mean.dim": _reduce("ReduceMean"),
    "aten.sum.dim_IntList": _reduce("ReduceSum"),
    "aten.amax.default": _reduce("ReduceMax"),
    "aten.amin.default": _reduce("ReduceMin"),
    "aten.prod.dim_int": lambda b, x, dim, keepdim=False, **_: _reduce("ReduceProd")(b, x, [dim], keepdim),
    "aten.var.correction": _var,
    "aten.argmax.default": _arg("ArgMax"),
    "aten.argmin.default": _arg("ArgMin"),
    "aten.max.dim": _extreme("ReduceMax", "ArgMax"),
    "aten.min.dim": _extreme("ReduceMin", "ArgMin"),
    "aten.cumsum.default": lambda b, x, dim, **_: b.emit(
        "CumSum", [b.operand(x, b.out_dtype), b.const(dim % len(b.shape(x)), np.int64)]),
    "aten.any.dim": _any,
    "aten.any.dims": _any,
    "aten._softmax.default": _softmax("Softmax"),
    "aten._log_softmax.default": _softmax("LogSoftmax"),
    # shapes and copies
    "aten.view.default": _reshape,
    "aten._unsafe_view.default": _reshape,
    "aten.reshape.default": _reshape,
    "aten.expand.default": _expand,
    "aten.permute.default": _permute,
    "aten.t.default": _transpose,
    "aten.transpose.int": _transpose,
    "aten.unsqueeze.default": _unsqueeze,
    "aten.squeeze.default": _squeeze,
    "aten.squeeze.dim": _squeeze,
    "aten.squeeze.dims": _squeeze,
    "aten.select.int": _select,
    "aten.slice.Tensor": _slice,
    "aten.cat.default": _cat,
    "aten.split_with_sizes.default": _split,
    "aten.constant_pad_nd.default": _pad,
    "aten.flip.default": _flip,
    "aten.repeat.default": _repeat,
    "aten.gather.default": lambda b, x, dim, idx, **_: b.emit(
        "GatherElements", [b.tensor(x), b.tensor(idx)], axis=dim % len(b.shape(x))),
    "aten.embedding.default": lambda b, w, idx, *_: b.emit("Gather", [b.tensor(w), b.tensor(idx)], axis=0),
    "aten.index_select.default": lambda b, x, dim, idx: b.emit(
        "Gather", [b.tensor(x), b.tensor(idx)], axis=dim % len(b.shape(x))),
    "aten.clone.default": _alias,
    "aten.alias.default": _alias,
    "aten.detach.default": _alias,
    "aten.lift_fresh_copy.default": _alias,
    "aten._to_copy.default": _to_copy,
    "aten._assert_tensor_metadata.default": lambda b, *_, **__: None,  # a check export adds; no value
    # tensors made from nothing (static shapes: broadcast scalars)
    "aten.full.default": lambda b, size, value, **_: _full(b, value),
    "aten.full_like.default": lambda b, x, value, **_: _full(b, value),
    "aten.zeros_like.default": lambda b, x, **_: _full(b, 0),
    "aten.ones_like.default": lambda b, x, **_: _full(b, 1),
    "aten.scalar_tensor.default": lambda b, value, **_: b.const(value, b.out_dtype),
    "aten.arange.default": lambda b, end, **_: b.const(np.arange(end), b.out_dtype),
    "aten.arange.start_step": lambda b, start, end, step=1, **_: b.const(np.arange(start, end, step),
                                                                         b.out_dtype),
}
"""Core ATen operator (``str(OpOverload)``) -> its converter."""
