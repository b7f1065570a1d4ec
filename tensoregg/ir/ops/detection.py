"""Detection operators: NonMaxSuppression, a data-dependent selection (its output's size is an
upper bound unless its inputs are compile-time constants, ``tensoregg.ir.bounds``)."""

from __future__ import annotations

import numpy as np

from tensoregg.ir.registry import Attr, InferCtx, op
from tensoregg.ir.types import TensorType

INT64 = np.dtype(np.int64)


def _nms_shape(ctx: InferCtx) -> TensorType:
    boxes, scores = ctx.type(0), ctx.type(1)
    if boxes.rank != 3 or boxes.shape[2] != 4:
        ctx.fail(f"boxes must be [batches, boxes, 4], got {boxes}")
    if scores.rank != 3 or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
        ctx.fail(f"scores must be [batches, classes, boxes] = [{boxes.shape[0]}, C, {boxes.shape[1]}], "
                 f"got {scores}")
    if boxes.dtype.kind != "f" or scores.dtype != boxes.dtype:
        ctx.fail(f"boxes and scores must be floats of one type, got {boxes} and {scores}")
    for i, kind in ((2, "i"), (3, "f"), (4, "f")):
        if ctx.has(i) and (ctx.type(i).size > 1 or ctx.dtype(i).kind != kind):
            ctx.fail(f"input {i} must be one {'int64' if kind == 'i' else 'float'}, got {ctx.type(i)}")
    if all(ctx.known(i) is not None for i in range(len(ctx.types)) if ctx.has(i)):
        args = [ctx.known(i) if ctx.has(i) else None for i in range(5)]
        return TensorType.of(non_max_suppression(ctx.attrs, *args))
    limit = ctx.known(2) if ctx.has(2) else np.zeros(1, INT64)
    per_class = boxes.shape[1] if limit is None else min(max(int(limit.reshape(-1)[0]), 0), boxes.shape[1])
    return TensorType(INT64, (boxes.shape[0] * scores.shape[1] * per_class, 3))


def _corners(boxes: np.ndarray, center: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each box's low and high corners ([N, 2], as ONNX orders the coordinates) and area."""
    if center:  # [x_center, y_center, width, height]
        half = boxes[:, 2:] / 2
        lo, hi = boxes[:, :2] - half, boxes[:, :2] + half
    else:  # [y1, x1, y2, x2], either corner first
        lo, hi = np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])
    return lo, hi, (hi[:, 1] - lo[:, 1]) * (hi[:, 0] - lo[:, 0])


def _suppressed(i: int, rest: np.ndarray, corners: tuple[np.ndarray, np.ndarray, np.ndarray],
                threshold: np.generic) -> np.ndarray:
    """Whether each box of ``rest`` overlaps box ``i`` by an IoU above ``threshold`` (ONNX's rule, in
    the boxes' dtype: an empty intersection or a box of no area never suppresses)."""
    lo, hi, area = corners
    low, high = np.maximum(lo[i], lo[rest]), np.minimum(hi[i], hi[rest])
    inter = (high[:, 1] - low[:, 1]) * (high[:, 0] - low[:, 0])
    union = area[i] + area[rest] - inter
    ok = (high > low).all(axis=1) & (inter > 0) & (area[rest] > 0) & (union > 0) & (area[i] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ok & (inter / np.where(ok, union, 1) > threshold)


@op("NonMaxSuppression", "boxes scores max_output_boxes_per_class? iou_threshold? score_threshold?",
    "selected_indices", attrs={"center_point_box": Attr("int", 0)}, shape=_nms_shape,
    bounded=(0, 1, 2, 3, 4))
def non_max_suppression(attrs, boxes, scores, max_output=None, iou_threshold=None, score_threshold=None):
    """Per batch and class, greedily keep the highest-scoring boxes (ties: lower index first) whose
    IoU with every box kept before is at most ``iou_threshold``, at most ``max_output_boxes_per_class``
    (0 when omitted) of those scoring above ``score_threshold``; rows [batch, class, box] in that order."""
    dtype = boxes.dtype.type
    limit = 0 if max_output is None or max_output.size == 0 else max(int(max_output.reshape(-1)[0]), 0)
    iou = dtype(0 if iou_threshold is None or iou_threshold.size == 0 else iou_threshold.reshape(-1)[0])
    selected = []
    for b in range(boxes.shape[0]):
        corners = _corners(boxes[b], bool(attrs["center_point_box"]))
        for c in range(scores.shape[1]):
            s = scores[b, c]
            candidates = np.arange(s.shape[0])
            if score_threshold is not None and score_threshold.size:
                candidates = candidates[s > dtype(score_threshold.reshape(-1)[0])]
            order = candidates[np.lexsort((candidates, -s[candidates]))]
            kept: list[int] = []
            alive = np.ones(order.shape[0], bool)
            for k, box in enumerate(order):
                if len(kept) >= limit:
                    break
                if not alive[k]:
                    continue
                kept.append(int(box))
                alive[k + 1:] &= ~_suppressed(box, order[k + 1:], corners, iou)
            selected += [(b, c, k) for k in kept]
    return np.array(selected, np.int64).reshape(-1, 3)
