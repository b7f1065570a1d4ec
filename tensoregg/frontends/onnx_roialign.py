"""RoiAlign imported as MatMuls by per-roi interpolation matrices.

Bilinear sampling factors into rows and columns: each sample row (column) takes weights on two
neighbouring feature rows (columns), and a sample outside the map weighs 0 on both axes. So a roi's
samples are ``Y @ X[batch] @ Xᵀ`` with Y [samples_h, H] and X [samples_w, W] built from the rois by
elementwise ops and a comparison with ``range(H)``. ``avg`` sums the two weight rows and averages
the samples of a bin; ``max`` takes, as ONNX's reference and onnxruntime do, the largest of the four
weighted corners of each sample, then of the bin's samples. ``sampling_ratio`` 0 (a sample count
that depends on each roi's size) is declined.
"""

from __future__ import annotations

import numpy as np

from tensoregg.errors import InvalidModel
from tensoregg.frontends.onnx_expand import Expanding, Expansion
from tensoregg.ir import Attr


def _axis(ex: Expanding, start: str, size: str, pooled: int, ratio: int, extent: int) -> tuple[str, str]:
    """The [rois, pooled * ratio, extent] weights of the low and the high neighbour along one axis."""
    add, dtype = ex.add, ex.type(0).dtype

    def c(v: object) -> str:
        return ex.const(v, dtype)

    steps = (np.arange(pooled)[:, None] + (np.arange(ratio) + 0.5) / ratio).reshape(-1)
    pos = add("Add", [start, add("Mul", [add("Div", [size, c(pooled)]), c(steps)])])  # [rois, samples]
    inside = add("And", [add("GreaterOrEqual", [pos, c(-1)]), add("LessOrEqual", [pos, c(extent)])])
    pos = add("Max", [pos, c(0)])
    low = add("Floor", [pos])
    edge = add("GreaterOrEqual", [low, c(extent - 1)])
    low = add("Where", [edge, c(extent - 1), low])
    frac = add("Where", [edge, c(0), add("Sub", [pos, low])])
    high = add("Min", [add("Add", [low, c(1)]), c(extent - 1)])
    index, zero, last = c(np.arange(extent)), c(0), ex.const([-1], np.int64)

    def weights(at: str, w: str) -> str:
        w = add("Unsqueeze", [add("Where", [inside, w, zero]), last])
        return add("Where", [add("Equal", [add("Unsqueeze", [at, last]), index]), w, zero])

    return weights(low, add("Sub", [c(1), frac])), weights(high, frac)


def _roi_align(ex: Expanding) -> None:
    a, add = ex.attrs, ex.add
    x, rois = ex.type(0), ex.type(1)
    if x.rank != 4 or rois.shape[-1:] != (4,) or rois.rank != 2:
        raise InvalidModel(f"{ex.where}: X {x.shape} and rois {rois.shape}, expected [N, C, H, W] and [R, 4]")
    ratio, (oh, ow), (_, _, h, w) = a["sampling_ratio"], (a["output_height"], a["output_width"]), x.shape
    if ratio < 1:
        ex.unsupported(f"sampling_ratio {ratio} (a sample count that depends on each roi's size)")
    mode = a["coordinate_transformation_mode"] or ("half_pixel" if ex.opset >= 16 else "output_half_pixel")
    if mode not in ("half_pixel", "output_half_pixel") or a["mode"] not in ("avg", "max"):
        raise InvalidModel(f"{ex.where}: coordinate_transformation_mode {mode!r}, mode {a['mode']!r}")
    box = add("Sub", [add("Mul", [ex.input(1), ex.const(a["spatial_scale"], x.dtype)]),
                      ex.const(0.5 if mode == "half_pixel" else 0.0, x.dtype)])
    one = ex.const([1], np.int64)
    corner = [add("Slice", [box, ex.const([k], np.int64), ex.const([k + 1], np.int64), one])
              for k in range(4)]  # x1 y1 x2 y2, each [rois, 1]
    sizes = [add("Sub", [corner[k + 2], corner[k]]) for k in (0, 1)]
    if mode == "output_half_pixel":  # malformed rois become 1 x 1
        sizes = [add("Max", [s, ex.const(1.0, x.dtype)]) for s in sizes]
    rows = _axis(ex, corner[1], sizes[1], oh, ratio, h)
    cols = _axis(ex, corner[0], sizes[0], ow, ratio, w)
    feats = add("Gather", [ex.input(0), ex.input(2)], axis=0)  # [rois, C, H, W]

    def sample(r: str, c: str) -> str:  # [rois, C, samples_h, samples_w]
        left = add("MatMul", [add("Unsqueeze", [r, one]), feats])
        return add("MatMul", [left, add("Transpose", [add("Unsqueeze", [c, one])], perm=(0, 1, 3, 2))])

    if a["mode"] == "avg":
        s = sample(add("Add", list(rows)), add("Add", list(cols)))
        s, reduce = add("Div", [s, ex.const(ratio * ratio, x.dtype)]), "ReduceSum"
    else:
        s, reduce = add("Max", [sample(r, c) for r in rows for c in cols]), "ReduceMax"
    bins = add("Reshape", [s, ex.const([rois.shape[0], x.shape[1], oh, ratio, ow, ratio], np.int64)])
    add(reduce, [bins, ex.const([3, 5], np.int64)], out=0, keepdims=0)


EXPANSIONS = {
    "RoiAlign": Expansion(_roi_align, {
        "coordinate_transformation_mode": Attr("string", None), "mode": Attr("string", "avg"),
        "output_height": Attr("int", 1), "output_width": Attr("int", 1), "sampling_ratio": Attr("int", 0),
        "spatial_scale": Attr("float", 1.0)}, since=10),
}
"""The region-of-interest operators by name."""
