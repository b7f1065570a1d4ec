import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tensoregg.errors import InvalidModel, ShapeError
from tensoregg.testing import arrays, check_op

f32, f64, i32, i64, u8, i8 = np.float32, np.float64, np.int32, np.int64, np.uint8, np.int8
TOL = {"rtol": 1e-4, "atol": 1e-5}


def a(values, dtype=f32):
    return np.array(values, dtype)


X33 = np.arange(9, dtype=f32).reshape(1, 1, 3, 3)
X44 = np.arange(16, dtype=f32).reshape(1, 1, 4, 4)


# ---- hand-computed values ------------------------------------------------------------------------

def test_conv_by_hand():
    ones = np.ones((1, 1, 2, 2), f32)
    check_op("Conv", [X33, ones], expected=[a([[[[8, 12], [20, 24]]]])])
    check_op("Conv", [X33, ones, a([1])], {"pads": [1, 1, 1, 1], "strides": [2, 2]},
             expected=[a([[[[1, 4], [10, 25]]]])])
    check_op("Conv", [X33, ones], {"auto_pad": "SAME_UPPER"}, expected=[a([[[[8, 12, 7], [20, 24, 13],
                                                                              [13, 15, 8]]]])])
    check_op("Conv", [X33, ones], {"auto_pad": "SAME_LOWER"}, expected=[a([[[[0, 1, 3], [3, 8, 12],
                                                                              [9, 20, 24]]]])])
    check_op("Conv", [X33, ones], {"dilations": [2, 2]}, expected=[a([[[[16]]]])])
    # depthwise: each of 2 channels scaled by its own 1x1 filter
    x = np.arange(8, dtype=f32).reshape(1, 2, 4)
    check_op("Conv", [x, a([[[2]], [[-1]]])], {"group": 2}, expected=[x * a([[[2], [-1]]])])


def test_conv_integer_and_qlinear_conv_by_hand():
    x = a([[[[2, 3], [4, 5]]]], u8)
    w = a([[[[1, 1], [1, 1]]], [[[2, 2], [2, 2]]]], u8)
    check_op("ConvInteger", [x, w, a(1, u8)], expected=[a([[[[10]], [[20]]]], i32)])
    check_op("ConvInteger", [x, w, a(1, u8), a([0, 1], u8)], expected=[a([[[[10]], [[10]]]], i32)])
    # ([14, 28] + 6) * 0.5 * [1, 0.25] / 2 = [5, 2.125] -> rounded, + 3
    check_op("QLinearConv", [x, a(0.5), a(0, u8), w, a([1, 0.25]), a([0, 0], u8), a(2.0), a(3, u8),
                             a([6, 6], i32)], expected=[a([[[[8]], [[5]]]], u8)])


def test_deform_conv_by_hand():
    x = a([[[[1, 2], [3, 4]]]])
    w = a([[[[1]]]])
    check_op("DeformConv", [x, w, np.zeros((1, 2, 2, 2), f32)], expected=[x])
    down_half = np.stack([np.full((2, 2), 0.5, f32), np.zeros((2, 2), f32)])[None]  # (dy, dx)
    check_op("DeformConv", [x, w, down_half], expected=[a([[[[2, 3], [1.5, 2]]]])])
    mask = a([[[[1, 0], [2, 1]]]])
    check_op("DeformConv", [x, w, down_half, a([1]), mask], expected=[a([[[[3, 1], [4, 3]]]])])
    # 1-D: samples at 0.5, 1.5 and 2.5 (half outside X, which reads as 0)
    check_op("DeformConv", [a([[[1, 2, 4]]]), a([[[1]]]), np.full((1, 1, 3), 0.5, f32)],
             expected=[a([[[1.5, 3, 2]]])])
    # 3-D, no offsets: Conv
    rng = np.random.default_rng(0)
    x3, w3 = rng.standard_normal((1, 2, 3, 4, 3), f32), rng.standard_normal((2, 2, 2, 2, 2), f32)
    attrs = {"pads": [1, 0, 0, 0, 1, 1], "strides": [2, 1, 1]}
    want = check_op("Conv", [x3, w3], attrs, **TOL)
    check_op("DeformConv", [x3, w3, np.zeros((1, 24, *want[0].shape[2:]), f32)], attrs, expected=want, **TOL)


def test_causal_conv_with_state_by_hand():
    x, w = a([[[1, 2, 3]]]), a([[[1, 10]]])  # y[t] = x[t - 1] + 10 x[t]
    check_op("CausalConvWithState", [x, w], n_outputs=2, expected=[a([[[10, 21, 32]]]), a([[[3]]])])
    check_op("CausalConvWithState", [x, w, a([1]), a([[[5]]])], n_outputs=2,
             expected=[a([[[16, 22, 33]]]), a([[[3]]])])
    y = a([[[10, 21, 32]]])
    check_op("CausalConvWithState", [x, w], {"activation": "silu"}, n_outputs=2,
             expected=[y / (1 + np.exp(-y)), a([[[3]]])])


def test_conv_transpose_by_hand():
    x, w = a([[[1, 2]]]), a([[[1, 1, 1]]])
    check_op("ConvTranspose", [x, w], expected=[a([[[1, 3, 3, 2]]])])
    check_op("ConvTranspose", [x, w], {"strides": [2]}, expected=[a([[[1, 1, 3, 2, 2]]])])
    check_op("ConvTranspose", [x, w, a([10])], {"strides": [2], "pads": [1, 2]}, expected=[a([[[11, 13]]])])
    check_op("ConvTranspose", [x, w], {"strides": [2], "output_padding": [1]},
             expected=[a([[[1, 1, 3, 2, 2, 0]]])])
    check_op("ConvTranspose", [x, w], {"strides": [2], "output_shape": [7]},
             expected=[a([[[0, 1, 1, 3, 2, 2, 0]]])])  # negative pads, the odd one first
    check_op("ConvTranspose", [x, w], {"strides": [2], "auto_pad": "SAME_UPPER"},
             expected=[a([[[1, 1, 3, 2]]])])
    check_op("ConvTranspose", [x, w], {"strides": [2], "auto_pad": "SAME_LOWER"},
             expected=[a([[[1, 3, 2, 2]]])])


def test_grouped_conv_transpose_is_per_group():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, 3, 2), f32), rng.standard_normal((4, 3, 2, 2), f32)
    b = a([1, 2, 3, 4, 5, 6])
    attrs = {"strides": [2, 1], "pads": [1, 0, 0, 1], "dilations": [1, 2]}
    halves = [check_op("ConvTranspose", [x[:, 2 * g:2 * g + 2], w[2 * g:2 * g + 2], b[3 * g:3 * g + 3]],
                       attrs)[0] for g in range(2)]
    check_op("ConvTranspose", [x, w, b], {**attrs, "group": 2}, expected=[np.concatenate(halves, axis=1)],
             **TOL)


def test_col2im_by_hand():
    cols = a([[[1, 2], [3, 4]]])  # one channel, 2 taps (rows) x 2 block positions (columns)
    check_op("Col2Im", [cols, a([1, 3], i64), a([1, 2], i64)], constant=(1, 2),
             expected=[a([[[[1, 5, 4]]]])])
    check_op("Col2Im", [cols, a([1, 4], i64), a([1, 2], i64)], {"strides": [1, 2]}, constant=(1, 2),
             expected=[a([[[[1, 3, 2, 4]]]])])


def test_max_pool_by_hand():
    y = a([[[[5, 7], [13, 15]]]])
    check_op("MaxPool", [X44], {"kernel_shape": [2, 2], "strides": [2, 2]}, n_outputs=2,
             expected=[y, a([[[[5, 7], [13, 15]]]], i64)])
    check_op("MaxPool", [X44], {"kernel_shape": [2, 2], "strides": [2, 2], "storage_order": 1}, n_outputs=2,
             expected=[y, a([[[[5, 13], [7, 15]]]], i64)])
    check_op("MaxPool", [X33], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
             expected=[a([[[[4, 5], [7, 8]]]])])
    check_op("MaxPool", [-X33], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]},
             n_outputs=2, expected=[a([[[[0, -1], [-3, -4]]]]), a([[[[0, 1], [3, 4]]]], i64)])
    check_op("MaxPool", [a([[[3, 200, 7]]], u8)], {"kernel_shape": [2]}, expected=[a([[[200, 200]]], u8)])


def test_average_pool_by_hand():
    check_op("AveragePool", [X33], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
             expected=[a([[[[2, 3.5], [6.5, 8]]]])])
    x = a([[[1, 2, 3, 4, 5]]])
    # ceil_mode: a 4th window would start at 5, in the end padding: dropped
    attrs = {"kernel_shape": [2], "strides": [2], "pads": [1, 1], "ceil_mode": 1}
    check_op("AveragePool", [x], attrs, expected=[a([[[1, 2.5, 4.5]]])])
    check_op("AveragePool", [x], {**attrs, "count_include_pad": 1}, expected=[a([[[0.5, 2.5, 4.5]]])])
    # a ceil-mode window reaching past the end padding counts only up to it
    check_op("AveragePool", [x], {"kernel_shape": [3], "strides": [3], "ceil_mode": 1,
                                  "count_include_pad": 1}, expected=[a([[[2, 4.5]]])])
    check_op("AveragePool", [x], {"kernel_shape": [2], "dilations": [3]}, expected=[a([[[2.5, 3.5]]])])


def test_lp_pool_and_global_pools_by_hand():
    x = a([[[3, -4, 0]]])
    check_op("LpPool", [x], {"kernel_shape": [2]}, expected=[a([[[5, 4]]])])
    check_op("LpPool", [x], {"kernel_shape": [2], "p": 1, "pads": [1, 0]}, expected=[a([[[3, 7, 4]]])])
    check_op("LpPool", [x], {"kernel_shape": [3], "p": 2.0}, opset=1, expected=[a([[[5]]])])
    check_op("GlobalAveragePool", [X33], expected=[a([[[[4]]]])])
    check_op("GlobalMaxPool", [X33], expected=[a([[[[8]]]])])
    check_op("GlobalLpPool", [x], expected=[a([[[5]]])])
    check_op("GlobalLpPool", [x], {"p": 1}, expected=[a([[[7]]])])


def test_max_unpool_by_hand():
    x, i = a([[[[5, 7], [13, 15]]]]), a([[[[5, 7], [13, 15]]]], i64)
    want = np.zeros((1, 1, 4, 4), f32)
    want.flat[[5, 7, 13, 15]] = [5, 7, 13, 15]
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    check_op("MaxUnpool", [x, i], attrs, expected=[want])
    check_op("MaxUnpool", [x, i, a([1, 1, 5, 5], i64)], attrs, constant=(2,),
             expected=[np.pad(want, [(0, 0), (0, 0), (0, 1), (0, 1)])])


def test_lrn_by_hand():
    # alpha / size = 1, beta = 1, bias = 1: x / (1 + sum of squares of the neighbours)
    x = a([[[1], [2], [3]]])
    check_op("LRN", [x], {"size": 3, "alpha": 3.0, "beta": 1.0}, expected=[x / a([[[6], [15], [14]]])])
    check_op("LRN", [x], {"size": 2, "alpha": 2.0, "beta": 1.0}, expected=[x / a([[[6], [14], [10]]])])


def test_rejects_bad_shapes_and_attributes():
    with pytest.raises(ShapeError, match="group"):
        check_op("Conv", [np.zeros((1, 3, 4, 4), f32), np.zeros((2, 2, 1, 1), f32)])
    with pytest.raises(ShapeError, match="does not fit"):
        check_op("Conv", [np.zeros((1, 1, 2, 2), f32), np.zeros((1, 1, 3, 3), f32)])
    with pytest.raises(InvalidModel, match="strides"):
        check_op("MaxPool", [X33], {"kernel_shape": [2, 2], "strides": [1]})
    with pytest.raises(InvalidModel, match="auto_pad"):
        check_op("AveragePool", [X33], {"kernel_shape": [2, 2], "auto_pad": "SAME"})
    with pytest.raises(ShapeError, match="float"):
        check_op("AveragePool", [X33.astype(i32)], {"kernel_shape": [2, 2]})
    with pytest.raises(ShapeError, match="blocks"):
        check_op("Col2Im", [np.zeros((1, 2, 3), f32), a([1, 3], i64), a([1, 2], i64)], constant=(1, 2))


# ---- against onnx's reference evaluator ----------------------------------------------------------

def conv_out(attrs, spatial):
    """Output sizes of a convolution with explicit (or no) pads."""
    n = len(spatial)
    pads, strides = attrs.get("pads", [0] * 2 * n), attrs.get("strides", [1] * n)
    span = spans(attrs["kernel_shape"], attrs.get("dilations", [1] * n))
    return tuple((i + b + e - sp) // s + 1
                 for i, b, e, sp, s in zip(spatial, pads[:n], pads[n:], span, strides))


def spans(kernel, dilations):
    return [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]


def same_fits(attrs, kernel):
    """No negative SAME padding (a stride past the dilated kernel), which onnx's reference mishandles."""
    strides, dilations = attrs.get("strides", [1] * len(kernel)), attrs.get("dilations", [1] * len(kernel))
    return not attrs.get("auto_pad", "").startswith("SAME") or all(
        sp >= s for sp, s in zip(spans(kernel, dilations), strides))


@st.composite
def window(draw, ranks=(1, 2, 3), max_stride=3, dilate=True, auto_pads=("NOTSET", "SAME_UPPER",
                                                                         "SAME_LOWER", "VALID")):
    """(attrs, spatial shape): kernel, strides, dilations, pads or auto_pad, and an input it fits."""
    n = draw(st.sampled_from(ranks))

    def ints(low, high, size=n):
        return draw(st.lists(st.integers(low, high), min_size=size, max_size=size))

    kernel = ints(1, 3)
    attrs = {"kernel_shape": kernel}
    dilations = ints(1, 2) if dilate and draw(st.booleans()) else [1] * n
    span = spans(kernel, dilations)
    if dilations != [1] * n:
        attrs["dilations"] = dilations
    if draw(st.booleans()):
        attrs["strides"] = ints(1, max_stride)
    auto_pad = draw(st.sampled_from(auto_pads))
    if auto_pad != "NOTSET":
        attrs["auto_pad"] = auto_pad
    elif draw(st.booleans()):
        attrs["pads"] = [draw(st.integers(0, s - 1)) for s in span + span]
    spatial = [draw(st.integers(s, s + 3)) for s in span]
    return attrs, spatial


@st.composite
def conv_case(draw, ranks=(1, 2, 3), auto_pads=("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")):
    """(attrs, X shape, W shape, bias length) of a grouped convolution."""
    attrs, spatial = draw(window(ranks=ranks, auto_pads=auto_pads))
    kernel = attrs["kernel_shape"] if draw(st.booleans()) else attrs.pop("kernel_shape")
    group = draw(st.integers(1, 3))
    if group > 1:
        attrs["group"] = group
    cg, mg = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return attrs, (draw(st.integers(1, 2)), cg * group, *spatial), (mg * group, cg, *kernel), mg * group


@given(case=conv_case(), bias=st.booleans(), dtype=st.sampled_from([f32, f64]), data=st.data())
def test_conv_matches_onnx(case, bias, dtype, data):
    attrs, x, w, m = case
    b = data.draw(arrays(dtype, (m,))) if bias else None
    check_op("Conv", [data.draw(arrays(dtype, x)), data.draw(arrays(dtype, w)), b], attrs, **TOL)


@given(case=conv_case(ranks=(2,), auto_pads=("NOTSET",)), data=st.data())
def test_conv_integer_matches_onnx(case, data):
    attrs, x, w, _ = case
    xt, wt = data.draw(st.sampled_from([u8, i8])), data.draw(st.sampled_from([u8, i8]))
    inputs = [data.draw(arrays(xt, x, low=-128, high=255)), data.draw(arrays(wt, w, low=-128, high=255)),
              data.draw(arrays(xt, (), low=-128, high=255)), data.draw(arrays(wt, (), low=-128, high=255))]
    check_op("ConvInteger", inputs[:data.draw(st.integers(2, 4))], attrs)


@given(case=conv_case(ranks=(2,), auto_pads=("NOTSET",)), per_channel=st.booleans(), bias=st.booleans(),
       data=st.data())
def test_qlinear_conv_matches_onnx(case, per_channel, bias, data):
    attrs, x, w, m = case
    qt = data.draw(st.sampled_from([u8, i8]))
    # scales far from powers of two: onnx's reference rounds after adding the zero point, which
    # breaks exact ties differently
    def scale():
        return data.draw(st.sampled_from([0.0137, 0.0291, 0.0519, 0.0713, 0.173]))

    w_scale = a([scale() for _ in range(m)] if per_channel else scale())
    inputs = [data.draw(arrays(qt, x, low=-128, high=255)), a(scale()),
              data.draw(arrays(qt, (), low=-10, high=10)), data.draw(arrays(i8, w, low=-128, high=127)),
              w_scale, np.zeros(w_scale.shape, i8), a(scale()), data.draw(arrays(qt, (), low=-10, high=10)),
              data.draw(arrays(i32, (m,), low=-1000, high=1000)) if bias else None]
    check_op("QLinearConv", inputs, attrs)


@given(case=conv_case(ranks=(2,), auto_pads=("NOTSET",)), groups=st.integers(1, 2), with_mask=st.booleans(),
       bias=st.booleans(), data=st.data())
def test_deform_conv_matches_onnx(case, groups, with_mask, bias, data):
    attrs, x, w, m = case
    x = (x[0], x[1] * groups, *(max(d, 2) for d in x[2:]))  # onnx's reference divides by side - 1
    w = (w[0], w[1] * groups, *w[2:])
    attrs.pop("kernel_shape", None)
    if groups > 1:
        attrs["offset_group"] = groups
    out = conv_out({**attrs, "kernel_shape": w[2:]}, x[2:])
    taps = groups * w[2] * w[3]
    inputs = [data.draw(arrays(f32, x)), data.draw(arrays(f32, w)),
              data.draw(arrays(f32, (x[0], 2 * taps, *out), low=-1.5, high=1.5)),
              data.draw(arrays(f32, (m,))) if bias else None,
              data.draw(arrays(f32, (x[0], taps, *out), low=0, high=1)) if with_mask else None]
    check_op("DeformConv", inputs, attrs, **TOL)


@given(shape=st.lists(st.integers(1, 4), min_size=3, max_size=3), k=st.integers(1, 4), bias=st.booleans(),
       past=st.booleans(), activation=st.sampled_from(["none", "silu", "swish"]), data=st.data())
def test_causal_conv_with_state_matches_onnx(shape, k, bias, past, activation, data):
    b, c, _ = shape
    inputs = [data.draw(arrays(f32, shape)), data.draw(arrays(f32, (c, 1, k))),
              data.draw(arrays(f32, (c,))) if bias else None,
              data.draw(arrays(f32, (b, c, k - 1))) if past else None]
    check_op("CausalConvWithState", inputs, {"activation": activation}, n_outputs=2, **TOL)


@st.composite
def conv_transpose_case(draw):
    """(attrs, X shape, W shape) of a transposed convolution, maybe with output_padding or output_shape.

    onnx's reference fails on groups of more than one channel, on output_shape with groups and on
    negative pads (an output larger than the full result): those are checked by hand."""
    attrs, spatial = draw(window())
    n, kernel = len(spatial), attrs["kernel_shape"]
    if draw(st.booleans()):
        del attrs["kernel_shape"]
    strides, span = attrs.get("strides", [1] * n), spans(kernel, attrs.get("dilations", [1] * n))
    assume(same_fits(attrs, kernel))
    group = draw(st.integers(1, 3))
    cg, mg = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if group == 1 else (1, 1)
    if group > 1:
        attrs["group"] = group
    choice = draw(st.sampled_from(["none", "output_padding"] + (["output_shape"] if group == 1 else [])))
    if choice == "output_padding" and "auto_pad" not in attrs:
        attrs["output_padding"] = [draw(st.integers(0, s - 1)) for s in strides]
    if choice == "output_shape":  # onnx's reference takes it only with SAME auto_pad
        attrs.pop("pads", None)
        attrs.pop("output_padding", None)
        attrs["auto_pad"] = draw(st.sampled_from(["SAME_UPPER", "SAME_LOWER"]))
        attrs["output_shape"] = [(i - 1) * s + sp - draw(st.integers(0, sp - 1))
                                 for i, s, sp in zip(spatial, strides, span)]
    return attrs, (draw(st.integers(1, 2)), cg * group, *spatial), (cg * group, mg, *kernel)


@given(case=conv_transpose_case(), bias=st.booleans(), data=st.data())
def test_conv_transpose_matches_onnx(case, bias, data):
    attrs, x, w = case
    m = w[1] * attrs.get("group", 1)
    bias = bias and "group" not in attrs  # onnx's reference adds the wrong bias in groups
    check_op("ConvTranspose", [data.draw(arrays(f32, x)), data.draw(arrays(f32, w)),
                               data.draw(arrays(f32, (m,))) if bias else None], attrs, **TOL)


@given(case=window(auto_pads=("NOTSET",)), channels=st.integers(1, 2), data=st.data())
def test_col2im_matches_onnx(case, channels, data):
    attrs, image = case
    blocks = conv_out(attrs, image)
    block = attrs.pop("kernel_shape")
    shape = (data.draw(st.integers(1, 2)), channels * int(np.prod(block)), int(np.prod(blocks)))
    assume(np.prod(shape) <= 1000)  # 3-D blocks grow fast
    x = data.draw(arrays(f32, shape))
    check_op("Col2Im", [x, a(image, i64), a(block, i64)], attrs, constant=(1, 2), **TOL)


@st.composite
def pool_case(draw, ceil=True, **window_args):
    """(attrs, X shape) of a pool; ceil_mode only with strides <= 2 (onnx's reference misplaces
    the windows when ceil_mode adds more than one element of padding)."""
    attrs, spatial = draw(window(**window_args))
    if ceil and "auto_pad" not in attrs and max(attrs.get("strides", [1])) <= 2 and draw(st.booleans()):
        attrs["ceil_mode"] = 1
    return attrs, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *spatial)


@given(case=pool_case(auto_pads=("NOTSET", "VALID", "SAME_UPPER")), order=st.integers(0, 1),
       dtype=st.sampled_from([f32, f64, u8, i8]), data=st.data())
def test_max_pool_matches_onnx(case, order, dtype, data):
    attrs, x = case
    if max(attrs.get("strides", [1]) + attrs.get("dilations", [1])) == 1:
        attrs["strides"] = [1] * (len(x) - 3) + [2]  # onnx's reference crashes on its path for unit steps
    assume(same_fits(attrs, attrs["kernel_shape"]))
    if order:
        attrs["storage_order"] = order
    check_op("MaxPool", [data.draw(arrays(dtype, x, low=-100, high=100))], attrs, n_outputs=2)


@given(case=pool_case(), include_pad=st.integers(0, 1), data=st.data())
def test_average_pool_matches_onnx(case, include_pad, data):
    attrs, x = case
    if "auto_pad" in attrs:
        attrs.pop("dilations", None)  # onnx's reference sizes auto_pad windows as if undilated
    assume(same_fits(attrs, attrs["kernel_shape"]))
    check_op("AveragePool", [data.draw(arrays(f32, x))], {**attrs, "count_include_pad": include_pad}, **TOL)


@given(case=pool_case(ceil=False, auto_pads=("NOTSET", "VALID")), p=st.integers(1, 3), data=st.data())
def test_lp_pool_matches_onnx(case, p, data):
    attrs, x = case
    attrs.pop("pads", None)  # onnx's reference rescales windows that overlap the padding
    if "auto_pad" in attrs:
        attrs.pop("dilations", None)  # onnx's reference sizes auto_pad windows as if undilated
    check_op("LpPool", [data.draw(arrays(f32, x))], {**attrs, "p": p}, **TOL)


@pytest.mark.parametrize("op,windowed", [("GlobalAveragePool", "AveragePool"), ("GlobalMaxPool", "MaxPool"),
                                        ("GlobalLpPool", "LpPool")])
@given(rank=st.integers(3, 5), dtype=st.sampled_from([np.float16, f32, f64]), p=st.integers(1, 3),
       data=st.data())
def test_global_pools_match_onnx(op, windowed, rank, dtype, p, data):
    """Against onnx's reference where it is right (it lacks GlobalLpPool and reduces the wrong axes of
    GlobalMaxPool outside 2-D), and against the windowed pool over the whole input."""
    x = data.draw(arrays(dtype, data.draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))))
    attrs = {"p": p} if op == "GlobalLpPool" else {}
    tol = {"rtol": 1e-2, "atol": 1e-3} if dtype == np.float16 else TOL
    whole = {"kernel_shape": list(x.shape[2:]), "strides": [2] * (rank - 2)}
    check_op(op, [x], attrs, expected=check_op(windowed, [x], {**whole, **attrs}, **tol), **tol)
    if op == "GlobalAveragePool" or (op == "GlobalMaxPool" and rank == 4):
        check_op(op, [x], **tol)


@given(case=pool_case(ceil=False, dilate=False, auto_pads=("NOTSET",)), output_shape=st.booleans(),
       data=st.data())
def test_max_unpool_matches_onnx(case, output_shape, data):
    attrs, x = case  # x: the pooled shape
    n = len(x) - 2
    pads, strides = attrs.get("pads", [0] * 2 * n), attrs.get("strides", [1] * n)
    unpooled = [(o - 1) * s + k - b - e
                for o, s, k, b, e in zip(x[2:], strides, attrs["kernel_shape"], pads[:n], pads[n:])]
    size = int(np.prod(x[:2])) * int(np.prod(unpooled))
    assume(min(unpooled) >= 1 and size >= int(np.prod(x)))
    indices = a(data.draw(st.permutations(range(size)))[:int(np.prod(x))], i64).reshape(x)
    inputs = [data.draw(arrays(f32, x)), indices]
    if output_shape:
        inputs.append(a([*x[:2], *(d + data.draw(st.integers(0, 2)) for d in unpooled)], i64))
    check_op("MaxUnpool", inputs, attrs, constant=(2,))


@given(shape=st.lists(st.integers(1, 4), min_size=4, max_size=4), size=st.integers(1, 5),
       alpha=st.floats(1e-4, 1.0), beta=st.floats(0.5, 1.0), bias=st.floats(0.5, 2.0), data=st.data())
def test_lrn_matches_onnx(shape, size, alpha, beta, bias, data):
    """4-D with N = C: onnx's reference takes no other rank and loops over N for the channels
    (ours, any rank >= 2, is checked by hand)."""
    shape[0] = shape[1]
    attrs = {"size": size, "alpha": alpha, "beta": beta, "bias": bias}
    check_op("LRN", [data.draw(arrays(f32, shape))], attrs, **TOL)
