"""RoiAlign expanded at import (tensoregg/frontends/onnx_roialign.py) against onnx's reference and
onnxruntime."""

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from tensoregg.errors import UnsupportedOperator
from tensoregg.frontends import onnx_backend
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph


def roi_align_model(n, c, h, w, rois, opset=16, **attrs):  # onnxruntime stops at RoiAlign-16
    node = helper.make_node("RoiAlign", ["X", "rois", "batch_indices"], ["Y"], **attrs)
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, (n, c, h, w)),
           helper.make_tensor_value_info("rois", TensorProto.FLOAT, (rois, 4)),
           helper.make_tensor_value_info("batch_indices", TensorProto.INT64, (rois,))]
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([node], "roi", ins, [out]),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


@st.composite
def roi_cases(draw):
    n, c, h, w, rois = (draw(st.integers(1, k)) for k in (2, 3, 9, 9, 4))
    attrs = {"output_height": draw(st.integers(1, 4)), "output_width": draw(st.integers(1, 4)),
             "sampling_ratio": draw(st.integers(1, 3)),
             "spatial_scale": draw(st.sampled_from([1.0, 0.5, 0.25])),
             "mode": draw(st.sampled_from(["avg", "max"])),
             "coordinate_transformation_mode": draw(st.sampled_from(["half_pixel", "output_half_pixel"]))}
    return (n, c, h, w, rois), attrs, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=40)
@given(roi_cases())
def test_expanded_roi_align_matches_the_reference(case):
    (n, c, h, w, rois), attrs, seed = case
    rng = np.random.default_rng(seed)
    scale = 1 / attrs["spatial_scale"]
    corners = rng.uniform(-2, [w * scale + 2, h * scale + 2], (rois, 2, 2)).astype(np.float32)
    corners.sort(axis=1)  # boxes past the map's edges and, now and then, degenerate ones
    feeds = {"X": rng.uniform(-1, 1, (n, c, h, w)).astype(np.float32), "rois": corners.reshape(rois, 4),
             "batch_indices": rng.integers(0, n, rois)}
    model = roi_align_model(n, c, h, w, rois, **attrs)
    got = run_graph(import_onnx(model), feeds)[0]
    np.testing.assert_allclose(got, ReferenceEvaluator(model).run(None, feeds)[0], rtol=1e-4, atol=1e-5)
    if attrs["mode"] == "avg":  # onnxruntime's max mode differs from the reference's (its own reading)
        want = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_opset_10_maps_rois_without_the_half_pixel_shift():
    # RoiAlign-10 had no coordinate_transformation_mode: it behaved as output_half_pixel (onnxruntime;
    # onnx's reference applies its opset-16 default to every opset)
    model = roi_align_model(1, 1, 6, 6, 1, opset=10, sampling_ratio=2, output_height=2, output_width=2)
    feeds = {"X": np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6),
             "rois": np.array([[0.5, 1.0, 4.0, 3.5]], np.float32), "batch_indices": np.zeros(1, np.int64)}
    want = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(run_graph(import_onnx(model), feeds)[0], want, rtol=1e-6)


def test_adaptive_sampling_is_declined():
    with pytest.raises(UnsupportedOperator, match=r"'RoiAlign'.*node 'Y'.*sampling_ratio 0"):
        import_onnx(roi_align_model(1, 1, 4, 4, 2))


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_a_sample_on_the_maps_far_edge_takes_its_last_row_and_column(mode):
    model = roi_align_model(1, 1, 4, 5, 1, sampling_ratio=1, output_height=1, output_width=1, mode=mode,
                            coordinate_transformation_mode="output_half_pixel")
    feeds = {"X": np.arange(1, 21, dtype=np.float32).reshape(1, 1, 4, 5),
             "rois": np.array([[4.0, 3.0, 6.0, 5.0]], np.float32), "batch_indices": np.zeros(1, np.int64)}
    got = run_graph(import_onnx(model), feeds)[0]  # the sample at (y, x) = (4, 5): on the edge, inside
    np.testing.assert_array_equal(got, ReferenceEvaluator(model).run(None, feeds)[0])
    assert got.item() == 20


def test_compiled_on_llvm_through_the_backend():  # max: the form with the most ops (avg's are a subset)
    model = roi_align_model(2, 3, 7, 6, 3, sampling_ratio=2, output_height=3, output_width=2, mode="max")
    rng = np.random.default_rng(1)
    feeds = [rng.uniform(-1, 1, (2, 3, 7, 6)).astype(np.float32),
             np.array([[0, 0, 5, 6], [1.5, 0.5, 3, 7.5], [-1, 2, 2, 4]], np.float32), np.array([1, 0, 1])]
    got = onnx_backend.prepare(model, target="llvm").run(feeds)[0]
    want = ReferenceEvaluator(model).run(None, dict(zip(["X", "rois", "batch_indices"], feeds)))[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
