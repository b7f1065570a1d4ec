"""Resampling operators: Resize (and the deprecated Upsample, upgraded to it), GridSample and
AffineGrid.

Resize is separable: each resized axis is interpolated in turn, every output position taking a
weighted sum of a few input taps (edge-clamped), computed in float64 and cast back.
"""

from __future__ import annotations

import math

import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.ir.registry import Attr, InferCtx, Upgrade, op
from tensoregg.ir.shapes import norm_axes
from tensoregg.ir.types import TensorType

_RESIZE_CHOICES = {
    "mode": ("nearest", "linear", "cubic"),
    "coordinate_transformation_mode": ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                                       "align_corners", "asymmetric", "tf_crop_and_resize"),
    "nearest_mode": ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"),
    "keep_aspect_ratio_policy": ("stretch", "not_larger", "not_smaller"),
}


def _check_choices(op_name: str, node: str, attrs: dict, choices: dict) -> None:
    for name, allowed in choices.items():
        if attrs[name] not in allowed:
            raise InvalidModel(f"{op_name} node {node!r}: {name} must be one of {', '.join(allowed)}, "
                               f"got {attrs[name]!r}")


def resize_plan(attrs: dict, shape: tuple[int, ...], axes: list[int], scales: np.ndarray | None,
                 sizes: np.ndarray | None) -> tuple[list[int], dict[int, float]]:
    """The output shape and each resized axis' scale (output length / input length)."""
    out = list(shape)
    if scales is not None:
        scale = {a: float(s) for a, s in zip(axes, scales)}
        for a in axes:
            out[a] = math.floor(scale[a] * shape[a])
        return out, scale
    assert sizes is not None  # the shape rule requires exactly one of scales and sizes
    scale = {a: int(n) / shape[a] for a, n in zip(axes, sizes)}
    policy = attrs["keep_aspect_ratio_policy"]
    if policy == "stretch":
        for a, n in zip(axes, sizes):
            out[a] = int(n)
        return out, scale
    common = (min if policy == "not_larger" else max)(scale.values())
    for a in axes:
        out[a] = int(common * shape[a] + 0.5)  # round half up
    return out, dict.fromkeys(axes, common)


def given_input(v: np.ndarray | None) -> np.ndarray | None:
    """An optional input, None when omitted or empty (opset 11 passes an empty ``scales``)."""
    return None if v is None or np.size(v) == 0 else np.asarray(v)


def _resize_shape(ctx: InferCtx) -> TensorType:
    _check_choices("Resize", ctx.node, ctx.attrs, _RESIZE_CHOICES)
    shape = ctx.shape(0)
    axes = norm_axes(ctx, ctx.attrs["axes"] or range(len(shape)), len(shape))
    scales = given_input(ctx.value(2)) if ctx.has(2) else None
    sizes = given_input(ctx.value(3)) if ctx.has(3) else None
    if (scales is None) == (sizes is None):
        ctx.fail("exactly one of scales and sizes must be given")
    given = scales if scales is not None else sizes
    assert given is not None
    if given.shape != (len(axes),):
        ctx.fail(f"scales/sizes must hold {len(axes)} values (one per resized axis), got {given.shape}")
    if scales is not None and not np.all(scales > 0):
        ctx.fail(f"scales must be positive, got {scales.tolist()}")
    if sizes is not None and (np.any(sizes <= 0) or 0 in [shape[a] for a in axes]):
        ctx.fail(f"sizes must be positive and resized axes non-empty, got {sizes.tolist()} for {list(shape)}")
    if ctx.attrs["coordinate_transformation_mode"] == "tf_crop_and_resize" and ctx.has(1) \
            and ctx.shape(1) != (2 * len(axes),):
        ctx.fail(f"roi must hold {2 * len(axes)} values (starts then ends), got shape {list(ctx.shape(1))}")
    out, _ = resize_plan(ctx.attrs, shape, axes, scales, sizes)
    return TensorType(ctx.dtype(0), tuple(out))


def _source_coords(attrs: dict, n_out: int, n_in: int, scale: float,
                   roi: tuple[float, float]) -> tuple[np.ndarray, np.ndarray | None]:
    """Input coordinate of each output position, and for tf_crop_and_resize which fall outside."""
    y = np.arange(n_out, dtype=np.float64)
    length = scale * n_in  # the resized length, fractional when it comes from a scale
    mode = attrs["coordinate_transformation_mode"]
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / length)
        return offset + (y + 0.5) / scale - 0.5, None
    if mode == "pytorch_half_pixel":
        return ((y + 0.5) / scale - 0.5 if length > 1 else np.zeros(n_out)), None
    if mode == "align_corners":
        return (y * (n_in - 1) / (length - 1) if length != 1 else np.zeros(n_out)), None
    if mode == "asymmetric":
        return y / scale, None
    start, end = roi  # tf_crop_and_resize
    if length != 1:
        x = y * (end - start) * (n_in - 1) / (length - 1)
    else:
        x = np.full(n_out, (end - start) * (n_in - 1) / 2)
    x = x + start * (n_in - 1)
    return x, (x < 0) | (x > n_in - 1)


def _nearest_index(attrs: dict, x: np.ndarray) -> np.ndarray:
    mode = attrs["nearest_mode"]
    if mode == "round_prefer_floor":
        return np.ceil(x - 0.5).astype(np.int64)
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5).astype(np.int64)
    return (np.floor(x) if mode == "floor" else np.ceil(x)).astype(np.int64)


def _keys_cubic(d: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a`` at distances ``d``."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _taps(attrs: dict, x: np.ndarray, n_in: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Input taps (unclamped) and their weights, both (n_out, n_taps), for linear/cubic modes.

    Taps are the n nearest integers around x, the lower ones preferred on a tie; with antialias the
    kernel is stretched by 1/scale when downsampling.
    """
    cubic = attrs["mode"] == "cubic"
    stretch = min(scale, 1.0) if attrs["antialias"] else 1.0
    n = 2 - 2 * (math.floor((-2 if cubic else -1) / stretch) + 1)
    below = np.ceil(x) - 1  # the tap left of x; x itself counts as the right one
    first = 1 - n // 2
    taps = below[:, None] + first + np.arange(n)
    d = (taps - x[:, None]) * stretch
    w = _keys_cubic(d, attrs["cubic_coeff_a"]) if cubic else np.clip(1 - np.abs(d), 0, 1)
    if attrs["antialias"]:
        w = w / w.sum(axis=1, keepdims=True)
    if attrs["exclude_outside"]:
        w = np.where((taps < 0) | (taps >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return taps.astype(np.int64), w


def _resize_axis(attrs: dict, data: np.ndarray, axis: int, n_out: int, scale: float,
                 roi: tuple[float, float]) -> np.ndarray:
    n_in = data.shape[axis]
    x, outside = _source_coords(attrs, n_out, n_in, scale, roi)
    if attrs["mode"] == "nearest":
        result = np.take(data, np.clip(_nearest_index(attrs, x), 0, n_in - 1), axis=axis)
    else:
        taps, w = _taps(attrs, x, n_in, scale)
        picked = np.take(data, np.clip(taps, 0, n_in - 1), axis=axis)  # (..., n_out, n_taps, ...)
        result = (picked * w.reshape(w.shape + (1,) * (data.ndim - axis - 1))).sum(axis=axis + 1)
    if outside is not None and outside.any():
        where = outside.reshape((n_out,) + (1,) * (data.ndim - axis - 1))
        result = np.where(where, cast_back(np.asarray(attrs["extrapolation_value"]), data.dtype), result)
    return result


def cast_back(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float64 -> ``dtype``, rounding and saturating for integers."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(y), info.min, info.max).astype(dtype)
    return y.astype(dtype)


_RESIZE_ATTRS = {
    "mode": Attr("string", "nearest"), "coordinate_transformation_mode": Attr("string", "half_pixel"),
    "nearest_mode": Attr("string", "round_prefer_floor"), "cubic_coeff_a": Attr("float", -0.75),
    "exclude_outside": Attr("int", 0), "extrapolation_value": Attr("float", 0.0), "antialias": Attr("int", 0),
    "axes": Attr("ints", ()), "keep_aspect_ratio_policy": Attr("string", "stretch")}


def _upsample_attrs(mode: str) -> dict:
    """Upsample's (and Resize-10's) semantics as Resize attributes: asymmetric, nearest = floor."""
    return {"mode": {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode),
            "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}


def _legacy_resize(up: Upgrade) -> None:
    """Upsample (1-9) and Resize-10 -> Resize(X, "", scales); opset-1 Upsample held the scales of
    its 4-D input as height_scale/width_scale, opsets 7-8 as a ``scales`` attribute."""
    if up.op == "Resize" and up.opset >= 11:
        if up.attrs.get("coordinate_transformation_mode") == "tf_half_pixel_for_nn":
            up.unsupported("coordinate_transformation_mode 'tf_half_pixel_for_nn' (removed in opset 13)")
        return
    if up.op == "Upsample" and up.opset < 7:
        h, w = up.attrs.pop("height_scale", 1.0), up.attrs.pop("width_scale", 1.0)
        up.inputs.append(up.const(np.array([1, 1, h, w], np.float32)))
    elif up.op == "Upsample" and up.opset < 9:
        up.move_attr_to_input("scales", 1, np.float32)
    up.op = "Resize"
    up.inputs = [up.inputs[0], "", up.inputs[1]]
    up.attrs = _upsample_attrs(up.attrs.get("mode", "nearest"))


@op("Resize", "X roi? scales? sizes?", "Y", shape=_resize_shape, static=(2, 3), adapt=_legacy_resize,
    attrs=_RESIZE_ATTRS)
def resize(attrs, x, roi=None, scales=None, sizes=None):
    """Resample X to the given scales or sizes by nearest, (anti-aliased) linear or cubic interpolation."""
    axes = [a % x.ndim for a in attrs["axes"]] or list(range(x.ndim))
    out, scale = resize_plan(attrs, x.shape, axes, given_input(scales), given_input(sizes))
    roi = given_input(roi)
    # roi stays in its own dtype: end - start is rounded there, as onnx's reference does
    bounds = {a: (0.0, 1.0) if roi is None else (roi[i], roi[i + len(axes)]) for i, a in enumerate(axes)}
    y = x if attrs["mode"] == "nearest" else x.astype(np.float64)
    for a in axes:
        if out[a] == x.shape[a] and math.isclose(scale[a], 1.0) and np.allclose(bounds[a], (0.0, 1.0)):
            continue  # identity along this axis
        y = _resize_axis(attrs, y, a, out[a], scale[a], bounds[a])
    return cast_back(y, x.dtype) if y.dtype != x.dtype else y


def _as_resize(attrs: dict) -> dict:
    return {**{k: a.default for k, a in _RESIZE_ATTRS.items()}, **_upsample_attrs(attrs["mode"])}


def _upsample_shape(ctx: InferCtx) -> TensorType:
    shape, scales = ctx.shape(0), ctx.value(1)
    if np.shape(scales) != (len(shape),) or not np.all(scales >= 1):
        ctx.fail(f"scales must hold {len(shape)} values >= 1, got {np.asarray(scales).tolist()}")
    return TensorType(ctx.dtype(0), tuple(math.floor(s * d) for s, d in zip(scales.tolist(), shape)))


@op("Upsample", "X scales", "Y", shape=_upsample_shape, static=(1,), adapt=_legacy_resize,
    attrs={"mode": Attr("string", "nearest")})
def upsample(attrs, x, scales):
    """Deprecated Resize with asymmetric coordinates (nearest takes the floor); upgraded on import."""
    return resize(_as_resize(attrs), x, None, scales)


_GRID_CHOICES = {"mode": ("linear", "nearest", "cubic"), "padding_mode": ("zeros", "border", "reflection")}


def _grid_sample_adapt(up: Upgrade) -> None:
    """GridSample-16 named the modes bilinear/bicubic."""
    if "mode" in up.attrs:
        up.attrs["mode"] = {"bilinear": "linear", "bicubic": "cubic"}.get(up.attrs["mode"], up.attrs["mode"])


def _grid_sample_shape(ctx: InferCtx) -> TensorType:
    _check_choices("GridSample", ctx.node, ctx.attrs, _GRID_CHOICES)
    x, grid = ctx.shape(0), ctx.shape(1)
    r = len(x) - 2
    if r < 1 or len(grid) != r + 2 or grid[0] != x[0] or grid[-1] != r:
        ctx.fail(f"X {list(x)} needs a grid of shape [{x[0] if x else 'N'}, *out, {r}], got {list(grid)}")
    if ctx.dtype(1).kind != "f":
        ctx.fail(f"grid must be a float tensor, got {ctx.dtype(1)}")
    return TensorType(ctx.dtype(0), (x[0], x[1], *grid[1:-1]))


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect coordinates off the borders lo and hi until they fall inside [lo, hi]."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo)
    dist = np.where(x < lo, lo - x, x - hi)
    bounces = np.floor(dist / span)
    rest = dist - bounces * span
    even = bounces % 2 == 0
    reflected = np.where(x < lo, np.where(even, lo + rest, hi - rest), np.where(even, hi - rest, lo + rest))
    return np.where((x < lo) | (x > hi), reflected, x)


def _grid_taps(attrs: dict, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Integer taps and weights along one axis for each sampling coordinate x."""
    if attrs["mode"] == "nearest":
        return [np.rint(x)], [np.ones_like(x)]
    base = np.floor(x)
    t = x - base
    if attrs["mode"] == "linear":
        return [base, base + 1], [1 - t, t]
    return [base + k for k in (-1, 0, 1, 2)], [_keys_cubic(t - k, -0.75) for k in (-1, 0, 1, 2)]


@op("GridSample", "X grid", "Y", shape=_grid_sample_shape, adapt=_grid_sample_adapt,
    attrs={"align_corners": Attr("int", 0), "mode": Attr("string", "linear"),
           "padding_mode": Attr("string", "zeros")})
def grid_sample(attrs, x, grid):
    """Sample X at the normalized positions of grid (last axis: x, y, z... = innermost axis first)."""
    dims = x.shape[2:]
    align, padding = attrs["align_corners"], attrs["padding_mode"]
    taps, weights = [], []
    for k, n in enumerate(dims):  # grid[..., -1 - k] addresses spatial axis k
        g = grid[..., len(dims) - 1 - k]
        c = (g + 1) / 2.0 * (n - 1) if align else ((g + 1) * n - 1) / 2.0
        lo, hi = (0.0, n - 1.0) if align else (-0.5, n - 0.5)
        if attrs["mode"] == "nearest":
            c = np.rint(c)
        if padding == "border":
            c = np.where((c < lo) | (c > hi), np.clip(c, 0, n - 1), c)
        elif padding == "reflection":
            c = _reflect(c, lo, hi)
        t, w = _grid_taps(attrs, c.astype(np.float64))
        if padding == "reflection":
            t = [np.trunc(_reflect(i, lo, hi)) for i in t]
        taps.append([i.astype(np.int64) for i in t])
        weights.append(w)
    xt = np.moveaxis(x, 1, -1).astype(np.float64)  # (N, *dims, C)
    batch = np.arange(x.shape[0]).reshape((-1,) + (1,) * (grid.ndim - 2))
    out = np.zeros((*grid.shape[:-1], x.shape[1]))
    for combo in np.ndindex(*[len(t) for t in taps]):
        idx = [taps[k][j] for k, j in enumerate(combo)]
        w = np.prod([weights[k][j] for k, j in enumerate(combo)], axis=0)
        term = w[..., None] * xt[(batch, *[np.clip(i, 0, n - 1) for i, n in zip(idx, dims)])]
        if padding == "zeros":  # outside taps read 0; border taps clamp; reflected taps are inside
            inside = np.logical_and.reduce([(i >= 0) & (i < n) for i, n in zip(idx, dims)])
            term = np.where(inside[..., None], term, 0.0)
        out += term
    return np.moveaxis(out, -1, 1).astype(x.dtype)


def _affine_grid_shape(ctx: InferCtx) -> TensorType:
    theta, size = ctx.shape(0), ctx.ints(1)
    r = len(size) - 2
    if r not in (2, 3) or theta != (size[0], r, r + 1):
        ctx.fail(f"theta {list(theta)} must be [N, 2, 3] with a 4-value size or [N, 3, 4] with a 5-value "
                 f"size, got size {size}")
    if min(size[2:]) <= 0:
        ctx.fail(f"size {size} has an empty spatial dimension")
    return TensorType(ctx.dtype(0), (size[0], *size[2:], r))


@op("AffineGrid", "theta size", "grid", shape=_affine_grid_shape, static=(1,),
    attrs={"align_corners": Attr("int", 0)})
def affine_grid(attrs, theta, size):
    """Apply each affine matrix theta[n] to a regular grid over [-1, 1] of the spatial size."""
    dims = [int(d) for d in size[2:]]
    if attrs["align_corners"]:
        axes = [np.linspace(-1.0, 1.0, n) for n in dims]
    else:
        axes = [(2 * np.arange(n) + 1) / n - 1 for n in dims]
    mesh = np.meshgrid(*axes, indexing="ij")  # per spatial axis, outer first
    points = np.stack([*mesh[::-1], np.ones(dims)], axis=-1)  # (*dims, r + 1): x, y[, z], 1
    grid = np.einsum("...k,njk->n...j", points, theta.astype(np.float64))
    return grid.astype(theta.dtype)
