"""DFT and STFT expanded at import (tensoregg/frontends/onnx_dft.py) against numpy's FFT and
onnx's reference STFT."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from tensoregg.errors import UnsupportedOperator
from tensoregg.frontends import onnx_backend
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph


def one_node_model(node, inputs, opset):
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in inputs.items()]
    outs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output]
    model = helper.make_model(helper.make_graph([node], node.op_type, ins, outs),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def numpy_dft(x, length, axis, inverse, onesided):
    """ONNX DFT: the last axis holds real (1) or real and imaginary (2) parts."""
    signal = x[..., 0] + (1j * x[..., 1] if x.shape[-1] == 2 else 0)
    if inverse and onesided:
        return np.fft.irfft(signal, n=length, axis=axis)[..., None]
    y = (np.fft.ifft if inverse else np.fft.fft)(signal, n=length, axis=axis)
    if onesided:
        y = np.take(y, np.arange(length // 2 + 1), axis=axis)
    return np.stack([y.real, y.imag], axis=-1)


@st.composite
def dft_cases(draw):
    rank = draw(st.integers(2, 4))
    shape = (*(draw(st.integers(1, 7)) for _ in range(rank - 1)), draw(st.sampled_from([1, 2])))
    axis = draw(st.integers(0, rank - 2))
    inverse, onesided = draw(st.booleans()), draw(st.booleans())
    length = draw(st.none() | st.integers(1, 9))
    if inverse and onesided and length is None:
        length = max(2 * (shape[axis] - 1), 1)
    return shape, axis, inverse, onesided, length, draw(st.sampled_from([17, 20])), draw(st.integers(0, 99))


@settings(max_examples=60)
@given(dft_cases())
def test_expanded_dft_matches_numpy(case):
    shape, axis, inverse, onesided, length, opset, seed = case
    x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    consts = {"dft_length": np.array(length, np.int64)} if length is not None else {}
    attrs = {"inverse": int(inverse), "onesided": int(onesided)}
    if opset >= 20:
        consts["axis"] = np.array(axis - len(shape) if seed % 2 else axis, np.int64)  # negative too
    else:
        attrs["axis"] = axis
    names = ["x", "dft_length" if length is not None else "", "axis" if opset >= 20 else ""]
    while not names[-1]:
        names.pop()
    node = helper.make_node("DFT", names, ["y"], **attrs)
    graph = import_onnx(one_node_model(node, {"x": x} | consts, opset), bind=consts)
    want = numpy_dft(x.astype(np.float64), length or shape[axis], axis, inverse, onesided)
    np.testing.assert_allclose(run_graph(graph, {"x": x})[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("window", "frame_length", "onesided"),
                         [(None, 8, 1), (8, None, 1), (6, 8, 0), (10, 8, 1)])
@pytest.mark.parametrize("parts", [1, 2])
def test_expanded_stft_matches_onnx_reference(window, frame_length, onesided, parts):
    rng = np.random.default_rng(parts)
    inputs = {"signal": rng.uniform(-1, 1, (2, 29, parts)).astype(np.float32), "frame_step": np.array(5)}
    if window is not None:
        inputs["window"] = rng.uniform(0, 1, window).astype(np.float32)
    if frame_length is not None:
        inputs["frame_length"] = np.array(frame_length)
    names = [n if n in inputs else "" for n in ("signal", "frame_step", "window", "frame_length")]
    while not names[-1]:
        names.pop()
    node = helper.make_node("STFT", names, ["y"], onesided=onesided)
    model = one_node_model(node, inputs, 17)
    bind = {k: v for k, v in inputs.items() if k in ("frame_step", "frame_length")}
    got = run_graph(import_onnx(model, bind=bind), {k: v for k, v in inputs.items() if k not in bind})[0]
    want = ReferenceEvaluator(model).run(None, inputs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_dft_axis_known_only_at_run_time_is_declined():
    x = np.zeros((1, 4, 1), np.float32)
    node = helper.make_node("DFT", ["x", "", "axis"], ["y"])
    with pytest.raises(UnsupportedOperator, match=r"'DFT'.*node 'y'.*input 2 \(axis\) must be a constant"):
        import_onnx(one_node_model(node, {"x": x, "axis": np.array(1)}, 20))


def test_compiled_on_llvm_through_the_backend():
    # axis, dft_length and frame_step as graph inputs: the backend adapter binds them
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 6, 5, 2)).astype(np.float32)
    dft = one_node_model(helper.make_node("DFT", ["x", "n", "axis"], ["y"], inverse=1, onesided=1),
                         {"x": x, "n": np.array(9), "axis": np.array(-3)}, 20)
    got = onnx_backend.prepare(dft, target="llvm").run([x, np.array(9), np.array(-3)])[0]
    np.testing.assert_allclose(got, numpy_dft(x, 9, 1, True, True), rtol=1e-4, atol=1e-5)
    inputs = {"signal": x[:, :, :, 0].reshape(2, 30, 1), "step": np.array(4),
              "window": rng.uniform(0, 1, 7).astype(np.float32)}
    stft = one_node_model(helper.make_node("STFT", ["signal", "step", "window"], ["y"]), inputs, 17)
    got = onnx_backend.prepare(stft, target="llvm").run(list(inputs.values()))[0]
    np.testing.assert_allclose(got, ReferenceEvaluator(stft).run(None, inputs)[0], rtol=1e-4, atol=1e-5)


def test_a_transform_whose_matrix_would_be_huge_is_declined():
    x = np.zeros((1, 4096, 2), np.float32)
    node = helper.make_node("DFT", ["x"], ["y"], axis=1)
    with pytest.raises(UnsupportedOperator, match=r"'DFT'.*node 'y'.*length 4096 over 4096 samples"):
        import_onnx(one_node_model(node, {"x": x}, 17))
