"""Converters of the ATen neural-network layers (convolution, batch and layer norm, pooling) and of
the fused attention kernels of torch's inference fast paths (``nn.MultiheadAttention`` and
``nn.TransformerEncoderLayer`` in eval mode under no_grad, as TorchDynamo captures them: single ATen
ops with no decomposition); ``aten.ATEN`` maps the ops to them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tensoregg.frontends.aten import Builder


def _pair(v: Any, n: int) -> list[int]:
    v = [v] if isinstance(v, int) else list(v)
    return v * n if len(v) == 1 else v


def convolution(b: Builder, x: Any, w: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
                transposed: bool, output_padding: Any, groups: int) -> str:
    n = len(b.shape(w)) - 2
    pads = _pair(padding, n)
    inputs = [b.tensor(x), b.tensor(w)] + ([b.tensor(bias)] if bias is not None else [])
    window: dict[str, Any] = {"strides": _pair(stride, n), "pads": pads + pads,
                              "dilations": _pair(dilation, n), "group": groups}
    if transposed:  # torch's weight layout (C_in, C_out / groups, k...) is ConvTranspose's
        return b.emit("ConvTranspose", inputs, output_padding=_pair(output_padding, n), **window)
    return b.emit("Conv", inputs, **window)


def group_norm(b: Builder, x: Any, weight: Any, bias: Any, n: int, c: int, hw: int, groups: int,
               eps: float) -> tuple[str | None, ...]:
    scale = b.tensor(weight) if weight is not None else b.const(np.ones(c), b.out_dtype)
    shift = b.tensor(bias) if bias is not None else b.const(np.zeros(c), b.out_dtype)
    y = b.emit("GroupNormalization", [b.tensor(x), scale, shift], num_groups=groups, epsilon=eps)
    return y, None, None


def upsample(mode: str) -> Any:
    """``upsample_{nearest,bilinear}2d.vec`` as Resize to the node's output size (torch's nearest is
    asymmetric with floor; bilinear is half-pixel, or align_corners)."""

    def convert(b: Builder, x: Any, output_size: Any, *rest: Any) -> str:
        align_corners = mode == "linear" and bool(rest[0])
        transform = "align_corners" if align_corners else "asymmetric" if mode == "nearest" else "half_pixel"
        return b.emit("Resize", [b.tensor(x), "", "", b.const(b.out_shape, np.int64)], mode=mode,
                      coordinate_transformation_mode=transform, nearest_mode="floor")

    return convert


def batch_norm(b: Builder, x: Any, weight: Any, bias: Any, mean: Any, var: Any, momentum: float,
                eps: float) -> tuple[str | None, ...]:
    c = b.shape(x)[1]
    scale = b.tensor(weight) if weight is not None else b.const(np.ones(c), b.out_dtype)
    shift = b.tensor(bias) if bias is not None else b.const(np.zeros(c), b.out_dtype)
    y = b.emit("BatchNormalization", [b.tensor(x), scale, shift, b.tensor(mean), b.tensor(var)], epsilon=eps)
    return y, None, None


def layer_norm(b: Builder, x: Any, normalized_shape: Sequence[int], weight: Any, bias: Any,
                eps: float) -> tuple[str | None, ...]:
    shape = list(normalized_shape)
    scale = b.tensor(weight) if weight is not None else b.const(np.ones(shape), b.out_dtype)
    inputs = [b.tensor(x), scale] + ([b.tensor(bias)] if bias is not None else [])
    return b.emit("LayerNormalization", inputs, axis=-len(shape), epsilon=eps), None, None


def max_pool(b: Builder, x: Any, kernel: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1,
              ceil_mode: bool = False) -> tuple[str | None, ...]:
    n = len(b.shape(x)) - 2
    pads = _pair(padding, n)
    y = b.emit("MaxPool", [b.tensor(x)], kernel_shape=_pair(kernel, n),
               strides=_pair(stride or kernel, n), pads=pads + pads, dilations=_pair(dilation, n),
               ceil_mode=int(ceil_mode))
    return y, None


def avg_pool(b: Builder, x: Any, kernel: Any, stride: Any = (), padding: Any = 0, ceil_mode: bool = False,
              count_include_pad: bool = True, divisor_override: Any = None) -> str:
    if divisor_override is not None:
        return b.unsupported("avg_pool2d with divisor_override")
    n = len(b.shape(x)) - 2
    pads = _pair(padding, n)
    return b.emit("AveragePool", [b.tensor(x)], kernel_shape=_pair(kernel, n),
                  strides=_pair(stride or kernel, n), pads=pads + pads, ceil_mode=int(ceil_mode),
                  count_include_pad=int(count_include_pad))


def adaptive_avg_pool(b: Builder, x: Any, output_size: Sequence[int]) -> str:
    spatial = b.shape(x)[2:]
    if all(o == 1 for o in output_size):
        return b.emit("GlobalAveragePool", [b.tensor(x)])
    if any(i % o for i, o in zip(spatial, output_size)):
        return b.unsupported(f"adaptive average pooling from {list(spatial)} to {list(output_size)} "
                             "(windows of unequal sizes)")
    kernel = [i // o for i, o in zip(spatial, output_size)]
    return b.emit("AveragePool", [b.tensor(x)], kernel_shape=kernel, strides=kernel)



def _linear(b: Builder, x: str, w: str, bias: str) -> str:
    """x @ w.T + bias (w, bias: constant names; the transpose folds)."""
    return b.emit("Add", [b.emit("MatMul", [x, b.emit("Transpose", [w], perm=[1, 0])]), bias])


def _rows(b: Builder, w: Any, k: int, n: int) -> str:
    """Rows k*n .. (k+1)*n of a packed (3n, ...) projection weight or bias."""
    return b.emit("Slice", [b.tensor(w), b.const([k * n], np.int64), b.const([(k + 1) * n], np.int64),
                            b.const([0], np.int64)])


def _attention(b: Builder, q: str, k: str, v: str, embed: int, heads: int, qkv_w: Any, qkv_b: Any,
               proj_w: Any, proj_b: Any) -> str:
    """Multi-head attention of batch-first (B, S, E) values (IR names) with packed in-projections, as
    the fused ATen kernels compute it (no mask)."""
    batch, seq = b.shape(q)[:2]
    split = b.const([batch, seq, heads, embed // heads], np.int64)

    def head_major(x: str, part: int) -> str:
        projected = _linear(b, x, _rows(b, qkv_w, part, embed), _rows(b, qkv_b, part, embed))
        return b.emit("Transpose", [b.emit("Reshape", [projected, split])], perm=[0, 2, 1, 3])

    scale = b.const(1 / np.sqrt(embed // heads), b.dtype(q))
    keys_t = b.emit("Transpose", [head_major(k, 1)], perm=[0, 1, 3, 2])
    scores = b.emit("MatMul", [b.emit("Mul", [head_major(q, 0), scale]), keys_t])
    heads_out = b.emit("MatMul", [b.emit("Softmax", [scores], axis=-1), head_major(v, 2)])
    merged = b.emit("Reshape", [b.emit("Transpose", [heads_out], perm=[0, 2, 1, 3]),
                                b.const([batch, seq, embed], np.int64)])
    return _linear(b, merged, b.tensor(proj_w), b.tensor(proj_b))


def multi_head_attention(b: Builder, q: Any, k: Any, v: Any, embed: int, heads: int, qkv_w: Any,
                          qkv_b: Any, proj_w: Any, proj_b: Any, mask: Any = None, need_weights: bool = True,
                          average_attn_weights: bool = True, mask_type: Any = None) -> tuple[str | None, ...]:
    if mask is not None:
        return b.unsupported("attention with a mask")
    q, k, v = b.tensor(q), b.tensor(k), b.tensor(v)
    return _attention(b, q, k, v, embed, heads, qkv_w, qkv_b, proj_w, proj_b), None


def encoder_layer(b: Builder, src: Any, embed: int, heads: int, qkv_w: Any, qkv_b: Any, proj_w: Any,
                   proj_b: Any, use_gelu: bool, norm_first: bool, eps: float, norm1_w: Any, norm1_b: Any,
                   norm2_w: Any, norm2_b: Any, ffn1_w: Any, ffn1_b: Any, ffn2_w: Any, ffn2_b: Any,
                   mask: Any = None, mask_type: Any = None) -> str:
    """``nn.TransformerEncoderLayer``'s fused inference kernel (its fast path in eval mode)."""
    if mask is not None:
        return b.unsupported("encoder layer with a mask")

    def norm(x: str, w: Any, bias: Any) -> str:
        return b.emit("LayerNormalization", [x, b.tensor(w), b.tensor(bias)], axis=-1, epsilon=eps)

    def attend(x: str) -> str:
        return _attention(b, x, x, x, embed, heads, qkv_w, qkv_b, proj_w, proj_b)

    def feed_forward(x: str) -> str:
        hidden = _linear(b, x, b.tensor(ffn1_w), b.tensor(ffn1_b))
        hidden = b.emit("Gelu" if use_gelu else "Relu", [hidden])
        return _linear(b, hidden, b.tensor(ffn2_w), b.tensor(ffn2_b))

    x = b.tensor(src)
    if norm_first:
        x = b.emit("Add", [x, attend(norm(x, norm1_w, norm1_b))])
        return b.emit("Add", [x, feed_forward(norm(x, norm2_w, norm2_b))])
    x = norm(b.emit("Add", [x, attend(x)]), norm1_w, norm1_b)
    return norm(b.emit("Add", [x, feed_forward(x)]), norm2_w, norm2_b)


def nms(b: Builder, boxes: Any, scores: Any, iou_threshold: float) -> str:
    """``torchvision.ops.nms`` (one op in torch.export): ONNX NonMaxSuppression over one batch and
    class, corner boxes, no limit (every box may be kept), no score threshold; its rows' box column."""
    n = b.shape(boxes)[0]  # (an upper bound where the boxes are a data-dependent selection)
    rows = b.emit("NonMaxSuppression", [b.emit("Unsqueeze", [b.tensor(boxes), b.const([0], np.int64)]),
                                        b.emit("Unsqueeze", [b.tensor(scores), b.const([0, 1], np.int64)]),
                                        b.const([n], np.int64), b.const([iou_threshold], np.float32)])
    return b.emit("Gather", [rows, b.const(2, np.int64)], axis=1)
