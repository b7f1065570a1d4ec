"""The llvm target's losses, transposed/deformable/integer convolutions, Col2Im, sampling ops,
integer matmuls and MaxUnpool against the reference interpreter, on the forms the op tests do not
reach (each case must compile: an unsupported lowering fails here)."""

import itertools

import numpy as np
import pytest

from tensoregg.errors import UnsupportedOperator
from tensoregg.frontends.onnx import import_onnx
from tensoregg.targets.llvm import NativeModel
from tensoregg.testing import GUARD_BYTES, check_native, single_op_model

F16, F32, F64, I32, I64, U8, I8 = np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.int8
RNG = np.random.default_rng(0)


def native(op, inputs, attrs=None, *, n_outputs=1, constant=()):
    """Compile the one-op model for llvm and compare it with the reference interpreter."""
    model = single_op_model(op, inputs, attrs, n_outputs=n_outputs, constant=constant)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if a is not None and i not in constant}
    assert check_native(import_onnx(model), feeds, require=True)


def rand(*shape, dtype=F32, low=-1.0, high=3.0):
    """Uniform values whose sums do not cancel (native sums round in another order than numpy's)."""
    return RNG.uniform(low, high, shape).astype(dtype)


def ints(dtype, *shape):
    info = np.iinfo(dtype)
    return RNG.integers(info.min, int(info.max) + 1, shape).astype(dtype)


# ---- losses -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("dtype", [F16, F32, F64])
def test_losses(op, reduction, dtype):
    for shape, label_type in (((5, 4), I64), ((3, 4, 2, 70), I32)):
        scores = rand(*shape, dtype=dtype, low=-3.0, high=-0.1)
        labels = RNG.integers(0, shape[1], (shape[0], *shape[2:])).astype(label_type)
        labels.reshape(-1)[::3] = 1
        weights = rand(shape[1], dtype=dtype, low=0.5, high=2.0)
        n_outputs = 2 if op == "SoftmaxCrossEntropyLoss" else 1
        for w, ignore in itertools.product((None, weights), (None, 1, -5)):
            attrs = {"reduction": reduction} | ({} if ignore is None else {"ignore_index": ignore})
            native(op, [scores, labels, w], attrs, n_outputs=n_outputs)


def test_loss_everything_ignored_and_out_of_range_labels():
    scores, labels = rand(4, 3, low=-3.0, high=-0.1), np.full((4,), 2, I64)
    native("NegativeLogLikelihoodLoss", [scores, labels], {"ignore_index": 2})  # 0 / 0
    native("SoftmaxCrossEntropyLoss", [scores, labels, rand(3)], {"ignore_index": 2, "reduction": "sum"})


# ---- ConvTranspose ----------------------------------------------------------------------------------

CONV_TRANSPOSE = [  # (X shape, W shape, attributes)
    ((2, 3, 7), (3, 2, 3), {}),
    ((1, 3, 5, 6), (3, 2, 3, 3), {"strides": [2, 2]}),
    ((1, 3, 5, 6), (3, 2, 3, 3), {"strides": [2, 3], "pads": [1, 0, 2, 1], "output_padding": [1, 2]}),
    ((1, 4, 5, 6), (4, 1, 3, 2), {"group": 2, "strides": [3, 2], "dilations": [2, 3]}),
    ((2, 6, 4, 5), (6, 2, 2, 3), {"group": 3, "pads": [1, 1, 0, 2], "dilations": [1, 2]}),
    ((1, 2, 4, 5), (2, 3, 3, 3), {"strides": [2, 2], "output_shape": [10, 8]}),
    ((1, 2, 4, 5), (2, 3, 3, 3), {"strides": [2, 2], "output_shape": [12, 13]}),  # negative pads
    ((1, 2, 4, 5), (2, 3, 3, 2), {"strides": [2, 3], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 4, 5), (2, 3, 3, 2), {"strides": [3, 2], "auto_pad": "SAME_LOWER", "dilations": [2, 1]}),
    ((1, 2, 4, 5), (2, 3, 3, 2), {"strides": [2, 2], "auto_pad": "VALID", "output_padding": [1, 1]}),
    ((1, 2, 3, 4, 5), (2, 2, 2, 3, 2), {"strides": [2, 1, 2], "pads": [0, 1, 1, 1, 0, 0]}),
    ((1, 2, 5, 70), (2, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize("x, w, attrs", CONV_TRANSPOSE)
@pytest.mark.parametrize("dtype", [F32, F16, F64])
def test_conv_transpose(x, w, attrs, dtype):
    m = w[1] * attrs.get("group", 1)
    inputs = [rand(*x, dtype=dtype), rand(*w, dtype=dtype)]
    native("ConvTranspose", inputs, attrs)
    native("ConvTranspose", [*inputs, rand(m, dtype=dtype)], attrs, constant=(1, 2))


# ---- Col2Im -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("image, block, attrs", [
    ((5, 5), (2, 2), {}),
    ((6, 7), (3, 2), {"strides": [2, 3], "pads": [1, 0, 2, 1]}),
    ((6, 7), (2, 2), {"dilations": [2, 3], "strides": [1, 2]}),
    ((9,), (3,), {"strides": [2], "pads": [1, 2], "dilations": [2]}),
    ((3, 4, 5), (2, 2, 3), {"strides": [1, 2, 1], "pads": [1, 0, 0, 0, 1, 1]}),
])
@pytest.mark.parametrize("dtype", [F32, F16, I32])
def test_col2im(image, block, attrs, dtype):
    n = len(image)
    strides, dilations = attrs.get("strides", [1] * n), attrs.get("dilations", [1] * n)
    pads = attrs.get("pads", [0] * 2 * n)
    blocks = [(i + b + e - (k - 1) * d - 1) // s + 1
              for i, k, s, d, b, e in zip(image, block, strides, dilations, pads[:n], pads[n:])]
    x = RNG.integers(-9, 10, (2, 3 * int(np.prod(block)), int(np.prod(blocks)))).astype(dtype)
    native("Col2Im", [x, np.array(image, I64), np.array(block, I64)], attrs, constant=(1, 2))


# ---- DeformConv -------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, w, attrs", [
    ((1, 2, 5, 6), (3, 2, 3, 3), {}),
    ((2, 4, 5, 6), (4, 2, 2, 3), {"group": 2, "offset_group": 2, "strides": [2, 1], "pads": [1, 0, 1, 2]}),
    ((1, 4, 6, 6), (2, 4, 3, 2), {"offset_group": 4, "dilations": [2, 1]}),
    ((1, 2, 9), (2, 2, 3), {"strides": [2], "pads": [1, 1]}),
])
@pytest.mark.parametrize("extras", [(False, False), (True, True)])
def test_deform_conv(x, w, attrs, extras):
    bias, with_mask = extras
    win = [(i + b + e - (k - 1) * d - 1) // s + 1 for i, k, s, d, b, e in zip(
        x[2:], w[2:], attrs.get("strides", [1] * 2), attrs.get("dilations", [1] * 2),
        attrs.get("pads", [0] * 4)[:len(x) - 2], attrs.get("pads", [0] * 4)[len(x) - 2:])]
    taps = attrs.get("offset_group", 1) * int(np.prod(w[2:]))
    offset = rand(x[0], taps * (len(x) - 2), *win, low=-2.5, high=2.5)
    offset.reshape(-1)[::5] = np.round(offset.reshape(-1)[::5])  # on the grid: weights of exactly 0 and 1
    inputs = [rand(*x), rand(*w), offset, rand(w[0]) if bias else None,
              rand(x[0], taps, *win, low=0, high=1) if with_mask else None]
    native("DeformConv", inputs, attrs)


# ---- integer convolutions -----------------------------------------------------------------------------

CONV_INTEGER = [{}, {"pads": [1, 2, 0, 1], "strides": [2, 1]}, {"group": 2, "dilations": [1, 2]},
                {"auto_pad": "SAME_LOWER", "strides": [2, 2]}]


@pytest.mark.parametrize("attrs", CONV_INTEGER)
@pytest.mark.parametrize("types", [(U8, U8), (I8, I8), (U8, I8)])
def test_conv_integer(attrs, types):
    xt, wt = types
    x, w = ints(xt, 2, 4, 6, 7), ints(wt, 4, 4 // attrs.get("group", 1), 3, 2)
    native("ConvInteger", [x, w], attrs)
    native("ConvInteger", [x, w, ints(xt), ints(wt, 4)], attrs, constant=(1,))
    native("ConvInteger", [x, w, ints(xt, 1), ints(wt, 1)], attrs)


@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 1, 2, 0], "strides": [2, 1]}, {"group": 2}])
@pytest.mark.parametrize("qt", [U8, I8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv(attrs, qt, per_channel):
    m = 4
    x, w = ints(qt, 1, 4, 6, 7), ints(I8, m, 4 // attrs.get("group", 1), 3, 3)
    w_scale = rand(m, low=0.001, high=0.01) if per_channel else np.array(0.004, F32)
    w_zero = ints(I8, m) // 8 if per_channel else np.array(3, I8)
    inputs = [x, np.array(0.05, F32), np.array(7, qt), w, w_scale, w_zero, np.array(0.3, F32),
              np.array(-5 if qt == I8 else 100, qt)]
    native("QLinearConv", inputs, attrs)  # saturates at both ends
    native("QLinearConv", [*inputs, RNG.integers(-5000, 5000, m).astype(I32)], attrs, constant=(3, 4, 5))


# ---- integer matmuls ---------------------------------------------------------------------------------

MATMUL_SHAPES = [((3, 5), (5, 4)), ((2, 3, 5), (5, 70)), ((2, 1, 3, 5), (4, 5, 2)), ((5,), (5, 3)),
                 ((3, 5), (5,)), ((5,), (5,))]


def _row_params(shape, make):
    """Per-tensor and per-row parameter forms of a left operand of ``shape``."""
    forms = [make(), make(1)]
    if len(shape) > 1:
        forms += [make(shape[-2]), make(*shape[:-1], 1)]
    return forms


def _col_params(shape, make):
    forms = [make(), make(1)]
    if len(shape) > 1:
        forms += [make(shape[-1]), make(*shape[:-2], 1, shape[-1])]
    return forms


@pytest.mark.parametrize("a, b", MATMUL_SHAPES)
@pytest.mark.parametrize("types", [(U8, U8), (I8, U8), (I8, I8)])
def test_matmul_integer(a, b, types):
    at, bt = types
    x, y = ints(at, *a), ints(bt, *b)
    native("MatMulInteger", [x, y])
    for za, zb in zip(_row_params(a, lambda *s: ints(at, *s)), _col_params(b, lambda *s: ints(bt, *s))):
        native("MatMulInteger", [x, y, za, zb])
        native("MatMulInteger", [x, y, za, None])
    native("MatMulInteger", [x, y, None, ints(bt)], constant=(1,))


@pytest.mark.parametrize("a, b", MATMUL_SHAPES)
@pytest.mark.parametrize("types", [(U8, U8, U8), (I8, I8, I8), (U8, I8, I8)])
@pytest.mark.parametrize("scale_type", [F32, F16])
def test_qlinear_matmul(a, b, types, scale_type):
    at, bt, yt = types
    x, y = ints(at, *a), ints(bt, *b)
    scales_a = _row_params(a, lambda *s: rand(*s, dtype=scale_type, low=0.01, high=0.05))
    scales_b = _col_params(b, lambda *s: rand(*s, dtype=scale_type, low=0.01, high=0.05))
    zeros_a = _row_params(a, lambda *s: ints(at, *s) // 4)
    zeros_b = _col_params(b, lambda *s: ints(bt, *s) // 4)
    for sa, za, sb, zb in zip(scales_a, zeros_a, scales_b, zeros_b):
        inputs = [x, sa, za, y, sb, zb, np.array(0.7, scale_type), np.array(3, yt)]
        native("QLinearMatMul", inputs)


def test_qlinear_matmul_ties_round_to_even():
    """Products that land exactly halfway between integers round to the even one."""
    x = np.arange(16, dtype=U8).reshape(4, 4)
    native("QLinearMatMul", [x, np.array(0.5, F32), np.array(0, U8), np.eye(4, dtype=U8),
                             np.array(1.0, F32), np.array(0, U8), np.array(1.0, F32), np.array(0, U8)])


# ---- GridSample and AffineGrid ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample(mode, padding, align):
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    for dims, out in (((5, 6), (4, 7)), ((3, 4, 5), (2, 3, 4)), ((7,), (9,)), ((1, 4), (3, 3))):
        x = rand(2, 3, *dims)
        grid = rand(2, *out, len(dims), low=-2.7, high=2.7)
        grid.reshape(-1)[::7] = np.round(grid.reshape(-1)[::7] * 4) / 4  # exact taps and ties
        native("GridSample", [x, grid], attrs)
    for dtype, reach in ((F16, 1.5), (F64, 3.5)):
        grid = rand(1, 3, 3, 2, dtype=dtype, low=-reach, high=reach)
        native("GridSample", [rand(1, 2, 4, 5, dtype=dtype), grid], attrs)


@pytest.mark.parametrize("size", [[2, 3, 4, 5], [1, 1, 3, 1, 4], [2, 1, 1, 1]])
@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("dtype", [F32, F16, F64])
def test_affine_grid(size, align, dtype):
    r = len(size) - 2
    theta = rand(size[0], r, r + 1, dtype=dtype)
    native("AffineGrid", [theta, np.array(size, I64)], {"align_corners": align}, constant=(1,))


# ---- MaxUnpool ------------------------------------------------------------------------------------

def test_max_unpool():
    x = rand(2, 3, 3, 4)
    unpooled = 2 * 3 * 6 * 8
    indices = RNG.permutation(unpooled)[:x.size].reshape(x.shape).astype(I64)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    native("MaxUnpool", [x, indices], attrs)
    native("MaxUnpool", [x, indices, np.array([2, 3, 7, 9], I64)], attrs, constant=(2,))
    indices.reshape(-1)[::4] -= unpooled  # negative: counted from the end
    indices.reshape(-1)[1] = indices.reshape(-1)[5] = 17  # duplicates: the last wins
    native("MaxUnpool", [x, indices], attrs)
    big = rand(1, 64, 64, 64)
    with pytest.raises(UnsupportedOperator):
        native("MaxUnpool", [big, np.zeros(big.shape, I64)], attrs)


# ---- invalid data: reads stay inside the buffers ----------------------------------------------------

def guarded(op, inputs, attrs=None, *, constant=()):
    """The one-op model's native outputs in guard mode (guard bytes read back as NaN), on inputs the
    reference rejects or leaves undefined."""
    model = single_op_model(op, inputs, attrs, constant=constant)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if a is not None and i not in constant}
    return NativeModel(import_onnx(model), guard=GUARD_BYTES).run(feeds)


def test_invalid_indices_and_coordinates_read_inside():
    labels = np.array([[-7, 3], [1, 99]], I64)  # out of range, not ignored: an error in the reference
    for op in ("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"):
        for reduction in ("none", "mean"):
            out = guarded(op, [rand(2, 3, 2), labels, rand(3)], {"reduction": reduction})
            assert np.isfinite(out[0]).all()
    x = rand(1, 2, 2, 2)
    out = guarded("MaxUnpool", [x, np.array([-100, 3, 40, 7, 1, 2, 1000, 5], I64).reshape(x.shape)],
                  {"kernel_shape": [2, 2], "strides": [2, 2]})
    assert np.isfinite(out[0]).all()
    for mode, padding in itertools.product(["linear", "nearest", "cubic"], ["zeros", "border", "reflection"]):
        grid = np.array([1e30, -1e30, 3e9, -np.inf, np.inf, 0.5, np.nan, 2.0], F32).reshape(1, 2, 2, 2)
        out = guarded("GridSample", [rand(1, 2, 3, 4), grid], {"mode": mode, "padding_mode": padding})
        assert np.isfinite(out[0][..., 0, 0]).all()
    offset = rand(1, 18, 3, 4) * 1e30
    offset[0, ::3] = np.nan
    out = guarded("DeformConv", [rand(1, 2, 5, 6), rand(3, 2, 3, 3), offset], {})
    assert np.isfinite(out[0]).all()
