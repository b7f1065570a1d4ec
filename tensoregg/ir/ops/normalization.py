"""Normalization operators: batch, instance, layer, RMS, group, Lp and mean-variance normalization,
and Dropout (an identity at inference).

Each reference follows the arithmetic of the ONNX definition: its function body where ONNX defines
the op as a function (GroupNormalization and MeanVarianceNormalization take the variance as
E[x^2] - E[x]^2, as those bodies do).
"""

from __future__ import annotations

import numpy as np

from tensoregg.errors import InvalidModel, UnsupportedOperator
from tensoregg.ir.dtypes import dtype_of
from tensoregg.ir.registry import Attr, InferCtx, Upgrade, op
from tensoregg.ir.shapes import norm_axes
from tensoregg.ir.types import TensorType

_STASH_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_EPSILON = {"epsilon": Attr("float", 1e-5)}
_STASHED = {**_EPSILON, "stash_type": Attr("int", 1)}


# ---- shared checks and arithmetic -------------------------------------------------------------

def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype.name.startswith("bfloat")


def _float_input(ctx: InferCtx, i: int = 0) -> TensorType:
    t = ctx.type(i)
    if not _is_float(t.dtype):
        ctx.fail(f"input {i} must be a float tensor, got {t}")
    return t


def _channel_params(ctx: InferCtx, indices: range, channels: int) -> None:
    """Inputs ``indices`` must be float vectors holding one value per channel."""
    for i in indices:
        _float_input(ctx, i)
        if ctx.shape(i) != (channels,):
            ctx.fail(f"input {i} must have shape [{channels}] (one value per channel), got {ctx.type(i)}")


def _broadcasts_to(ctx: InferCtx, i: int, shape: tuple[int, ...]) -> None:
    """Input ``i`` must broadcast unidirectionally to ``shape``."""
    try:
        ok = tuple(np.broadcast_shapes(ctx.shape(i), shape)) == shape
    except ValueError:
        ok = False
    if not ok:
        ctx.fail(f"input {i} of shape {list(ctx.shape(i))} does not broadcast to {list(shape)}")


def _stash_dtype(ctx: InferCtx) -> np.dtype:
    stash = ctx.attrs["stash_type"]
    if stash not in _STASH_TYPES:
        raise InvalidModel(f"{ctx.op} node {ctx.node!r}: stash_type must be a float type "
                           f"(one of {_STASH_TYPES}), got {stash}")
    return dtype_of(stash)


def _stash(attrs: dict, x: np.ndarray) -> np.ndarray:
    return x.astype(dtype_of(attrs["stash_type"]))


def _per_channel(p: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast against an (N, C, D1, ...) tensor."""
    return p.reshape(-1, *(1,) * (rank - 2))


def _wide(x: np.ndarray) -> np.ndarray:
    """Floats narrower than float32 (float16, bfloat16) widened to float32 for statistics."""
    return x.astype(np.float32) if x.dtype.itemsize < 4 else x


def _scale_shift(x: np.ndarray, mean: np.ndarray, var: np.ndarray, epsilon: float,
                 scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """scale * (x - mean) / sqrt(var + epsilon) + bias, in x's dtype."""
    return (scale * (x - mean) / np.sqrt(var + epsilon) + bias).astype(x.dtype)


def _trailing_axes(ctx: InferCtx) -> tuple[TensorType, int]:
    """X and the first normalized axis for ops normalizing over ``[axis, rank)``."""
    x = _float_input(ctx)
    return x, ctx.axis(ctx.attrs["axis"], x.rank)


# ---- BatchNormalization -----------------------------------------------------------------------

def _batchnorm_shape(ctx: InferCtx) -> list[TensorType]:
    x = _float_input(ctx)
    if x.rank < 1:
        ctx.fail("X must be at least 1-D")
    channels = x.shape[1] if x.rank >= 2 else 1
    _channel_params(ctx, range(1, 5), channels)
    if not ctx.attrs["training_mode"] and ctx.n_outputs > 1:
        ctx.fail("running_mean/running_var are outputs only in training mode (training_mode=1)")
    stats = TensorType(ctx.dtype(3), (channels,))
    return [x, stats, stats]


def _batchnorm_adapt(up: Upgrade) -> None:
    up.attrs.pop("consumed_inputs", None)
    if up.attrs.pop("spatial", 1) == 0:
        up.unsupported("spatial=0 (per-activation statistics); flatten X to (N, C*D1*...) instead")
    if up.opset < 7 and not up.attrs.pop("is_test", 0):
        up.attrs["training_mode"] = 1  # is_test=0 (the default) meant training


@op("BatchNormalization", "X scale B input_mean input_var", "Y running_mean? running_var?",
    shape=_batchnorm_shape, adapt=_batchnorm_adapt,
    attrs={**_EPSILON, "momentum": Attr("float", 0.9), "training_mode": Attr("int", 0)})
def batch_normalization(attrs, x, scale, b, mean, var):
    """Y = (X - mean) / sqrt(var + epsilon) * scale + B per channel; in training mode mean and var
    are the batch's statistics and the running statistics are updated with momentum."""
    rank = max(x.ndim, 2)
    scale, b = _per_channel(scale, rank), _per_channel(b, rank)
    eps = attrs["epsilon"]
    if not attrs["training_mode"]:
        return _scale_shift(x, _per_channel(mean, rank), _per_channel(var, rank), eps, scale, b)
    axes = tuple(a for a in range(x.ndim) if a != 1)
    current_mean, current_var = _wide(x).mean(axis=axes), _wide(x).var(axis=axes)
    momentum = attrs["momentum"]
    running_mean = (mean * momentum + current_mean * (1 - momentum)).astype(mean.dtype)
    running_var = (var * momentum + current_var * (1 - momentum)).astype(var.dtype)
    y = _scale_shift(x, _per_channel(current_mean, rank), _per_channel(current_var, rank), eps, scale, b)
    return y, running_mean, running_var


# ---- InstanceNormalization and GroupNormalization ----------------------------------------------

def _instancenorm_shape(ctx: InferCtx) -> TensorType:
    x = _float_input(ctx)
    if x.rank < 2:
        ctx.fail(f"input must be at least 2-D (N x C x ...), got {x}")
    _channel_params(ctx, range(1, 3), x.shape[1])
    return x


def _drop_consumed_inputs(up: Upgrade) -> None:
    up.attrs.pop("consumed_inputs", None)


@op("InstanceNormalization", "input scale B", "output", shape=_instancenorm_shape,
    attrs=_EPSILON, adapt=_drop_consumed_inputs)
def instance_normalization(attrs, x, scale, b):
    """scale * (x - mean) / sqrt(var + epsilon) + B, statistics per instance and channel."""
    axes = tuple(range(2, x.ndim))
    mean, var = np.mean(x, axis=axes, keepdims=True), np.var(x, axis=axes, keepdims=True)
    return _scale_shift(x, mean, var, attrs["epsilon"], _per_channel(scale, x.ndim), _per_channel(b, x.ndim))


def _groupnorm_shape(ctx: InferCtx) -> TensorType:
    x = _instancenorm_shape(ctx)
    _stash_dtype(ctx)
    groups = ctx.attrs["num_groups"]
    if groups <= 0 or x.shape[1] % groups:
        ctx.fail(f"num_groups {groups} must be positive and divide the {x.shape[1]} channels")
    return x


def _groupnorm_adapt(up: Upgrade) -> None:
    """Opset < 21 took scale and bias per group: repeat each over its group's channels."""
    x, groups = up.types[0], up.attrs.get("num_groups")
    if up.opset >= 21 or x is None or x.rank < 2 or not groups or x.shape[1] % groups:
        return
    channels = x.shape[1]
    for i in (1, 2):
        column = up.add("Reshape", [up.inputs[i], up.const(np.array([groups, 1], np.int64))])
        wide = up.add("Expand", [column, up.const(np.array([groups, channels // groups], np.int64))])
        up.inputs[i] = up.add("Reshape", [wide, up.const(np.array([channels], np.int64))])


@op("GroupNormalization", "X scale bias", "Y", shape=_groupnorm_shape, adapt=_groupnorm_adapt,
    attrs={**_STASHED, "num_groups": Attr("int")})
def group_normalization(attrs, x, scale, bias):
    """scale * (x - mean) / sqrt(var + epsilon) + bias, statistics per instance and group of
    channels computed in stash_type precision."""
    groups = _stash(attrs, x).reshape(x.shape[0], attrs["num_groups"], -1)
    mean = groups.mean(axis=2, keepdims=True)
    var = (groups * groups).mean(axis=2, keepdims=True) - mean * mean
    normalized = ((groups - mean) / np.sqrt(var + attrs["epsilon"])).reshape(x.shape).astype(x.dtype)
    return (_per_channel(scale, x.ndim) * normalized + _per_channel(bias, x.ndim)).astype(x.dtype)


# ---- LayerNormalization and RMSNormalization --------------------------------------------------

def _layernorm_shape(ctx: InferCtx) -> list[TensorType]:
    x, axis = _trailing_axes(ctx)
    for i in (1, 2):
        if ctx.has(i):
            _float_input(ctx, i)
            _broadcasts_to(ctx, i, x.shape)
    stats = TensorType(_stash_dtype(ctx), x.shape[:axis] + (1,) * (x.rank - axis))
    return [x, stats, stats]


@op("LayerNormalization", "X Scale B?", "Y Mean? InvStdDev?", shape=_layernorm_shape,
    attrs={**_STASHED, "axis": Attr("int", -1)})
def layer_normalization(attrs, x, scale, b=None):
    """(x - mean) / sqrt(var + epsilon) * Scale + B over axes [axis, rank), the statistics in
    stash_type precision; also returns Mean and 1 / sqrt(var + epsilon)."""
    axes = tuple(range(attrs["axis"] % x.ndim, x.ndim))
    xu = _stash(attrs, x)
    mean = xu.mean(axis=axes, keepdims=True)
    deviation = xu - mean
    var = (deviation * deviation).mean(axis=axes, keepdims=True)
    inv_std = np.reciprocal(np.sqrt(var + attrs["epsilon"]))
    y = (deviation * inv_std).astype(x.dtype) * scale
    if b is not None:
        y = y + b
    return y.astype(x.dtype), mean, inv_std


def _rmsnorm_shape(ctx: InferCtx) -> TensorType:
    x, _ = _trailing_axes(ctx)
    _float_input(ctx, 1)
    _broadcasts_to(ctx, 1, x.shape)
    _stash_dtype(ctx)
    return TensorType(ctx.dtype(1), x.shape)


@op("RMSNormalization", "X scale", "Y", shape=_rmsnorm_shape, attrs={**_STASHED, "axis": Attr("int", -1)})
def rms_normalization(attrs, x, scale):
    """x / sqrt(mean(x^2) + epsilon) * scale over axes [axis, rank), in stash_type precision."""
    axes = tuple(range(attrs["axis"] % x.ndim, x.ndim))
    xu = _stash(attrs, x)
    rms = np.sqrt((xu * xu).mean(axis=axes, keepdims=True) + attrs["epsilon"])
    return ((xu / rms).astype(x.dtype) * scale).astype(scale.dtype)


# ---- LpNormalization and MeanVarianceNormalization --------------------------------------------

def _lpnorm_shape(ctx: InferCtx) -> TensorType:
    x, _ = _trailing_axes(ctx)
    if ctx.attrs["p"] not in (1, 2):
        raise InvalidModel(f"LpNormalization node {ctx.node!r}: p must be 1 or 2, got {ctx.attrs['p']}")
    return x


@op("LpNormalization", "input", "output", shape=_lpnorm_shape,
    attrs={"axis": Attr("int", -1), "p": Attr("int", 2)})
def lp_normalization(attrs, x):
    """x / ||x||_p along axis (p = 1 or 2); 0 where the norm is 0."""
    axis = attrs["axis"]
    if attrs["p"] == 1:
        norm = np.abs(x).sum(axis=axis, keepdims=True)
    else:
        norm = np.sqrt((x * x).sum(axis=axis, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm == 0, 0, x / norm).astype(x.dtype)


def _mvn_shape(ctx: InferCtx) -> TensorType:
    x = _float_input(ctx)
    norm_axes(ctx, ctx.attrs["axes"], x.rank)
    return x


@op("MeanVarianceNormalization", "X", "Y", shape=_mvn_shape, attrs={"axes": Attr("ints", (0, 2, 3))})
def mean_variance_normalization(attrs, x):
    """(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9) over axes."""
    axes = tuple(a % x.ndim for a in attrs["axes"])
    mean = x.mean(axis=axes, keepdims=True)
    std = np.sqrt((x * x).mean(axis=axes, keepdims=True) - mean * mean)
    return ((x - mean) / (std + 1e-9)).astype(x.dtype)


# ---- Dropout ----------------------------------------------------------------------------------

def _dropout_shape(ctx: InferCtx) -> list[TensorType]:
    """Training mode is supported only where it is the identity too: a constant ratio of 0."""
    x = ctx.type(0)
    if ctx.has(2) and bool(np.asarray(ctx.value(2)).reshape(-1)[0]):
        ratio = float(np.asarray(ctx.value(1)).reshape(-1)[0]) if ctx.has(1) else 0.5
        if ratio != 0.0:
            raise UnsupportedOperator("Dropout", node=ctx.node, detail=f"training_mode=1 with ratio {ratio} "
                                      "drops elements at random")
    return [x, TensorType(np.dtype(np.bool_), x.shape)]


def _dropout_adapt(up: Upgrade) -> None:
    up.attrs.pop("consumed_inputs", None)
    if up.opset < 12:
        ratio = up.attrs.pop("ratio", 0.5)
        if up.opset < 7 and not up.attrs.pop("is_test", 0):  # is_test=0 (the default) meant training
            up.inputs[1:] = [up.const(np.asarray(ratio, np.float32)), up.const(np.asarray(True))]


@op("Dropout", "data ratio? training_mode?", "output mask?", shape=_dropout_shape, static=(1, 2),
    adapt=_dropout_adapt, attrs={"seed": Attr("int", 0)})
def dropout(attrs, data, ratio=None, training_mode=None):
    """The identity at inference (and for ratio 0); the mask is all True."""
    return data, np.ones(data.shape, np.bool_)
