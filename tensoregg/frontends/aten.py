"""The ATen -> IR table: how each core ATen operator (torch.export's op set after its default
decompositions) becomes IR nodes. ``ATEN`` is the one place that maps them; ``tensoregg.frontends.torch``
walks the exported graph and calls the converters: ``aten_math`` (arithmetic, comparisons,
reductions), ``aten_shape`` (views, copies, data movement), ``aten_nn`` (network layers, the fused
attention kernels), and one-liners here.

A converter is called as ``fn(b, *args, **kwargs)`` with the ATen node's own arguments: a tensor
argument is an fx ``Node``, turned into an IR value name by ``b.tensor``; other arguments are Python
values. It returns the IR value name of its result, or a tuple of names (``None`` for an output the
IR does not compute) for an op with several results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from tensoregg.frontends.aten_math import (
    addmm,
    any_,
    arg,
    arith,
    bitwise,
    bitwise_not,
    clip,
    compare,
    extreme,
    full,
    logical,
    reduce,
    remainder,
    rsqrt,
    softmax,
    unary,
    var,
    where,
)
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
    nms,
    upsample,
)
from tensoregg.frontends.aten_shape import (
    alias,
    bmm,
    cat,
    expand,
    flip,
    pad,
    permute,
    repeat,
    reshape,
    select,
    slice_,
    split,
    squeeze,
    to_copy,
    transpose,
    unsqueeze,
)


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


def index(b: Builder, x: Any, indices: Sequence[Any]) -> str:
    """``x[..., idx]``: one index tensor (the others None) gathers along its axis; a 1-D bool mask
    keeps the slices where it is true (Compress: a data-dependent shape)."""
    given = [k for k, i in enumerate(indices) if i is not None]
    if len(given) != 1:
        return b.unsupported(f"indexing by {len(given)} tensors (one is supported)")
    axis, idx = given[0], b.tensor(indices[given[0]])
    if b.dtype(idx) == np.bool_:
        if len(b.shape(idx)) != 1:
            return b.unsupported(f"indexing by a {len(b.shape(idx))}-D bool mask (1-D is supported)")
        return b.emit("Compress", [b.tensor(x), idx], axis=axis)
    return b.emit("Gather", [b.tensor(x), idx], axis=axis)


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
    "aten.addmm.default": addmm,
    "aten.mm.default": lambda b, x, y: b.emit("MatMul", [b.tensor(x), b.tensor(y)]),
    "aten.bmm.default": bmm,
    "aten._native_multi_head_attention.default": multi_head_attention,
    "aten._transformer_encoder_layer_fwd.default": encoder_layer,
    # elementwise
    "aten.add.Tensor": arith("Add"),
    "aten.add.Scalar": arith("Add"),
    "aten.sub.Tensor": arith("Sub"),
    "aten.sub.Scalar": arith("Sub"),
    "aten.mul.Tensor": arith("Mul"),
    "aten.mul.Scalar": arith("Mul"),
    "aten.div.Tensor": arith("Div"),
    "aten.div.Scalar": arith("Div"),
    "aten.pow.Tensor_Scalar": arith("Pow"),
    "aten.pow.Tensor_Tensor": arith("Pow"),
    "aten.pow.Scalar": arith("Pow"),
    "aten.fmod.Tensor": lambda b, x, y: b.emit("Mod", [b.operand(x, b.out_dtype), b.operand(y, b.out_dtype)],
                                               fmod=1),
    "aten.fmod.Scalar": lambda b, x, y: b.emit("Mod", [b.operand(x, b.out_dtype), b.operand(y, b.out_dtype)],
                                               fmod=1),
    "aten.remainder.Tensor": remainder,
    "aten.remainder.Scalar": remainder,
    "aten.maximum.default": arith("Max"),
    "aten.minimum.default": arith("Min"),
    "aten.relu.default": unary("Relu"),
    "aten.sigmoid.default": unary("Sigmoid"),
    "aten.tanh.default": unary("Tanh"),
    "aten.exp.default": unary("Exp"),
    "aten.log.default": unary("Log"),
    "aten.sqrt.default": unary("Sqrt"),
    "aten.rsqrt.default": rsqrt,
    "aten.reciprocal.default": unary("Reciprocal"),
    "aten.neg.default": unary("Neg"),
    "aten.abs.default": unary("Abs"),
    "aten.erf.default": unary("Erf"),
    "aten.sin.default": unary("Sin"),
    "aten.cos.default": unary("Cos"),
    "aten.floor.default": unary("Floor"),
    "aten.round.default": unary("Round"),
    "aten.sign.default": unary("Sign"),
    "aten.isnan.default": unary("IsNaN"),
    "aten.isinf.default": unary("IsInf"),
    "aten.log1p.default": lambda b, x: b.emit("Log", [b.emit("Add", [b.tensor(x), b.const(1, b.out_dtype)])]),
    "aten.expm1.default": lambda b, x: b.emit("Sub", [b.emit("Exp", [b.tensor(x)]), b.const(1, b.out_dtype)]),
    "aten.ceil.default": unary("Ceil"),
    "aten.gelu.default": lambda b, x, approximate="none": b.emit("Gelu", [b.tensor(x)],
                                                                 approximate=approximate),
    "aten.leaky_relu.default": lambda b, x, slope=0.01: b.emit("LeakyRelu", [b.tensor(x)], alpha=slope),
    "aten.hardsigmoid.default": unary("HardSigmoid", alpha=1 / 6, beta=0.5),
    "aten.hardswish.default": unary("HardSwish"),
    "aten.hardtanh.default": lambda b, x, low=-1.0, high=1.0: clip(b, x, low, high),
    "aten.clamp.default": clip,
    "aten.where.self": where,
    "aten.eq.Scalar": compare("Equal"),
    "aten.eq.Tensor": compare("Equal"),
    "aten.ne.Scalar": compare("Equal", negate=True),
    "aten.ne.Tensor": compare("Equal", negate=True),
    "aten.lt.Scalar": compare("Less"),
    "aten.lt.Tensor": compare("Less"),
    "aten.le.Scalar": compare("LessOrEqual"),
    "aten.le.Tensor": compare("LessOrEqual"),
    "aten.gt.Scalar": compare("Greater"),
    "aten.gt.Tensor": compare("Greater"),
    "aten.ge.Scalar": compare("GreaterOrEqual"),
    "aten.ge.Tensor": compare("GreaterOrEqual"),
    "aten.logical_not.default": lambda b, x: b.emit("Not", [b.operand(x, np.dtype(bool))]),
    "aten.logical_and.default": logical("And"),
    "aten.logical_or.default": logical("Or"),
    "aten.logical_xor.default": logical("Xor"),
    "aten.bitwise_and.Tensor": bitwise("BitwiseAnd", "And"),
    "aten.bitwise_or.Tensor": bitwise("BitwiseOr", "Or"),
    "aten.bitwise_xor.Tensor": bitwise("BitwiseXor", "Xor"),
    "aten.bitwise_not.default": bitwise_not,
    # reductions and softmax
    "aten.mean.dim": reduce("ReduceMean"),
    "aten.sum.dim_IntList": reduce("ReduceSum"),
    "aten.amax.default": reduce("ReduceMax"),
    "aten.amin.default": reduce("ReduceMin"),
    "aten.prod.dim_int": lambda b, x, dim, keepdim=False, **_: reduce("ReduceProd")(b, x, [dim], keepdim),
    "aten.var.correction": var,
    "aten.argmax.default": arg("ArgMax"),
    "aten.argmin.default": arg("ArgMin"),
    "aten.max.dim": extreme("ReduceMax", "ArgMax"),
    "aten.min.dim": extreme("ReduceMin", "ArgMin"),
    "aten.cumsum.default": lambda b, x, dim, **_: b.emit(
        "CumSum", [b.operand(x, b.out_dtype), b.const(dim % len(b.shape(x)), np.int64)]),
    "aten.any.dim": any_,
    "aten.any.dims": any_,
    "aten._softmax.default": softmax("Softmax"),
    "aten._log_softmax.default": softmax("LogSoftmax"),
    # shapes and copies
    "aten.view.default": reshape,
    "aten._unsafe_view.default": reshape,
    "aten.reshape.default": reshape,
    "aten.expand.default": expand,
    "aten.permute.default": permute,
    "aten.t.default": transpose,
    "aten.transpose.int": transpose,
    "aten.unsqueeze.default": unsqueeze,
    "aten.squeeze.default": squeeze,
    "aten.squeeze.dim": squeeze,
    "aten.squeeze.dims": squeeze,
    "aten.select.int": select,
    "aten.slice.Tensor": slice_,
    "aten.cat.default": cat,
    "aten.split_with_sizes.default": split,
    "aten.constant_pad_nd.default": pad,
    "aten.flip.default": flip,
    "aten.repeat.default": repeat,
    "aten.gather.default": lambda b, x, dim, idx, **_: b.emit(
        "GatherElements", [b.tensor(x), b.tensor(idx)], axis=dim % len(b.shape(x))),
    "aten.embedding.default": lambda b, w, idx, *_: b.emit("Gather", [b.tensor(w), b.tensor(idx)], axis=0),
    "aten.index.Tensor": index,
    "aten.nonzero.default": lambda b, x: b.emit("Transpose", [b.emit("NonZero", [b.tensor(x)])], perm=[1, 0]),
    "torchvision.nms.default": nms,
    "aten.index_select.default": lambda b, x, dim, idx: b.emit(
        "Gather", [b.tensor(x), b.tensor(idx)], axis=dim % len(b.shape(x))),
    "aten.clone.default": alias,
    "aten.alias.default": alias,
    "aten.detach.default": alias,
    "aten.lift_fresh_copy.default": alias,
    "aten._to_copy.default": to_copy,
    "aten._assert_tensor_metadata.default": lambda b, *_, **__: None,  # a check export adds; no value
    # tensors made from nothing (static shapes: broadcast scalars)
    "aten.full.default": lambda b, size, value, **_: full(b, value),
    "aten.full_like.default": lambda b, x, value, **_: full(b, value),
    "aten.zeros_like.default": lambda b, x, **_: full(b, 0),
    "aten.ones_like.default": lambda b, x, **_: full(b, 1),
    "aten.scalar_tensor.default": lambda b, value, **_: b.const(value, b.out_dtype),
    "aten.arange.default": lambda b, end, **_: b.const(np.arange(end), b.out_dtype),
    "aten.arange.start_step": lambda b, start, end, step=1, **_: b.const(np.arange(start, end, step),
                                                                         b.out_dtype),
}
"""Core ATen operator (``str(OpOverload)``) -> its converter."""
