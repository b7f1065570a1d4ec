"""DFT and STFT imported as a MatMul by a constant matrix of cosines and sines.

The transformed axis is moved next to the real/imaginary axis and the two flattened together, so
one matrix (computed in float64, stored in the input's dtype) states the whole transform:
truncation or zero padding to ``dft_length``, ``onesided``, ``inverse`` (with its 1/n scale) and
the one-sided inverse (irfft). STFT gathers its frames with constant indices, weights them by the
window and applies the same matrix.
"""

from __future__ import annotations

import numpy as np

from tensoregg.errors import InvalidModel, ShapeError
from tensoregg.frontends.onnx_expand import Expanding, Expansion
from tensoregg.ir import Attr


def dft_matrix(n: int, parts: int, length: int, *, inverse: bool, onesided: bool) -> np.ndarray:
    """The [n, parts, bins, parts_out] array taking ``n`` samples (real, or real and imaginary:
    ``parts``) to the DFT of length ``length`` as ONNX defines it (onesided: the first
    length // 2 + 1 bins; inverse and onesided: the real signal whose one-sided spectrum is given)."""
    irfft = inverse and onesided
    used = min(n, length // 2 + 1 if irfft else length)
    bins = length // 2 + 1 if onesided and not inverse else length
    p, q = np.arange(used)[:, None], np.arange(bins)[None, :]
    theta = 2 * np.pi * ((p * q) % length) / length
    cos, sin = np.cos(theta), np.sin(theta) * (1 if inverse else -1)
    # (a + ib)(cos + i sin); irfft sums the full spectrum, whose upper half conjugates the lower one
    w = np.where((p == 0) | (2 * p == length), 1.0, 2.0) if irfft else 1.0
    m = np.zeros((n, parts, bins, 1 if irfft else 2))
    m[:used, 0, :, 0] = w * cos
    if parts == 2:
        m[:used, 1, :, 0] = -w * sin
    if not irfft:
        m[:used, 0, :, 1] = sin
        if parts == 2:
            m[:used, 1, :, 1] = cos
    return m / length if inverse else m


MAX_MATRIX = 1 << 24
"""The most elements a transform's matrix may hold (64 MiB in float32): it grows as the square of
the length, where an FFT would not."""


def _matrix(ex: Expanding, n: int, parts: int, length: int, *, inverse: bool, onesided: bool) -> np.ndarray:
    """``dft_matrix``, declined (UnsupportedOperator naming the node) past ``MAX_MATRIX`` elements."""
    if n * parts * 2 * length > MAX_MATRIX:
        ex.unsupported(f"a transform of length {length} over {n} samples (its matrix would exceed "
                       f"{MAX_MATRIX} elements)")
    return dft_matrix(n, parts, length, inverse=inverse, onesided=onesided)


def _transform(ex: Expanding, x: str, shape: tuple[int, ...], axis: int, m: np.ndarray) -> None:
    """Output 0: ``m`` (a ``dft_matrix``) applied along ``axis`` of ``x``, whose last axis holds
    the real/imaginary parts."""
    r, add = len(shape), ex.add
    perm = [i for i in range(r - 1) if i != axis] + [axis, r - 1]
    moved = [shape[i] for i in perm]
    if perm != list(range(r)):
        x = add("Transpose", [x], perm=tuple(perm))
    flat = add("Reshape", [x, ex.const([*moved[:-2], -1], np.int64)])
    y = add("MatMul", [flat, ex.const(m.reshape(m.shape[0] * m.shape[1], -1), ex.type(0).dtype)])
    bins = ex.const([*moved[:-2], *m.shape[2:]], np.int64)
    if perm == list(range(r)):
        add("Reshape", [y, bins], out=0)
    else:
        add("Transpose", [add("Reshape", [y, bins])], out=0, perm=tuple(int(i) for i in np.argsort(perm)))


def _parts(ex: Expanding, shape: tuple[int, ...]) -> int:
    if len(shape) < 2 or shape[-1] not in (1, 2):
        raise ShapeError(f"{ex.where}: input of shape {shape} has no last axis of 1 (real) or 2 "
                         "(complex) parts")
    return shape[-1]


def _dft(ex: Expanding) -> None:
    shape = ex.type(0).shape
    parts, r = _parts(ex, shape), len(shape)
    default = -2 if ex.opset >= 20 else ex.attrs["axis"]  # opset 20 made the axis an input
    axis = int(ex.value(2, "axis")) if ex.has(2) else default
    if not (-r <= axis <= -2 or 0 <= axis <= r - 2):
        raise InvalidModel(f"{ex.where}: axis {axis} out of range for an input of rank {r}")
    axis %= r
    inverse, onesided = bool(ex.attrs["inverse"]), bool(ex.attrs["onesided"])
    n = shape[axis]
    length = int(ex.value(1, "dft_length")) if ex.has(1) else 2 * (n - 1) if inverse and onesided else n
    if length < 1:
        raise InvalidModel(f"{ex.where}: dft_length {length}")
    m = _matrix(ex, n, parts, length, inverse=inverse, onesided=onesided)
    _transform(ex, ex.input(0), shape, axis, m)


def _stft(ex: Expanding) -> None:
    shape = ex.type(0).shape
    parts = _parts(ex, shape)
    if len(shape) != 3:
        raise ShapeError(f"{ex.where}: signal of shape {shape}, expected [batch, length, 1 or 2]")
    window = ex.type(2).shape if ex.has(2) else None
    length = int(ex.value(3, "frame_length")) if ex.has(3) else window[0] if window else shape[1]
    size, step = window[0] if window else length, int(ex.value(1, "frame_step"))
    if step < 1 or length < 1 or length > shape[1] or (window and len(window) != 1):
        raise InvalidModel(f"{ex.where}: frame_step {step}, frame_length {length}, window {window} "
                           f"for a signal of shape {shape}")
    starts = np.arange(1 + (shape[1] - length) // step) * step
    index = starts[:, None] + np.arange(size)
    x = ex.input(0)
    if index.max() >= shape[1]:  # a window longer than the frames reads zeros past the end
        pad = ex.const(np.zeros((shape[0], index.max() + 1 - shape[1], parts)), ex.type(0).dtype)
        x = ex.add("Concat", [x, pad], axis=1)
    frames = ex.add("Gather", [x, ex.const(index, np.int64)], axis=1)
    if window:
        frames = ex.add("Mul", [frames, ex.add("Unsqueeze", [ex.input(2), ex.const([1], np.int64)])])
    m = _matrix(ex, size, parts, length, inverse=False, onesided=bool(ex.attrs["onesided"]))
    _transform(ex, frames, (shape[0], len(starts), size, parts), 2, m)


EXPANSIONS = {
    "DFT": Expansion(_dft, {"axis": Attr("int", 1), "inverse": Attr("int", 0), "onesided": Attr("int", 0)},
                     static_inputs=frozenset({1, 2}), since=17),
    "STFT": Expansion(_stft, {"onesided": Attr("int", 1)}, static_inputs=frozenset({1, 3}), since=17),
}
"""The signal operators by name."""
