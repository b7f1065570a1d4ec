"""Convolution and pooling: Conv and its integer, quantized, deformable and causal forms, ConvTranspose,
Col2Im, Max/Average/Lp pooling (windowed and global), MaxUnpool and LRN, over any number of spatial axes.

Every windowed operator shares one geometry (:class:`ConvWindow`: kernel, strides, dilations, begin and
end pads, output size) computed from explicit ``pads`` or ``auto_pad``. Convolutions and pools read
the windows as a strided view of the padded input (im2col by numpy stride tricks); convolutions then
contract each group with one batched matmul. ConvTranspose and Col2Im scatter-add one kernel tap at
a time ("fold").
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tensoregg.errors import InvalidModel, UnsupportedOperator
from tensoregg.ir.limits import check_memory
from tensoregg.ir.registry import Attr, InferCtx, Upgrade, op
from tensoregg.ir.types import TensorType

Shape = tuple[int, ...]

_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
_WINDOW_ATTRS = {"auto_pad": Attr("string", "NOTSET"), "dilations": Attr("ints", None),
                 "kernel_shape": Attr("ints", None), "pads": Attr("ints", None),
                 "strides": Attr("ints", None)}
_CONV_ATTRS = {**_WINDOW_ATTRS, "group": Attr("int", 1)}
_POOL_ATTRS = {**_WINDOW_ATTRS, "kernel_shape": Attr("ints"), "ceil_mode": Attr("int", 0)}


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype.name.startswith(("bfloat", "float"))


def _wide(x: np.ndarray) -> np.ndarray:
    """Floats narrower than float32 (float16, bfloat16) computed in float32."""
    return x.astype(np.float32) if _is_float(x.dtype) and x.dtype.itemsize < 4 else x


def _invalid(ctx: InferCtx, message: str) -> NoReturn:
    raise InvalidModel(f"{ctx.op} node {ctx.node!r}: {message}")


def _float_input(ctx: InferCtx, *indices: int) -> np.dtype:
    """The one float dtype that the given (present) inputs share."""
    dtypes = {ctx.dtype(i) for i in indices if ctx.has(i)}
    if len(dtypes) != 1 or not _is_float(next(iter(dtypes))):
        ctx.fail(f"inputs {list(indices)} must share one float dtype, got "
                 f"{', '.join(str(ctx.type(i)) for i in indices if ctx.has(i))}")
    return dtypes.pop()


# ---- window geometry --------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvWindow:
    """Where each output position's window lies along the spatial axes: output position ``o`` reads
    (or, transposed, writes) input coordinates ``o * stride - begin + k * dilation`` for each tap k."""

    kernel: Shape
    strides: Shape
    dilations: Shape
    begin: Shape
    end: Shape
    out: Shape

    @property
    def span(self) -> Shape:
        """The extent of each dilated kernel axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))

    def taps(self, axis: int) -> np.ndarray:
        """The input coordinate of each (output position, kernel tap) along ``axis``."""
        starts = np.arange(self.out[axis]) * self.strides[axis] - self.begin[axis]
        return starts[:, None] + np.arange(self.kernel[axis]) * self.dilations[axis]


def _attr_ints(attrs: dict[str, Any], name: str, n: int, default: int) -> Shape:
    return tuple(attrs.get(name) or (default,) * n)


def conv_window(attrs: dict[str, Any], spatial: Shape, kernel: Shape) -> ConvWindow:
    """The geometry of a convolution or pool of ``kernel`` over ``spatial`` (ONNX pads, auto_pad,
    ceil_mode; a ceil-mode window that would start in the end padding is dropped)."""
    n = len(spatial)
    strides, dilations = _attr_ints(attrs, "strides", n, 1), _attr_ints(attrs, "dilations", n, 1)
    pads = _attr_ints(attrs, "pads", 2 * n, 0)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    base = ConvWindow(tuple(kernel), strides, dilations, pads[:n], pads[n:], ())
    span = base.span
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = tuple(-(-i // s) for i, s in zip(spatial, strides))
        total = [max(0, (o - 1) * s + sp - i) for o, s, sp, i in zip(out, strides, span, spatial)]
        begin = tuple(t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total)
        return replace(base, begin=begin, end=tuple(t - b for t, b in zip(total, begin)), out=out)
    if auto_pad == "VALID":
        base = replace(base, begin=(0,) * n, end=(0,) * n)
    ceil = bool(attrs.get("ceil_mode", 0)) and auto_pad == "NOTSET"
    sizes = []
    for i, b, e, sp, s in zip(spatial, base.begin, base.end, span, strides):
        room = i + b + e - sp
        o = (-(-room // s) if ceil and room >= 0 else room // s) + 1
        if ceil and (o - 1) * s >= i + b:  # the last window would start in the end padding
            o -= 1
        sizes.append(o)
    return replace(base, out=tuple(sizes))


def _check_window_attrs(ctx: InferCtx, n: int) -> None:
    """Window attributes of the right length and range for ``n`` spatial axes (else InvalidModel)."""
    for name, length, low in (("kernel_shape", n, 1), ("strides", n, 1), ("dilations", n, 1),
                              ("pads", 2 * n, 0), ("output_padding", n, 0)):
        value = ctx.attrs.get(name)
        if value and (len(value) != length or min(value) < low):
            _invalid(ctx, f"{name} {list(value)} must be {length} values >= {low} "
                          f"for {n} spatial axes")
    if ctx.attrs.get("auto_pad", "NOTSET") not in _AUTO_PADS:
        _invalid(ctx, f"auto_pad {ctx.attrs['auto_pad']!r} is not one of {', '.join(_AUTO_PADS)}")


def _window_rule(ctx: InferCtx, spatial: Shape, kernel: Shape) -> ConvWindow:
    """Checked attributes -> the window geometry, failing if the output would be empty."""
    _check_window_attrs(ctx, len(spatial))
    win = conv_window(ctx.attrs, spatial, kernel)
    if min(win.out, default=1) < 1:
        ctx.fail(f"a kernel of {list(win.span)} (dilated) does not fit the input's spatial shape "
                 f"{list(spatial)} with pads {list(win.begin + win.end)}")
    return win


def _spatial_input(ctx: InferCtx, i: int = 0) -> Shape:
    """Input ``i``'s shape, which must be N x C x D1 x ... x Dn with n >= 1."""
    shape = ctx.shape(i)
    if len(shape) < 3:
        ctx.fail(f"input {i} must be N x C x D1 ... (rank >= 3), got shape {list(shape)}")
    return shape


# ---- im2col and fold ---------------------------------------------------------------------------

def _windows(x: np.ndarray, win: ConvWindow, fill: Any) -> np.ndarray:
    """A view (N, C, *out, *kernel) of each output position's window of ``x``, padded with ``fill``."""
    n = len(win.out)
    need = [(o - 1) * s + sp for o, s, sp in zip(win.out, win.strides, win.span)]
    pad = [(b, max(0, nd - i - b)) for b, nd, i in zip(win.begin, need, x.shape[2:])]
    if any(b or e for b, e in pad):
        x = np.pad(x, [(0, 0)] * (x.ndim - n) + pad, constant_values=fill)
    view = sliding_window_view(x, win.span, axis=tuple(range(x.ndim - n, x.ndim)))
    starts = [slice(0, nd - sp + 1, s) for nd, sp, s in zip(need, win.span, win.strides)]
    index: tuple[Any, ...] = (..., *starts, *(slice(None, None, d) for d in win.dilations))
    return view[index]


def _tap_mask(win: ConvWindow, spatial: Shape, include_pad: bool) -> np.ndarray:
    """(*out, *kernel) booleans: which taps read X (or the explicitly padded X if ``include_pad``)."""
    n = len(spatial)
    mask = np.ones((*win.out, *win.kernel), bool)
    for i, size in enumerate(spatial):
        low, high = (-win.begin[i], size + win.end[i]) if include_pad else (0, size)
        taps = win.taps(i)
        shape = [1] * 2 * n
        shape[i], shape[n + i] = taps.shape
        mask &= ((taps >= low) & (taps < high)).reshape(shape)
    return mask


def _grouped_matmul(cols: np.ndarray, w: np.ndarray, group: int) -> np.ndarray:
    """Windows (N, C, *out, *kernel) contracted with filters (M, C / group, *kernel) group by group:
    (N, M, *out), one batched matmul over the groups."""
    n, m, cg = cols.shape[0], w.shape[0], w.shape[1]
    n_k = w.ndim - 2
    out = cols.shape[2:cols.ndim - n_k]
    taps = int(np.prod(w.shape[2:], dtype=np.int64))
    pixels = int(np.prod(out, dtype=np.int64))
    check_memory(cols.dtype.itemsize * n * pixels * group * cg * taps,
                 f"the windows of a Conv (im2col: {n * pixels} x {group * cg * taps} {cols.dtype})")
    a = cols.reshape(n, group, cg, *cols.shape[2:])
    a = np.moveaxis(np.moveaxis(a, 1, 0), 2, 2 + len(out))  # (G, N, *out, Cg, *kernel)
    a = a.reshape(group, n * pixels, cg * taps)
    b = w.reshape(group, m // group, cg * taps).transpose(0, 2, 1)
    y = np.matmul(a, b).reshape(group, n, pixels, m // group)
    return y.transpose(1, 0, 3, 2).reshape(n, m, *out)


def _fold(cols: np.ndarray, win: ConvWindow, n_in: Shape) -> np.ndarray:
    """Scatter-add ``cols`` (..., *kernel, *n_in) into (..., *win.out): tap k of input position j
    lands on output coordinate j * stride + k * dilation - begin, where that lies in the output."""
    n = len(win.out)
    lead = cols.shape[:cols.ndim - 2 * n]
    full = [(j - 1) * s + sp for j, s, sp in zip(n_in, win.strides, win.span)]
    shift = [max(0, -b) for b in win.begin]  # a negative begin pad extends the output with zeros
    size = [sh + max(f, b + o) for sh, f, b, o in zip(shift, full, win.begin, win.out)]
    buf = np.zeros((*lead, *size), cols.dtype)
    for tap in np.ndindex(*win.kernel):
        at = [sh + k * d for sh, k, d in zip(shift, tap, win.dilations)]
        dst: tuple[Any, ...] = (..., *(slice(a, a + (j - 1) * s + 1, s)
                                       for a, j, s in zip(at, n_in, win.strides)))
        src: tuple[Any, ...] = (..., *tap, *[slice(None)] * n)
        buf[dst] += cols[src]
    crop: tuple[Any, ...] = (..., *(slice(sh + b, sh + b + o) for sh, b, o in zip(shift, win.begin, win.out)))
    return buf[crop]


def _per_channel(v: np.ndarray, trailing: int) -> np.ndarray:
    """A scalar, or a vector shaped to broadcast along the axis followed by ``trailing`` axes (C of
    (N, C, *spatial), M of (M, C, *kernel))."""
    return v.reshape(-1, *[1] * trailing) if v.size > 1 else v.reshape(())


# ---- Conv and its integer, quantized and deformable forms -------------------------------------

def _conv_out(ctx: InferCtx, xi: int, wi: int) -> Shape:
    """Conv's output shape for X = input ``xi`` and W = input ``wi`` (M x C/group x k1 x ...)."""
    x, w = _spatial_input(ctx, xi), ctx.shape(wi)
    group = ctx.attrs["group"]
    if len(w) != len(x):
        ctx.fail(f"W of shape {list(w)} must have X's rank {len(x)}")
    if group < 1 or x[1] != w[1] * group or w[0] % group:
        ctx.fail(f"X has {x[1]} channels and W is {list(w)}: with group={group}, X needs W[1] * group "
                 "channels and W[0] must divide by group")
    kernel = ctx.attrs.get("kernel_shape")
    if kernel and tuple(kernel) != w[2:]:
        ctx.fail(f"kernel_shape {list(kernel)} differs from W's spatial shape {list(w[2:])}")
    return (x[0], w[0], *_window_rule(ctx, x[2:], w[2:]).out)


def _check_bias(ctx: InferCtx, i: int, channels: int) -> None:
    if ctx.has(i) and ctx.shape(i) != (channels,):
        ctx.fail(f"bias of shape {list(ctx.shape(i))} must be [{channels}]")


def _conv_shape(ctx: InferCtx) -> TensorType:
    dtype = _float_input(ctx, 0, 1, 2)
    out = _conv_out(ctx, 0, 1)
    _check_bias(ctx, 2, out[1])
    return TensorType(dtype, out)


def _add_bias(y: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    return y if b is None else y + _per_channel(b, y.ndim - 2).astype(y.dtype)


@op("Conv", "X W B?", "Y", shape=_conv_shape, attrs=_CONV_ATTRS)
def conv(attrs, x, w, b=None):
    """Convolution (cross-correlation) of X with W, channels in ``group`` groups, plus bias B."""
    win = conv_window(attrs, x.shape[2:], w.shape[2:])
    y = _grouped_matmul(_windows(_wide(x), win, 0), _wide(w), attrs["group"])
    return _add_bias(y, None if b is None else _wide(b)).astype(x.dtype)


def _quantized(ctx: InferCtx, i: int) -> np.dtype:
    dtype = ctx.dtype(i)
    if dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        ctx.fail(f"input {i} must be int8 or uint8, got {ctx.type(i)}")
    return dtype


def _check_zero_point(ctx: InferCtx, i: int, of: int, channels: int | None) -> None:
    """Input ``i`` has ``of``'s dtype and one element, or ``channels`` (per output channel)."""
    if not ctx.has(i):
        return
    if ctx.dtype(i) != ctx.dtype(of):
        ctx.fail(f"input {i} must have input {of}'s dtype {ctx.dtype(of)}, got {ctx.type(i)}")
    _check_scale(ctx, i, channels)


def _check_scale(ctx: InferCtx, i: int, channels: int | None) -> None:
    size, shape = ctx.type(i).size, ctx.shape(i)
    if size != 1 and (channels is None or shape != (channels,)):
        per = "" if channels is None else f" or [{channels}] (per output channel)"
        ctx.fail(f"input {i} of shape {list(shape)} must have one element{per}")


def _integer_conv(attrs: dict[str, Any], x: np.ndarray, w: np.ndarray, x_zero_point: np.ndarray | None,
                  w_zero_point: np.ndarray | None) -> np.ndarray:
    """conv(x - x_zero_point, w - w_zero_point), exact, in float64 (products and sums of 8-bit
    integers stay far below 2 ** 53)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    if x_zero_point is not None:
        x = x - x_zero_point.reshape(())
    if w_zero_point is not None:
        w = w - _per_channel(w_zero_point, w.ndim - 1)
    win = conv_window(attrs, x.shape[2:], w.shape[2:])
    return _grouped_matmul(_windows(x, win, 0), w, attrs["group"])


def _conv_integer_shape(ctx: InferCtx) -> TensorType:
    for i in (0, 1):
        _quantized(ctx, i)
    out = _conv_out(ctx, 0, 1)
    _check_zero_point(ctx, 2, 0, None)
    _check_zero_point(ctx, 3, 1, out[1])
    return TensorType(np.dtype(np.int32), out)


@op("ConvInteger", "x w x_zero_point? w_zero_point?", "y", shape=_conv_integer_shape, attrs=_CONV_ATTRS)
def conv_integer(attrs, x, w, x_zero_point=None, w_zero_point=None):
    """Conv of (x - x_zero_point) with (w - w_zero_point) in int32; w's zero point per tensor or per
    output channel."""
    return _integer_conv(attrs, x, w, x_zero_point, w_zero_point).astype(np.int64).astype(np.int32)


def _qlinear_conv_shape(ctx: InferCtx) -> TensorType:
    for i in (0, 3, 7):
        _quantized(ctx, i)
    out = _conv_out(ctx, 0, 3)
    if len({ctx.dtype(i) for i in (1, 4, 6)}) != 1 or not _is_float(ctx.dtype(1)):
        ctx.fail("x_scale, w_scale and y_scale must share one float dtype")
    for scale, zero_point, data, channels in ((1, 2, 0, None), (4, 5, 3, out[1])):
        _check_scale(ctx, scale, channels)
        _check_zero_point(ctx, zero_point, data, channels)
    for i in (6, 7):
        _check_scale(ctx, i, None)
    if ctx.has(8) and ctx.dtype(8) != np.int32:
        ctx.fail(f"bias must be int32, got {ctx.type(8)}")
    _check_bias(ctx, 8, out[1])
    return TensorType(ctx.dtype(7), out)


@op("QLinearConv", "x x_scale x_zero_point w w_scale w_zero_point y_scale y_zero_point B?", "y",
    shape=_qlinear_conv_shape, attrs=_CONV_ATTRS)
def qlinear_conv(attrs, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, b=None):
    """saturate(round_half_even((conv(x - x_zp, w - w_zp) + B) * x_scale * w_scale / y_scale) + y_zp),
    the int32 sum converted to float32 and multiplied in float32 as onnxruntime does; w's scale and
    zero point per tensor or per output channel."""
    acc = _add_bias(_integer_conv(attrs, x, w, x_zero_point, w_zero_point).astype(np.int32), b)
    scale = (x_scale.reshape(()) * w_scale / y_scale.reshape(())).astype(np.float32)
    y = np.rint(acc.astype(np.float32) * _per_channel(scale, x.ndim - 2))
    y = y + y_zero_point.reshape(()).astype(np.float32)
    info = np.iinfo(y_zero_point.dtype)
    return np.clip(y, info.min, info.max).astype(y_zero_point.dtype)


def _deform_conv_shape(ctx: InferCtx) -> TensorType:
    dtype = _float_input(ctx, 0, 1, 2, 3, 4)
    out = _conv_out(ctx, 0, 1)
    _check_bias(ctx, 3, out[1])
    x, kernel, groups = ctx.shape(0), ctx.shape(1)[2:], ctx.attrs["offset_group"]
    if groups < 1 or x[1] % groups:
        ctx.fail(f"offset_group {groups} must divide X's {x[1]} channels")
    taps = groups * int(np.prod(kernel))
    for i, name, channels in ((2, "offset", taps * len(kernel)), (4, "mask", taps)):
        if ctx.has(i) and ctx.shape(i) != (x[0], channels, *out[2:]):
            ctx.fail(f"{name} of shape {list(ctx.shape(i))} must be {[x[0], channels, *out[2:]]}")
    return TensorType(dtype, out)


def _deformed_windows(x: np.ndarray, offset: np.ndarray, mask: np.ndarray | None, win: ConvWindow,
                      groups: int) -> np.ndarray:
    """(N, C, P, K) samples of X: tap k of output pixel p reads X multilinearly (zero outside) at its
    regular coordinate plus its offset (one per offset group), times its mask."""
    n_batch, c, spatial, n = x.shape[0], x.shape[1], x.shape[2:], len(win.out)
    taps, pixels = int(np.prod(win.kernel)), int(np.prod(win.out))
    offset = offset.astype(np.float64).reshape(n_batch, groups, taps, n, pixels)
    pos = []
    for i in range(n):
        shape = [1] * 2 * n
        shape[i], shape[n + i] = win.taps(i).shape
        regular = np.broadcast_to(win.taps(i).reshape(shape), (*win.out, *win.kernel))
        regular = regular.reshape(pixels, taps).T  # (K, P)
        pos.append(regular + offset[:, :, :, i])  # (N, G, K, P)
    low = [np.floor(p) for p in pos]
    flat_x = x.reshape(n_batch, groups, c // groups, -1)
    samples = np.zeros((n_batch, groups, c // groups, taps * pixels), np.float64)
    for corner in itertools.product((0, 1), repeat=n):
        weight = np.ones_like(pos[0])
        index = np.zeros(pos[0].shape, np.int64)
        for i, bit in enumerate(corner):
            coord = low[i] + bit
            weight = weight * np.where((coord >= 0) & (coord < spatial[i]), 1 - np.abs(pos[i] - coord), 0)
            index = index * spatial[i] + np.clip(coord, 0, spatial[i] - 1).astype(np.int64)
        gathered = np.take_along_axis(flat_x, index.reshape(n_batch, groups, 1, -1), axis=3)
        samples += gathered * weight.reshape(n_batch, groups, 1, -1)
    if mask is not None:
        samples *= mask.astype(np.float64).reshape(n_batch, groups, 1, -1)
    return samples.reshape(n_batch, c, taps, pixels).transpose(0, 1, 3, 2)


@op("DeformConv", "X W offset B? mask?", "Y", shape=_deform_conv_shape,
    attrs={**{k: v for k, v in _CONV_ATTRS.items() if k != "auto_pad"}, "offset_group": Attr("int", 1)})
def deform_conv(attrs, x, w, offset, b=None, mask=None):
    """Deformable convolution: every kernel tap samples X bilinearly (multilinearly in N-D, zero
    outside X) at its regular position plus a learned offset, scaled by mask, then Conv's sum."""
    win = conv_window(attrs, x.shape[2:], w.shape[2:])
    cols = _deformed_windows(x, offset, mask, win, attrs["offset_group"])
    y = _grouped_matmul(cols, w.astype(np.float64).reshape(*w.shape[:2], -1), attrs["group"])
    y = _add_bias(y.reshape(*y.shape[:2], *win.out), None if b is None else b.astype(np.float64))
    return y.astype(x.dtype)


def _causal_conv_shape(ctx: InferCtx) -> list[TensorType]:
    dtype, x, w = _float_input(ctx, 0, 1, 2, 3), ctx.shape(0), ctx.shape(1)
    if len(x) != 3 or len(w) != 3 or w[:2] != (x[1], 1):
        ctx.fail(f"input {list(x)} must be batch x channels x length and weight channels x 1 x k, "
                 f"got {list(w)}")
    state = (x[0], x[1], w[2] - 1)
    _check_bias(ctx, 2, x[1])
    if ctx.has(3) and ctx.shape(3) != state:
        ctx.fail(f"past_state of shape {list(ctx.shape(3))} must be {list(state)}")
    if ctx.attrs["activation"] not in ("none", "silu", "swish"):
        _invalid(ctx, f"activation {ctx.attrs['activation']!r} is not one of none, silu, swish")
    return [TensorType(dtype, x), TensorType(dtype, state)]


@op("CausalConvWithState", "input weight bias? past_state?", "output present_state", shape=_causal_conv_shape,
    attrs={"activation": Attr("string", "none")})
def causal_conv_with_state(attrs, x, w, b=None, past_state=None):
    """Causal depthwise 1-D convolution of past_state (zeros if absent) followed by the input, plus
    bias, then SiLU if activation is silu or swish; present_state: the last k - 1 positions read."""
    past = np.zeros((*x.shape[:2], w.shape[2] - 1), x.dtype) if past_state is None else past_state
    padded = np.concatenate([past, x], axis=2)
    y = conv({"group": x.shape[1]}, padded, w, b)
    if attrs["activation"] != "none":
        wide = y.astype(np.float32)
        y = (wide / (1 + np.exp(-wide))).astype(x.dtype)
    return y, padded[:, :, x.shape[2]:]


# ---- ConvTranspose and Col2Im -------------------------------------------------------------------

def transpose_window(attrs: dict[str, Any], spatial: Shape, kernel: Shape) -> ConvWindow:
    """ConvTranspose's geometry: output coordinate of input j's tap k is j * stride + k * dilation -
    begin. Pads come from ``pads``, or from output_shape / SAME auto_pad (the odd one at the end if
    SAME_UPPER, else at the start)."""
    n = len(spatial)
    base = conv_window({**attrs, "auto_pad": "NOTSET", "ceil_mode": 0}, spatial, kernel)
    extra = _attr_ints(attrs, "output_padding", n, 0)
    full = tuple((i - 1) * s + sp + e for i, s, sp, e in zip(spatial, base.strides, base.span, extra))
    auto_pad, shape = attrs.get("auto_pad", "NOTSET"), attrs.get("output_shape")
    if shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = tuple(shape[-n:]) if shape else tuple(i * s for i, s in zip(spatial, base.strides))
        total = [f - o for f, o in zip(full, out)]
        begin = tuple(t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total)
        return replace(base, begin=begin, end=tuple(t - b for t, b in zip(total, begin)), out=out)
    if auto_pad == "VALID":
        base = replace(base, begin=(0,) * n, end=(0,) * n)
    return replace(base, out=tuple(f - b - e for f, b, e in zip(full, base.begin, base.end)))


def _conv_transpose_shape(ctx: InferCtx) -> TensorType:
    dtype = _float_input(ctx, 0, 1, 2)
    x, w, group = _spatial_input(ctx), ctx.shape(1), ctx.attrs["group"]
    if len(w) != len(x) or group < 1 or x[1] != w[0] or w[0] % group:
        ctx.fail(f"W of shape {list(w)} must have X's rank and X's {x[1]} channels first, in "
                 f"group={group} groups")
    kernel = ctx.attrs.get("kernel_shape")
    if kernel and tuple(kernel) != w[2:]:
        ctx.fail(f"kernel_shape {list(kernel)} differs from W's spatial shape {list(w[2:])}")
    _check_window_attrs(ctx, len(x) - 2)
    shape = ctx.attrs.get("output_shape")
    if shape and len(shape) not in (len(x) - 2, len(x)):
        _invalid(ctx, f"output_shape {list(shape)} must give the {len(x) - 2} spatial sizes")
    out = transpose_window(ctx.attrs, x[2:], w[2:]).out
    if min(out) < 1:
        ctx.fail(f"empty output spatial shape {list(out)}")
    _check_bias(ctx, 2, w[1] * group)
    return TensorType(dtype, (x[0], w[1] * group, *out))


@op("ConvTranspose", "X W B?", "Y", shape=_conv_transpose_shape,
    attrs={**_CONV_ATTRS, "output_padding": Attr("ints", None), "output_shape": Attr("ints", None)})
def conv_transpose(attrs, x, w, b=None):
    """Transposed convolution (Conv's gradient with respect to its input): each input pixel adds
    X * W over its window of the output, channels in ``group`` groups; plus bias B."""
    n, group = x.ndim - 2, attrs["group"]
    win = transpose_window(attrs, x.shape[2:], w.shape[2:])
    batch, cg, mg = x.shape[0], w.shape[0] // group, w.shape[1]
    xa = _wide(x).reshape(batch, group, cg, -1).transpose(1, 0, 3, 2).reshape(group, -1, cg)
    cols = np.matmul(xa, _wide(w).reshape(group, cg, -1))  # (G, N * pixels, Mg * taps)
    cols = cols.reshape(group, batch, *x.shape[2:], mg, *win.kernel)
    cols = cols.transpose(1, 0, 2 + n, *range(3 + n, 3 + 2 * n), *range(2, 2 + n))
    y = _fold(cols.reshape(batch, group * mg, *win.kernel, *x.shape[2:]), win, x.shape[2:])
    return _add_bias(y, None if b is None else _wide(b)).astype(x.dtype)


def col2im_window(attrs: dict[str, Any], image: Shape, block: Shape) -> ConvWindow:
    """The blocks' geometry: ``out`` holds the number of blocks along each axis."""
    return conv_window({**attrs, "auto_pad": "NOTSET"}, image, block)


def _col2im_shape(ctx: InferCtx) -> TensorType:
    x, dtype = ctx.shape(0), ctx.dtype(0)
    if dtype == np.bool_ or dtype == np.dtype(object):
        raise UnsupportedOperator(ctx.op, node=ctx.node, detail=f"{ctx.type(0)} input")
    image, block = ctx.ints(1), ctx.ints(2)
    if len(x) != 3 or len(image) != len(block) or not image or min(block) < 1:
        ctx.fail(f"input {list(x)} must be N x (C * block size) x L, image_shape {image} and "
                 f"block_shape {block} of one length")
    _check_window_attrs(ctx, len(image))
    win = col2im_window(ctx.attrs, tuple(image), tuple(block))
    size = int(np.prod(block))
    if x[1] % size or x[2] != int(np.prod(win.out)) or min(win.out) < 1:
        ctx.fail(f"input {list(x)} does not hold C x {size} values for each of the {list(win.out)} "
                 f"blocks of {block} in an image of {image}")
    return TensorType(dtype, (x[0], x[1] // size, *image))


@op("Col2Im", "input image_shape block_shape", "output", shape=_col2im_shape, static=(1, 2),
    attrs={"dilations": Attr("ints", None), "pads": Attr("ints", None), "strides": Attr("ints", None)})
def col2im(attrs, x, image_shape, block_shape):
    """Rearrange column blocks (N, C * prod(block_shape), L) into an (N, C, *image_shape) image,
    adding overlaps (the inverse layout of im2col, like torch.nn.Fold)."""
    image, block = tuple(int(d) for d in image_shape), tuple(int(d) for d in block_shape)
    win = col2im_window(attrs, image, block)
    cols = x.reshape(x.shape[0], -1, *block, *win.out)
    return _fold(cols, replace(win, out=image), win.out)


# ---- pooling ------------------------------------------------------------------------------------

def _pool_window(ctx: InferCtx) -> Shape:
    """A pool's output shape, X being N x C x D1 x ... with kernel_shape over the Di."""
    x = _spatial_input(ctx)
    kernel = ctx.attrs["kernel_shape"]
    if len(kernel) != len(x) - 2:
        _invalid(ctx, f"kernel_shape {list(kernel)} must have one size per spatial axis of X {list(x)}")
    return (*x[:2], *_window_rule(ctx, x[2:], tuple(kernel)).out)


def _pool_shape(ctx: InferCtx) -> TensorType:
    return TensorType(_float_input(ctx, 0), _pool_window(ctx))


def _max_pool_shape(ctx: InferCtx) -> list[TensorType]:
    dtype = ctx.dtype(0)
    if not _is_float(dtype) and dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        ctx.fail(f"X must be a float, int8 or uint8 tensor, got {ctx.type(0)}")
    out = _pool_window(ctx)
    return [TensorType(dtype, out), TensorType(np.dtype(np.int64), out)]


def lowest_value(dtype: np.dtype) -> Any:
    return -np.inf if _is_float(dtype) else np.iinfo(dtype).min


def _kernel_axes(n: int) -> tuple[int, ...]:
    return tuple(range(-n, 0))


def _argmax_indices(flat: np.ndarray, y: np.ndarray, win: ConvWindow, shape: Shape,
                    column_major: bool) -> np.ndarray:
    """The flat index into X (N, C, *spatial) of the first tap of each window that reads X and holds
    the window's max (NaN: the first NaN); spatial axes column-major if ``column_major``."""
    n, spatial = len(win.out), shape[2:]
    reads = _tap_mask(win, spatial, include_pad=False).reshape(*win.out, -1)
    hits = flat == y[..., None]
    if _is_float(y.dtype):
        hits |= np.isnan(flat) & np.isnan(y)[..., None]
    tap = np.unravel_index(np.argmax(hits & reads, axis=-1), win.kernel)
    coords = []
    for i in range(n):
        start = (np.arange(win.out[i]) * win.strides[i] - win.begin[i]).reshape(-1, *[1] * (n - 1 - i))
        coords.append(start + tap[i] * win.dilations[i])
    where = np.ravel_multi_index(coords, spatial, mode="clip", order="F" if column_major else "C")
    planes = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape[0], shape[1], *[1] * n)
    return planes * int(np.prod(spatial)) + where


@op("MaxPool", "X", "Y Indices?", shape=_max_pool_shape,
    attrs={**_POOL_ATTRS, "storage_order": Attr("int", 0)})
def max_pool(attrs, x):
    """Max of each window over the taps inside X (padding never wins); Indices: where each max is in
    X, flattened row-major (column-major over the spatial axes if storage_order is 1)."""
    win = conv_window(attrs, x.shape[2:], attrs["kernel_shape"])
    windows = _windows(x, win, lowest_value(x.dtype))
    flat = windows.reshape(*windows.shape[:x.ndim], -1)
    y = flat.max(axis=-1)
    return y, _argmax_indices(flat, y, win, x.shape, bool(attrs["storage_order"]))


@op("AveragePool", "X", "Y", shape=_pool_shape,
    attrs={**_POOL_ATTRS, "count_include_pad": Attr("int", 0)})
def average_pool(attrs, x):
    """Mean of each window over its taps inside X, or inside the padded X if count_include_pad (taps
    past the end padding, which ceil_mode can add, never count)."""
    win = conv_window(attrs, x.shape[2:], attrs["kernel_shape"])
    axes = _kernel_axes(len(win.out))
    total = _windows(_wide(x), win, 0).sum(axis=axes)
    count = _tap_mask(win, x.shape[2:], bool(attrs["count_include_pad"])).sum(axis=axes)
    with np.errstate(all="ignore"):
        return (total / count).astype(x.dtype)


def _p_as_int(up: Upgrade) -> None:
    """LpPool / GlobalLpPool 1 had a float ``p``; since opset 2 it is an int."""
    p = up.attrs.get("p")
    if isinstance(p, float):
        if not p.is_integer():
            up.unsupported(f"non-integral p={p}")
        up.attrs["p"] = int(p)


@op("LpPool", "X", "Y", shape=_pool_shape, adapt=_p_as_int, attrs={**_POOL_ATTRS, "p": Attr("int", 2)})
def lp_pool(attrs, x):
    """(sum of |x| ** p over each window) ** (1 / p); padding adds nothing."""
    win = conv_window(attrs, x.shape[2:], attrs["kernel_shape"])
    p = attrs["p"]
    total = _windows(np.abs(_wide(x)) ** p, win, 0).sum(axis=_kernel_axes(len(win.out)))
    return (total ** (1.0 / p)).astype(x.dtype)


def _global_shape(ctx: InferCtx) -> TensorType:
    dtype, x = _float_input(ctx, 0), ctx.shape(0)
    if len(x) < 2:
        ctx.fail(f"X must be N x C x D1 ..., got shape {list(x)}")
    return TensorType(dtype, (*x[:2], *[1] * (len(x) - 2)))


def _spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


@op("GlobalAveragePool", "X", "Y", shape=_global_shape)
def global_average_pool(attrs, x):
    """Mean over all spatial axes (kept, of size 1)."""
    return _wide(x).mean(axis=_spatial_axes(x), keepdims=True).astype(x.dtype)


@op("GlobalMaxPool", "X", "Y", shape=_global_shape)
def global_max_pool(attrs, x):
    """Max over all spatial axes (kept, of size 1)."""
    return x.max(axis=_spatial_axes(x), keepdims=True)


@op("GlobalLpPool", "X", "Y", shape=_global_shape, adapt=_p_as_int, attrs={"p": Attr("int", 2)})
def global_lp_pool(attrs, x):
    """(sum of |x| ** p over all spatial axes) ** (1 / p), the axes kept with size 1."""
    total = (np.abs(_wide(x)) ** attrs["p"]).sum(axis=_spatial_axes(x), keepdims=True)
    return (total ** (1.0 / attrs["p"])).astype(x.dtype)


def unpooled_shape(attrs: dict[str, Any], x: Shape) -> Shape:
    """The shape MaxPool's input had: (out - 1) * stride + kernel - pads along each spatial axis."""
    n = len(x) - 2
    strides, pads = _attr_ints(attrs, "strides", n, 1), _attr_ints(attrs, "pads", 2 * n, 0)
    return (*x[:2], *((o - 1) * s + k - b - e for o, s, k, b, e in
                      zip(x[2:], strides, attrs["kernel_shape"], pads[:n], pads[n:])))


def _max_unpool_shape(ctx: InferCtx) -> TensorType:
    dtype, x = _float_input(ctx, 0), _spatial_input(ctx)
    if ctx.type(1) != TensorType(np.dtype(np.int64), x):
        ctx.fail(f"I must be int64 of X's shape {list(x)}, got {ctx.type(1)}")
    kernel = ctx.attrs["kernel_shape"]
    if len(kernel) != len(x) - 2:
        _invalid(ctx, f"kernel_shape {list(kernel)} must have one size per spatial axis of X {list(x)}")
    _check_window_attrs(ctx, len(x) - 2)
    inferred = unpooled_shape(ctx.attrs, x)
    out = tuple(ctx.ints(2)) if ctx.has(2) else inferred
    if len(out) != len(x) or any(o < i for o, i in zip(out, inferred)) or min(inferred) < 1:
        ctx.fail(f"output_shape {list(out)} must have X's rank and hold the unpooled shape {list(inferred)}")
    return TensorType(dtype, out)


@op("MaxUnpool", "X I output_shape?", "output", shape=_max_unpool_shape, static=(2,),
    attrs={"kernel_shape": Attr("ints"), "pads": Attr("ints", None), "strides": Attr("ints", None)})
def max_unpool(attrs, x, indices, output_shape=None):
    """Zeros of MaxPool's input shape (from kernel_shape, strides, pads) with X's values at the flat
    positions I, placed at the start of output_shape when given."""
    inferred = unpooled_shape(attrs, x.shape)
    y = np.zeros(math.prod(inferred), x.dtype)
    y[indices.reshape(-1)] = x.reshape(-1)
    y = y.reshape(inferred)
    if output_shape is None:
        return y
    out = np.zeros(tuple(int(d) for d in output_shape), x.dtype)
    out[tuple(slice(0, d) for d in inferred)] = y
    return out


def _lrn_shape(ctx: InferCtx) -> TensorType:
    dtype, x = _float_input(ctx, 0), ctx.shape(0)
    if len(x) < 2:
        ctx.fail(f"X must be N x C x D1 ..., got shape {list(x)}")
    if ctx.attrs["size"] < 1:
        _invalid(ctx, f"size must be positive, got {ctx.attrs['size']}")
    return TensorType(dtype, x)


@op("LRN", "X", "Y", shape=_lrn_shape, attrs={"alpha": Attr("float", 1e-4), "beta": Attr("float", 0.75),
                                              "bias": Attr("float", 1.0), "size": Attr("int")})
def lrn(attrs, x):
    """Local response normalization across channels: x / (bias + alpha / size * square_sum) ** beta,
    square_sum over channels c - floor((size - 1) / 2) .. c + ceil((size - 1) / 2)."""
    size = attrs["size"]
    squares = _wide(x) ** 2
    before = (size - 1) // 2
    padded = np.pad(squares, [(0, 0), (before, size - 1 - before)] + [(0, 0)] * (x.ndim - 2))
    square_sum = sliding_window_view(padded, size, axis=1).sum(axis=-1)
    y = _wide(x) / (attrs["bias"] + attrs["alpha"] / size * square_sum) ** attrs["beta"]
    return y.astype(x.dtype)
