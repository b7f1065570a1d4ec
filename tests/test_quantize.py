"""tensoregg.quantize: static QDQ quantization, checked against onnxruntime's quantize_static."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensoregg
from tensoregg.errors import InputError, ParameterError
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.quantization import quantize


def _small_cnn(seed: int = 0) -> onnx.ModelProto:
    """x (1, 3, 8, 8) -> Conv 3x3 + Relu -> Conv 1x1 + Clip(0, 6) -> Flatten -> Gemm -> MatMul."""
    rng = np.random.default_rng(seed)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2]),
             helper.make_node("Clip", ["c2", "zero", "six"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["g"], transB=1),
             helper.make_node("MatMul", ["g", "wm"], ["y"])]
    inits = [init("w1", 8, 3, 3, 3), init("b1", 8), init("w2", 4, 8, 1, 1), init("b2", 4),
             init("wg", 6, 64), init("bg", 6), init("wm", 6, 5),
             numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six")]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_quantize_inserts_qdq_and_drops_activations_the_quantization_clips():
    q = tensoregg.quantize(_small_cnn(), _feeds(3))
    ops = [n.op_type for n in q.graph.node]
    assert "Relu" not in ops and "Clip" not in ops  # folded into c1's and c2's quantization
    inits = _inits(q)
    assert inits["w1_quantized"].dtype == np.int8 and inits["w1_scale"].shape == (8,)  # per channel
    assert inits["wg_scale"].shape == () and inits["b1_quantized"].dtype == np.int32
    assert inits["r1_zero_point"] == 0 and inits["x_zero_point"].dtype == np.uint8
    np.testing.assert_array_equal(inits["b1_scale"], inits["x_scale"] * inits["w1_scale"])
    assert np.abs(inits["w1_quantized"]).max() == 127  # symmetric in [-127, 127]
    assert _inits(tensoregg.quantize(_small_cnn(), _feeds(3), per_channel=False))["w1_scale"].shape == ()
    graph, model = import_onnx(q), import_onnx(_small_cnn())
    for feed in _feeds(3):  # the calibration feeds: no value beyond the calibrated ranges
        got, want = run_graph(graph, feed)[0], run_graph(model, feed)[0]
        assert np.abs(got - want).max() < 0.2 * np.abs(want).max()


def test_quantize_agrees_with_onnxruntime_quantize_static():
    quantization = pytest.importorskip("onnxruntime.quantization")
    feeds = _feeds(3)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.left = iter(feeds)

        def get_next(self):
            return next(self.left, None)

    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path, out = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
        onnx.save(_small_cnn(), path)
        quantization.quantize_static(path, out, Reader(), quant_format=quantization.QuantFormat.QDQ,
                                     per_channel=True, activation_type=quantization.QuantType.QUInt8,
                                     weight_type=quantization.QuantType.QInt8, op_types_to_quantize=["Conv"])
        theirs = _inits(onnx.load(out))
    ours = _inits(quantize(_small_cnn(), feeds))
    # where the methods coincide: the activations feeding Conv (ORT keeps the Relu, whose output
    # range is the one ours takes for r1), the per-channel weights and the int32 biases
    for name in ("x", "r1", "w1", "w2"):
        for part in ("scale", "zero_point"):
            key = f"{name}_{part}"
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    for name in ("w1", "w2", "b1", "b2"):
        np.testing.assert_array_equal(ours[f"{name}_quantized"], theirs[f"{name}_quantized"], err_msg=name)
    for name in ("b1", "b2"):
        np.testing.assert_array_equal(ours[f"{name}_scale"], theirs[f"{name}_quantized_scale"], err_msg=name)


def test_quantize_names_the_feed_and_input_at_fault():
    model = _small_cnn()
    with pytest.raises(ParameterError, match="non-empty list"):
        quantize(model, [])
    with pytest.raises(InputError, match="feed 1: needs the inputs \\['x'\\]"):
        quantize(model, [*_feeds(1), {"z": np.zeros(1, np.float32)}])
    with pytest.raises(InputError, match="input 'x' has shape \\[1, 3, 4, 4\\]"):
        quantize(model, [{"x": np.zeros((1, 3, 4, 4), np.float32)}])
    with pytest.raises(InputError, match="input 'x' must be float32"):
        quantize(model, [{"x": np.zeros((1, 3, 8, 8), np.float64)}])


def test_a_product_of_two_activations_becomes_an_integer_kernel():
    nodes = [helper.make_node("MatMul", ["a", "b"], ["p"]), helper.make_node("Sigmoid", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
                                            helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    feeds = [{"a": rng.standard_normal((2, 3)).astype(np.float32),
              "b": rng.standard_normal((3, 4)).astype(np.float32)} for _ in range(2)]
    q = quantize(model, feeds)
    assert {"a_scale", "b_scale", "p_scale"} <= set(_inits(q))
    module = tensoregg.compile(q, "ref", rule_families=("quantization",))
    assert [n.op for n in module.graph.nodes].count("QLinearMatMul") == 1
