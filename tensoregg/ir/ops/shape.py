"""Shape and layout operators: reshaping (Reshape, Flatten, Squeeze, Unsqueeze), reordering (Transpose,
DepthToSpace, SpaceToDepth, ReverseSequence), joining and cutting (Concat, Split, Slice, Pad,
CenterCropPad, Expand, Tile), shape queries (Shape, Size), constants (Constant, ConstantOfShape,
EyeLike, Range) and Trilu.

Every input that decides an output shape (Reshape's ``shape``, Slice's bounds, Pad's ``pads``...) is
static: the shape rule reads its value and the reference recomputes the same layout from it with the
shared helpers below, so both always agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.ir.dtypes import dtype_of
from tensoregg.ir.ops.casts import onnx_to_dtype
from tensoregg.ir.registry import Attr, InferCtx, Upgrade, op
from tensoregg.ir.shapes import broadcast_shapes, norm_axes, same_dtype
from tensoregg.ir.types import TensorType

INT64 = np.dtype(np.int64)
STRING = np.dtype(object)


def _choice(ctx: InferCtx, attr: str, allowed: Sequence[Any]) -> Any:
    """Attribute ``attr``, which must be one of ``allowed``."""
    value = ctx.attrs[attr]
    if value not in allowed:
        raise InvalidModel(f"{ctx.op} node {ctx.node!r}: {attr}={value!r} is not one of "
                           f"{', '.join(map(repr, allowed))}")
    return value


def _static_ints(ctx: InferCtx, i: int, what: str) -> list[int]:
    """The values of static input ``i``, which must be a 1-D (or scalar) integer tensor."""
    if ctx.dtype(i).kind not in "iu" or ctx.type(i).rank > 1:
        ctx.fail(f"{what} (input {i}) must be a 1-D integer tensor, got {ctx.type(i)}")
    return ctx.ints(i)


def _static_axes(ctx: InferCtx, i: int, rank: int) -> list[int] | None:
    """Optional static input ``i`` as checked non-negative axes (``None`` if omitted)."""
    return _checked_axes(ctx, _static_ints(ctx, i, "axes"), rank) if ctx.has(i) else None


def _checked_axes(ctx: InferCtx, axes: Sequence[int], rank: int) -> list[int]:
    """Distinct axes in [-rank, rank), made non-negative."""
    out = norm_axes(ctx, axes, rank)
    if any(a >= rank for a in out):
        ctx.fail(f"axes {list(axes)} out of range for rank {rank}")
    return out


def _ints(x: np.ndarray | None) -> list[int] | None:
    return None if x is None else [int(v) for v in np.asarray(x).reshape(-1)]


def _axes_or_all(rank: int, axes: Sequence[int] | None) -> list[int]:
    """``axes`` made non-negative, or every axis when omitted."""
    return list(range(rank)) if axes is None else [a + rank if a < 0 else a for a in axes]


# ---- reshaping ----------------------------------------------------------------------------------

def _reshape_dims(shape: tuple[int, ...], target: list[int], allowzero: int) -> list[int]:
    """Reshape's target with 0 copied from ``shape`` (unless allowzero) and one -1 inferred."""
    dims = [shape[k] if d == 0 and not allowzero and k < len(shape) else d for k, d in enumerate(target)]
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = math.prod(shape) // known if known else 0
    return dims


def _reshape_shape(ctx: InferCtx) -> TensorType:
    shape, target = ctx.shape(0), _static_ints(ctx, 1, "shape")
    allowzero = ctx.attrs["allowzero"]
    if target.count(-1) > 1 or any(d < -1 for d in target):
        ctx.fail(f"shape {target} may hold one -1 and no other negative value")
    if allowzero and 0 in target and -1 in target:
        ctx.fail(f"shape {target} with allowzero=1 cannot hold both 0 and -1")
    if not allowzero and any(d == 0 and k >= len(shape) for k, d in enumerate(target)):
        ctx.fail(f"shape {target} copies a dim (0) beyond the input's rank {len(shape)}")
    dims = _reshape_dims(shape, target, allowzero)
    if -1 in target and math.prod(d for d, t in zip(dims, target) if t != -1) == 0:
        ctx.fail(f"cannot infer the -1 of {target} for {list(shape)}: the other dims hold no elements")
    if math.prod(dims) != math.prod(shape):
        ctx.fail(f"cannot reshape {list(shape)} ({math.prod(shape)} elements) to {target}")
    return TensorType(ctx.dtype(0), tuple(dims))


def _reshape_adapt(up: Upgrade) -> None:
    """Opsets < 5 held the target in attribute ``shape`` (and a memory hint, ``consumed_inputs``)."""
    up.attrs.pop("consumed_inputs", None)
    up.move_attr_to_input("shape", 1)


@op("Reshape", "data shape", "reshaped", attrs={"allowzero": Attr("int", 0)}, static=(1,),
    shape=_reshape_shape, adapt=_reshape_adapt)
def reshape(attrs, data, shape):
    """``data`` in a new shape: 0 copies the input dim (unless allowzero=1), one -1 is inferred."""
    return data.reshape(_reshape_dims(data.shape, _ints(shape), attrs["allowzero"]))


def _flatten_shape(ctx: InferCtx) -> TensorType:
    shape = ctx.shape(0)
    axis = ctx.attrs["axis"]
    if not -len(shape) <= axis <= len(shape):
        ctx.fail(f"axis {axis} out of range [-{len(shape)}, {len(shape)}]")
    return TensorType(ctx.dtype(0), _flatten_dims(shape, axis))


def _flatten_dims(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    axis = axis + len(shape) if axis < 0 else axis
    return math.prod(shape[:axis]), math.prod(shape[axis:])


@op("Flatten", "input", "output", attrs={"axis": Attr("int", 1)}, shape=_flatten_shape)
def flatten(attrs, x):
    """A 2-D matrix: the dims before ``axis`` flattened into rows, the rest into columns."""
    return x.reshape(_flatten_dims(x.shape, attrs["axis"]))


def _squeeze_axes(shape: tuple[int, ...], axes: list[int] | None) -> list[int]:
    """The axes Squeeze removes: those given, or every dim of size 1."""
    if axes is None:
        return [k for k, d in enumerate(shape) if d == 1]
    return _axes_or_all(len(shape), axes)


def _squeeze_shape(ctx: InferCtx) -> TensorType:
    shape = ctx.shape(0)
    axes = _squeeze_axes(shape, _static_axes(ctx, 1, len(shape)))
    if any(a >= len(shape) or shape[a] != 1 for a in axes):
        ctx.fail(f"cannot squeeze axes {axes} of {list(shape)}: their dims must be 1")
    return TensorType(ctx.dtype(0), tuple(d for k, d in enumerate(shape) if k not in axes))


def _axes_to_input(up: Upgrade) -> None:
    """Before opset 13 ``axes`` was an attribute."""
    up.move_attr_to_input("axes", 1)


@op("Squeeze", "data axes?", "squeezed", static=(1,), shape=_squeeze_shape, adapt=_axes_to_input)
def squeeze(attrs, data, axes=None):
    """``data`` without the size-1 dims at ``axes`` (all size-1 dims if omitted)."""
    drop = _squeeze_axes(data.shape, _ints(axes))
    return data.reshape([d for k, d in enumerate(data.shape) if k not in drop])


def _unsqueeze_dims(shape: tuple[int, ...], axes: list[int]) -> list[int]:
    rank = len(shape) + len(axes)
    axes = sorted(a % rank for a in axes)
    dims = list(shape)
    for a in axes:
        dims.insert(a, 1)
    return dims


def _unsqueeze_shape(ctx: InferCtx) -> TensorType:
    shape, axes = ctx.shape(0), _static_ints(ctx, 1, "axes")
    norm_axes(ctx, axes, len(shape) + len(axes))
    return TensorType(ctx.dtype(0), tuple(_unsqueeze_dims(shape, axes)))


@op("Unsqueeze", "data axes", "expanded", static=(1,), shape=_unsqueeze_shape, adapt=_axes_to_input)
def unsqueeze(attrs, data, axes):
    """``data`` with size-1 dims inserted at ``axes`` (positions in the output)."""
    return data.reshape(_unsqueeze_dims(data.shape, _ints(axes)))


# ---- reordering ---------------------------------------------------------------------------------

def perm_of(shape: tuple[int, ...], perm: Sequence[int] | None) -> list[int]:
    return list(range(len(shape)))[::-1] if perm is None else [p % max(len(shape), 1) for p in perm]


def _transpose_shape(ctx: InferCtx) -> TensorType:
    shape, perm = ctx.shape(0), ctx.attrs["perm"]
    if perm is not None and sorted(norm_axes(ctx, perm, len(shape))) != list(range(len(shape))):
        ctx.fail(f"perm {list(perm)} is not a permutation of the {len(shape)} axes")
    return TensorType(ctx.dtype(0), tuple(shape[p] for p in perm_of(shape, perm)))


@op("Transpose", "data", "transposed", attrs={"perm": Attr("ints", None)}, shape=_transpose_shape)
def transpose(attrs, data):
    """Axes permuted: output axis i is input axis perm[i] (default: reversed)."""
    return np.transpose(data, perm_of(data.shape, attrs["perm"]))


def _space_depth_shape(ctx: InferCtx) -> TensorType:
    """DepthToSpace and SpaceToDepth on [N, C, H, W]."""
    shape, b = ctx.shape(0), ctx.attrs["blocksize"]
    _choice(ctx, "mode", ("DCR", "CRD"))
    if len(shape) != 4 or b < 1:
        ctx.fail(f"needs a rank-4 [N, C, H, W] input and blocksize >= 1, got {list(shape)}, blocksize {b}")
    n, c, h, w = shape
    if ctx.op == "DepthToSpace":
        if c % (b * b):
            ctx.fail(f"channels {c} are not divisible by blocksize^2 = {b * b}")
        return TensorType(ctx.dtype(0), (n, c // (b * b), h * b, w * b))
    if h % b or w % b:
        ctx.fail(f"height {h} and width {w} must be divisible by blocksize {b}")
    return TensorType(ctx.dtype(0), (n, c * b * b, h // b, w // b))


SPACE_DEPTH_ATTRS = {"blocksize": Attr("int"), "mode": Attr("string", "DCR")}


@op("DepthToSpace", "input", "output", attrs=SPACE_DEPTH_ATTRS, shape=_space_depth_shape)
def depth_to_space(attrs, x):
    """Channels moved into blocksize x blocksize spatial blocks (DCR: depth-column-row order, or CRD)."""
    n, c, h, w = x.shape
    b = attrs["blocksize"]
    if attrs["mode"] == "DCR":
        tmp = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        tmp = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return tmp.reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth", "input", "output", attrs=SPACE_DEPTH_ATTRS, shape=_space_depth_shape)
def space_to_depth(attrs, x):
    """blocksize x blocksize spatial blocks moved into channels (the inverse of DepthToSpace)."""
    n, c, h, w = x.shape
    b = attrs["blocksize"]
    tmp = x.reshape(n, c, h // b, b, w // b, b)
    tmp = tmp.transpose((0, 3, 5, 1, 2, 4) if attrs["mode"] == "DCR" else (0, 1, 3, 5, 2, 4))
    return tmp.reshape(n, c * b * b, h // b, w // b)


def _reverse_sequence_shape(ctx: InferCtx) -> TensorType:
    shape = ctx.shape(0)
    batch, time = _choice(ctx, "batch_axis", (0, 1)), _choice(ctx, "time_axis", (0, 1))
    if len(shape) < 2 or batch == time:
        ctx.fail(f"needs rank >= 2 and distinct batch/time axes, got {list(shape)}, {batch}/{time}")
    if ctx.dtype(1).kind not in "iu" or ctx.shape(1) != (shape[batch],):
        ctx.fail(f"sequence_lens must be integers of shape [{shape[batch]}], got {ctx.type(1)}")
    return ctx.type(0)


@op("ReverseSequence", "input sequence_lens", "Y", shape=_reverse_sequence_shape,
    attrs={"batch_axis": Attr("int", 1), "time_axis": Attr("int", 0)})
def reverse_sequence(attrs, x, lens):
    """Each batch entry's first sequence_lens[i] steps along ``time_axis`` reversed, the rest copied."""
    out = x.copy()
    axes = (attrs["batch_axis"], attrs["time_axis"])
    src, dst = np.moveaxis(x, axes, (0, 1)), np.moveaxis(out, axes, (0, 1))
    for i, n in enumerate(_ints(lens)):
        dst[i, :n] = src[i, :n][::-1]
    return out


# ---- joining and cutting ------------------------------------------------------------------------

def _concat_shape(ctx: InferCtx) -> TensorType:
    types = [t for t in ctx.types if t is not None]
    dtype = same_dtype(ctx, types)
    rank = types[0].rank
    axis = ctx.axis(ctx.attrs["axis"], rank)
    if rank == 0 or any(t.rank != rank or t.shape[:axis] + t.shape[axis + 1:] !=
                        types[0].shape[:axis] + types[0].shape[axis + 1:] for t in types):
        ctx.fail(f"inputs {', '.join(str(list(t.shape)) for t in types)} must have one rank >= 1 and "
                 f"agree on every dim but axis {axis}")
    shape = list(types[0].shape)
    shape[axis] = sum(t.shape[axis] for t in types)
    return TensorType(dtype, tuple(shape))


def _concat_adapt(up: Upgrade) -> None:
    """Opsets < 4 defaulted ``axis`` to 1."""
    if up.opset < 4:
        up.attrs.setdefault("axis", 1)


@op("Concat", "inputs*", "concat_result", attrs={"axis": Attr("int")}, shape=_concat_shape,
    adapt=_concat_adapt)
def concat(attrs, *xs):
    """The inputs joined along ``axis``."""
    return np.concatenate(xs, axis=attrs["axis"])


def _split_sizes(dim: int, split: list[int] | None, num_outputs: int) -> list[int]:
    """Split's part sizes: ``split``, else ``num_outputs`` ceil-sized parts (the last one smaller)."""
    if split is not None:
        return split
    part = -(-dim // num_outputs)
    return [part] * (num_outputs - 1) + [dim - part * (num_outputs - 1)]


def _split_shape(ctx: InferCtx) -> list[TensorType]:
    shape, n_out, num = ctx.shape(0), ctx.n_outputs, ctx.attrs["num_outputs"]
    axis = _checked_axes(ctx, [ctx.attrs["axis"]], len(shape))[0]
    split = _static_ints(ctx, 1, "split") if ctx.has(1) else None
    if (split is None) == (num is None):
        ctx.fail("give either input 'split' or attribute 'num_outputs' (exactly one)")
    if num is not None and num != n_out:
        ctx.fail(f"num_outputs={num} but the node has {n_out} outputs")
    sizes = _split_sizes(shape[axis], split, num or n_out)
    if len(sizes) != n_out or sum(sizes) != shape[axis] or min(sizes) < 0:
        ctx.fail(f"parts {sizes} must be {n_out} sizes >= 0 summing to dim {shape[axis]} of axis {axis}")
    return [TensorType(ctx.dtype(0), (*shape[:axis], s, *shape[axis + 1:])) for s in sizes]


def _split_adapt(up: Upgrade) -> None:
    """Before opset 13 ``split`` was an attribute; before opset 18 leaving it out meant equal parts,
    one per output: opset 18's ``num_outputs``."""
    up.move_attr_to_input("split", 1)
    if up.opset < 18 and len(up.inputs) < 2:
        up.attrs["num_outputs"] = len(up.outputs)


@op("Split", "input split?", "outputs*", attrs={"axis": Attr("int", 0), "num_outputs": Attr("int", None)},
    static=(1,), shape=_split_shape, adapt=_split_adapt)
def split(attrs, x, sizes=None):
    """``x`` cut along ``axis`` into parts of the given sizes, or ``num_outputs`` equal parts
    (the last smaller when uneven)."""
    axis = attrs["axis"] % x.ndim
    parts = _split_sizes(x.shape[axis], _ints(sizes), attrs["num_outputs"])
    return tuple(np.split(x, np.cumsum(parts)[:-1], axis=axis))


def slice_plan(shape: tuple[int, ...], starts: list[int], ends: list[int], axes: list[int] | None,
            steps: list[int] | None) -> list[slice]:
    """Slice's bounds as Python slices, whose clamping is ONNX's."""
    axes = list(range(len(starts))) if axes is None else [a % len(shape) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    out = [slice(None)] * len(shape)
    for a, s, e, st in zip(axes, starts, ends, steps):
        out[a] = slice(s, e, st)
    return out


def _slice_shape(ctx: InferCtx) -> TensorType:
    shape = ctx.shape(0)
    starts, ends = _static_ints(ctx, 1, "starts"), _static_ints(ctx, 2, "ends")
    axes = _static_axes(ctx, 3, len(shape))
    steps = _static_ints(ctx, 4, "steps") if ctx.has(4) else None
    n = len(starts)
    if len(ends) != n or (axes is not None and len(axes) != n) or (steps is not None and len(steps) != n):
        ctx.fail("starts, ends, axes and steps must have one length")
    if axes is None and n > len(shape):
        ctx.fail(f"{n} starts for rank {len(shape)}")
    if steps is not None and 0 in steps:
        ctx.fail(f"steps {steps} must be nonzero")
    slices = slice_plan(shape, starts, ends, axes, steps)
    return TensorType(ctx.dtype(0), tuple(len(range(*s.indices(d))) for s, d in zip(slices, shape)))


def _slice_adapt(up: Upgrade) -> None:
    """Before opset 10 ``starts``, ``ends`` and ``axes`` were attributes."""
    for index, name in enumerate(("starts", "ends", "axes"), start=1):
        up.move_attr_to_input(name, index)


@op("Slice", "data starts ends axes? steps?", "output", static=(1, 2, 3, 4), shape=_slice_shape,
    adapt=_slice_adapt)
def slice_(attrs, data, starts, ends, axes=None, steps=None):
    """data[starts:ends:steps] on ``axes``; bounds clamp to the dims and count from the end if negative."""
    return data[tuple(slice_plan(data.shape, _ints(starts), _ints(ends), _ints(axes), _ints(steps)))].copy()


def _expand_shape(ctx: InferCtx) -> TensorType:
    target = _static_ints(ctx, 1, "shape")
    if any(d < 0 for d in target):
        ctx.fail(f"shape {target} has a negative dim")
    return TensorType(ctx.dtype(0), broadcast_shapes(ctx, [ctx.shape(0), tuple(target)]))


@op("Expand", "input shape", "output", static=(1,), shape=_expand_shape)
def expand(attrs, x, shape):
    """``x`` broadcast with ``shape`` (numpy rules: either side's 1 stretches)."""
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(_ints(shape)))))


def _tile_shape(ctx: InferCtx) -> TensorType:
    shape, repeats = ctx.shape(0), _static_ints(ctx, 1, "repeats")
    if len(repeats) != len(shape) or any(r < 0 for r in repeats):
        ctx.fail(f"repeats {repeats} must be {len(shape)} values >= 0, one per axis of {list(shape)}")
    return TensorType(ctx.dtype(0), tuple(d * r for d, r in zip(shape, repeats)))


def _tile_adapt(up: Upgrade) -> None:
    if up.opset < 6:
        up.unsupported("Tile-1 (tiles and axis inputs); opset 6 takes one repeat per axis")


@op("Tile", "input repeats", "output", static=(1,), shape=_tile_shape, adapt=_tile_adapt)
def tile(attrs, x, repeats):
    """``x`` repeated repeats[i] times along each axis i."""
    return np.tile(x, _ints(repeats))


PAD_MODES = ("constant", "reflect", "edge", "wrap")


def pad_widths(rank: int, pads: list[int], axes: list[int] | None) -> list[tuple[int, int]]:
    """Per-axis (begin, end) pad amounts; negative amounts crop."""
    axes = _axes_or_all(rank, axes)
    widths = [(0, 0)] * rank
    for k, a in enumerate(axes):
        widths[a] = (pads[k], pads[len(axes) + k])
    return widths


def _pad_shape(ctx: InferCtx) -> TensorType:
    shape, pads = ctx.shape(0), _static_ints(ctx, 1, "pads")
    mode = _choice(ctx, "mode", PAD_MODES)
    axes = _axes_or_all(len(shape), _static_axes(ctx, 3, len(shape)))
    if len(pads) != 2 * len(axes):
        ctx.fail(f"{len(pads)} pads for {len(axes)} axes (need 2 per axis)")
    if ctx.has(2) and (ctx.dtype(2) != ctx.dtype(0) or ctx.type(2).size != 1):
        ctx.fail(f"constant_value must be one {ctx.dtype(0)} value, got {ctx.type(2)}")
    widths = pad_widths(len(shape), pads, axes)
    out = [d + b + e for d, (b, e) in zip(shape, widths)]
    if min(out, default=0) < 0:
        ctx.fail(f"pads {pads} crop more than the input {list(shape)} holds")
    if mode != "constant" and any(d + min(b, 0) + min(e, 0) == 0 and max(b, e) > 0
                                  for d, (b, e) in zip(shape, widths)):
        ctx.fail(f"{mode} padding of an empty axis")
    return TensorType(ctx.dtype(0), tuple(out))


def _pad_adapt(up: Upgrade) -> None:
    """Before opset 11 ``pads`` (``paddings`` in opset 1) and ``value`` were attributes."""
    if "paddings" in up.attrs:
        up.attrs["pads"] = up.attrs.pop("paddings")
    up.move_attr_to_input("pads", 1)
    data = up.types[0] if up.types else None
    if "value" in up.attrs and data is not None:
        up.move_attr_to_input("value", 2, dtype=data.dtype)


@op("Pad", "data pads constant_value? axes?", "output", attrs={"mode": Attr("string", "constant")},
    static=(1, 3), shape=_pad_shape, adapt=_pad_adapt)
def pad(attrs, data, pads, constant_value=None, axes=None):
    """``data`` padded by pads = [begins..., ends...] on ``axes`` with a constant, the reflection
    (mirrored on the edge values), the edge values or a wrap-around; negative pads crop."""
    widths = pad_widths(data.ndim, _ints(pads), _ints(axes))
    data = data[tuple(slice(max(-b, 0), d - max(-e, 0)) for d, (b, e) in zip(data.shape, widths))]
    grow = [(max(b, 0), max(e, 0)) for b, e in widths]
    if attrs["mode"] != "constant":
        return np.pad(data, grow, mode=attrs["mode"])
    if constant_value is not None:
        fill = constant_value.reshape(())
    else:
        fill = np.array("", dtype=object) if data.dtype == STRING else np.zeros((), data.dtype)
    out = np.full([d + b + e for d, (b, e) in zip(data.shape, grow)], fill, dtype=data.dtype)
    out[tuple(slice(b, b + d) for d, (b, _) in zip(data.shape, grow))] = data
    return out


def _crop_pad_slices(dim: int, size: int) -> tuple[slice, slice]:
    """(input slice, output slice) centring ``dim`` in ``size``: the extra half goes at the end."""
    if size <= dim:
        start = (dim - size) // 2
        return slice(start, start + size), slice(0, size)
    start = (size - dim) // 2
    return slice(0, dim), slice(start, start + dim)


def _center_crop_pad_shape(ctx: InferCtx) -> TensorType:
    shape, sizes = ctx.shape(0), _static_ints(ctx, 1, "shape")
    axes = ctx.attrs["axes"]
    axes = _axes_or_all(len(shape), _checked_axes(ctx, axes, len(shape)) if axes is not None else None)
    if len(sizes) != len(axes) or any(s < 0 for s in sizes):
        ctx.fail(f"shape {sizes} must hold one size >= 0 per axis of {axes}")
    out = list(shape)
    for a, s in zip(axes, sizes):
        out[a] = s
    return TensorType(ctx.dtype(0), tuple(out))


@op("CenterCropPad", "input_data shape", "output_data", attrs={"axes": Attr("ints", None)}, static=(1,),
    shape=_center_crop_pad_shape)
def center_crop_pad(attrs, x, shape):
    """``x`` centre-cropped or zero-padded to ``shape`` on ``axes``."""
    src, dst = [slice(None)] * x.ndim, [slice(None)] * x.ndim
    out = list(x.shape)
    for a, size in zip(_axes_or_all(x.ndim, attrs["axes"]), _ints(shape)):
        src[a], dst[a] = _crop_pad_slices(x.shape[a], size)
        out[a] = size
    result = np.zeros(out, dtype=x.dtype)
    result[tuple(dst)] = x[tuple(src)]
    return result


# ---- shape queries ------------------------------------------------------------------------------

def shape_range(rank: int, start: int, end: int | None) -> slice:
    """Shape's [start, end) window, clamped to [0, rank]."""
    return slice(*slice(start, end).indices(rank)[:2])


def _shape_shape(ctx: InferCtx) -> TensorType:
    window = shape_range(ctx.type(0).rank, ctx.attrs["start"], ctx.attrs["end"])
    return TensorType(INT64, (max(window.stop - window.start, 0),))


@op("Shape", "data", "shape", attrs={"start": Attr("int", 0), "end": Attr("int", None)},
    shape=_shape_shape, folds_on_types=True)
def shape(attrs, data):
    """The input's dims (int64), optionally the window [start, end) of them."""
    dims = np.array(data.shape, dtype=np.int64)
    return dims[shape_range(data.ndim, attrs["start"], attrs["end"])]


@op("Size", "data", "size", shape=lambda ctx: TensorType(INT64, ()), folds_on_types=True)
def size(attrs, data):
    """The input's number of elements (an int64 scalar)."""
    return np.array(data.size, dtype=np.int64)


# ---- constants ----------------------------------------------------------------------------------

CONSTANT_ATTRS = {"value": Attr("tensor", None), "value_float": Attr("float", None),
                  "value_floats": Attr("floats", None), "value_int": Attr("int", None),
                  "value_ints": Attr("ints", None), "value_string": Attr("string", None),
                  "value_strings": Attr("strings", None)}
_CONSTANT_DTYPES = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
                    "value_ints": np.int64, "value_string": object, "value_strings": object}


def _constant_value(attrs: dict[str, Any]) -> np.ndarray | None:
    """The one ``value*`` attribute set, as an array (``None`` unless exactly one is set)."""
    given = [k for k in CONSTANT_ATTRS if attrs.get(k) is not None]
    if len(given) != 1:
        return None
    name = given[0]
    if name == "value":
        return attrs[name]
    return np.array(attrs[name], dtype=_CONSTANT_DTYPES[name])


def _constant_shape(ctx: InferCtx) -> TensorType:
    value = _constant_value(ctx.attrs)
    if value is None:
        raise InvalidModel(f"Constant node {ctx.node!r}: exactly one of {', '.join(CONSTANT_ATTRS)} "
                           "must be set")
    return TensorType.of(value)


@op("Constant", "", "output", attrs=CONSTANT_ATTRS, shape=_constant_shape)
def constant(attrs):
    """The value of the one ``value*`` attribute: a tensor, or float32/int64/string scalars and lists."""
    return _constant_value(attrs).copy()


def _constant_of_shape_shape(ctx: InferCtx) -> TensorType:
    dims, value = _static_ints(ctx, 0, "shape"), ctx.attrs["value"]
    if value is not None and value.size != 1:
        ctx.fail(f"value must hold one element, got shape {list(value.shape)}")
    if any(d < 0 for d in dims):
        ctx.fail(f"shape {dims} has a negative dim")
    return TensorType(np.dtype(np.float32) if value is None else value.dtype, tuple(dims))


@op("ConstantOfShape", "input", "output", attrs={"value": Attr("tensor", None)}, static=(0,),
    shape=_constant_of_shape_shape)
def constant_of_shape(attrs, shape):
    """A tensor of the given shape filled with ``value`` (default float32 0)."""
    value = attrs["value"] if attrs["value"] is not None else np.zeros(1, np.float32)
    return np.full(_ints(shape), value.reshape(()), dtype=value.dtype)


def _eye_like_dtype(ctx: InferCtx) -> np.dtype:
    code = ctx.attrs["dtype"]
    return ctx.dtype(0) if code is None else onnx_to_dtype(code, ctx, "dtype")


def _eye_like_shape(ctx: InferCtx) -> TensorType:
    if ctx.type(0).rank != 2:
        ctx.fail(f"input must be 2-D, got {ctx.type(0)}")
    return TensorType(_eye_like_dtype(ctx), ctx.shape(0))


@op("EyeLike", "input", "output", attrs={"dtype": Attr("int", None), "k": Attr("int", 0)},
    shape=_eye_like_shape)
def eye_like(attrs, x):
    """Ones on diagonal ``k`` of a matrix shaped like the input, zeros elsewhere (dtype: attr or input's)."""
    rows, cols = x.shape
    eye = np.eye(rows, cols, k=attrs["k"], dtype=np.float64)
    return eye.astype(x.dtype if attrs["dtype"] is None else dtype_of(attrs["dtype"]))


NARROW_FLOATS = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def _range_values(start: np.ndarray, limit: np.ndarray, delta: np.ndarray, stash: int) -> np.ndarray:
    """start, start + delta, ... up to ``limit`` (exclusive), computed in float64 for floats
    (fp16/bf16: in the ``stash`` type)."""
    dtype = start.dtype
    if dtype.kind in "iu":
        return np.arange(int(start), int(limit), int(delta)).astype(dtype)
    work = dtype_of(stash) if dtype in NARROW_FLOATS else np.dtype(np.float64)
    s, lim, d = (float(v.astype(work)) for v in (start, limit, delta))
    n = max(math.ceil((lim - s) / d), 0)
    return (np.array(s, dtype=work) + np.arange(n, dtype=work) * np.array(d, dtype=work)).astype(dtype)


def _range_shape(ctx: InferCtx) -> TensorType:
    types = [ctx.type(i) for i in range(3)]
    dtype = same_dtype(ctx, types)
    if any(t.size != 1 or t.rank > 1 for t in types):
        ctx.fail(f"start, limit and delta must be scalars, got {', '.join(map(str, types))}")
    if float(ctx.value(2).reshape(())) == 0:
        ctx.fail("delta must be nonzero")
    start, limit, delta = (ctx.value(i).reshape(()) for i in range(3))
    values = _range_values(start, limit, delta, ctx.attrs["stash_type"])
    return TensorType(dtype, values.shape)


@op("Range", "start limit delta", "output", attrs={"stash_type": Attr("int", 1)}, static=(0, 1, 2),
    shape=_range_shape)
def range_(attrs, start, limit, delta):
    """start, start + delta, ... below ``limit`` (above it for a negative delta)."""
    return _range_values(start.reshape(()), limit.reshape(()), delta.reshape(()), attrs["stash_type"])


def _trilu_shape(ctx: InferCtx) -> TensorType:
    if ctx.type(0).rank < 2:
        ctx.fail(f"input must have rank >= 2, got {ctx.type(0)}")
    if ctx.has(1) and (ctx.type(1).size != 1 or ctx.dtype(1) != INT64):
        ctx.fail(f"k must be one int64 value, got {ctx.type(1)}")
    _choice(ctx, "upper", (0, 1))
    return ctx.type(0)


@op("Trilu", "input k?", "output", attrs={"upper": Attr("int", 1)}, static=(1,), shape=_trilu_shape)
def trilu(attrs, x, k=None):
    """The upper (upper=1) or lower triangle of the last two dims from diagonal ``k`` on; the rest 0."""
    k = 0 if k is None else int(k.reshape(()))
    ones = np.ones(x.shape[-2:], bool)
    keep = np.triu(ones, k) if attrs["upper"] else np.tril(ones, k)
    return np.where(keep, x, np.zeros((), x.dtype)).astype(x.dtype)
