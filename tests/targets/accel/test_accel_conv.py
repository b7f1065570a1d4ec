"""Convolutions tiled onto the GEMM core directly (``conv.conv_program``): random geometries
(channels, kernel, strides, dilations, asymmetric padding filled with the input's zero point) against
the reference ConvInteger, on the small configuration so that chunks split rows, channels and output
blocks."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tensoregg.ir.ops.nn import conv_integer, conv_window
from tensoregg.targets.accel.conv import Geometry, conv_program
from tensoregg.targets.accel.machines import SMALL


@st.composite
def convolutions(draw: st.DrawFn) -> tuple[dict, np.ndarray, np.ndarray, int]:
    """ConvInteger attributes, an int8 input (1, C, H, W), int8 weights and the input's zero point."""
    c, o = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    attrs = {"strides": [draw(st.integers(1, 2)), draw(st.integers(1, 2))],
             "dilations": [draw(st.integers(1, 2)), draw(st.integers(1, 2))],
             "pads": [draw(st.integers(0, 2)) for _ in range(4)], "group": 1, "auto_pad": "NOTSET",
             "kernel_shape": [kh, kw]}
    h, w = draw(st.integers(2 * kh + 1, 12)), draw(st.integers(2 * kw + 1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(-128, 128, (1, c, h, w), dtype=np.int8)
    weights = rng.integers(-128, 128, (o, c, kh, kw), dtype=np.int8)
    return attrs, x, weights, draw(st.integers(-128, 127))


@settings(max_examples=25, deadline=None)
@given(convolutions())
def test_direct_convolution_matches_the_reference(case: tuple[dict, np.ndarray, np.ndarray, int]) -> None:
    attrs, x, w, zero = case
    (_, c, h, width), o = x.shape, w.shape[0]
    win = conv_window(attrs, (h, width), w.shape[2:])
    g = Geometry(c, h, width, (win.kernel[0], win.kernel[1]), (win.strides[0], win.strides[1]),
                 (win.dilations[0], win.dilations[1]), (win.begin[0], win.begin[1]), (win.out[0], win.out[1]))
    bias = (-zero * w.astype(np.int32).sum(axis=(1, 2, 3))).astype(np.int32)  # the zero point, folded
    program = conv_program(SMALL, g, w, bias, None, 0, zero)
    assert program is not None
    blocks = -(-c // SMALL.block_in)
    packed = np.zeros((blocks * SMALL.block_in, h, width), np.int8)
    packed[:c] = x[0]
    packed = packed.reshape(blocks, SMALL.block_in, h, width).transpose(0, 2, 3, 1)
    out, stats = program.run({"x": packed})
    want = conv_integer(attrs, x, w, np.array(zero, np.int8))[0]
    np.testing.assert_array_equal(out["y"][..., :o].transpose(2, 0, 1), want)
    assert stats.macs > 0
