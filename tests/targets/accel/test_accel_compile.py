"""Models compiled for the accelerator: int8 matrix products tiled onto the GEMM core and run in the
simulator, bit-exact against onnxruntime's integer kernels and the reference interpreter."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, TensorProto, helper, numpy_helper

import tensoregg
from tensoregg.errors import UnsupportedOperator
from tensoregg.targets.accel.lower import ConvKernel, GemmKernel

RNG = np.random.default_rng(3)
ONNX_TYPES = {np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8}


def qlinear_matmul(m: int, k: int, n: int, dtype: type, per_column: bool) -> ModelProto:
    """y = QLinearMatMul(a, w): a (m, k) of ``dtype``, w constant int8, y of ``dtype``."""
    w = RNG.integers(-127, 128, (k, n), dtype=np.int8)
    w_scale = (RNG.random(n) * 0.01 + 0.001) if per_column else np.array(0.004)
    signed = dtype == np.int8
    inits = {"w": w, "as": np.array(0.02, np.float32), "az": np.array(3 if signed else 131, dtype),
             "ws": w_scale.astype(np.float32), "wz": np.zeros(w_scale.shape, np.int8),
             "ys": np.array(0.07, np.float32), "yz": np.array(-5 if signed else 120, dtype)}
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "w", "ws", "wz", "ys", "yz"], ["y"])
    return _model([node], inits, ("a", dtype, [m, k]), ("y", dtype, [m, n]))


def _model(nodes: list, inits: dict[str, np.ndarray], x: tuple, y: tuple) -> ModelProto:
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info(x[0], ONNX_TYPES.get(x[1], x[1]), x[2])],
                              [helper.make_tensor_value_info(y[0], ONNX_TYPES.get(y[1], y[1]), y[2])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def onnxruntime(model: ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize(("target", "dtype", "per_column"), [
    ("accel", np.int8, True), pytest.param("accel", np.uint8, False, marks=pytest.mark.slow),
    pytest.param("accel-small", np.uint8, True, marks=pytest.mark.slow), ("accel-small", np.int8, False)])
def test_qlinear_matmul_matches_onnxruntime_and_the_reference(target: str, dtype: type,
                                                              per_column: bool) -> None:
    model = qlinear_matmul(9, 70, 40, dtype, per_column)
    info = np.iinfo(dtype)
    a = RNG.integers(info.min, info.max + 1, (9, 70)).astype(dtype)
    module = tensoregg.compile(model, target)
    (y,) = module.run(a)
    np.testing.assert_array_equal(y, onnxruntime(model, a))
    np.testing.assert_array_equal(y, tensoregg.compile(model, "ref").run(a)[0])
    (stats,) = module.program.stats
    assert stats.macs == 9 * (80 * 48 if target == "accel" else 72 * 40)  # whole blocks: K, N padded
    assert 0 < stats.utilization <= 1 and stats.dma_read > a.size + 70 * 40


def test_matmul_integer_with_zero_points() -> None:
    bz = RNG.integers(100, 156, 20).astype(np.uint8)
    b = (bz + RNG.integers(-100, 100, (33, 20))).astype(np.uint8)  # b - bz fits int8
    inits = {"b": b, "az": np.array(200, np.uint8), "bz": bz}
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    model = _model([node], inits, ("a", np.uint8, [2, 3, 33]), ("y", TensorProto.INT32, [2, 3, 20]))
    a = RNG.integers(0, 256, (2, 3, 33)).astype(np.uint8)
    (y,) = tensoregg.compile(model, "accel").run(a)
    np.testing.assert_array_equal(y, onnxruntime(model, a))


def qlinear_conv(shape: list[int], out: int, kernel: int, attrs: dict, dtype: type, bias: bool) -> ModelProto:
    """y = QLinearConv(x, w[, B]): x of ``dtype`` (N, C, H, W), w per output channel int8."""
    w = RNG.integers(-127, 128, (out, shape[1] // attrs.get("group", 1), kernel, kernel), dtype=np.int8)
    signed = dtype == np.int8
    inits = {"xs": np.array(0.05, np.float32), "xz": np.array(-7 if signed else 121, dtype), "w": w,
             "ws": (RNG.random(out) * 0.01 + 0.002).astype(np.float32), "wz": np.zeros(out, np.int8),
             "ys": np.array(0.2, np.float32), "yz": np.array(4 if signed else 100, dtype)}
    if bias:
        inits["B"] = RNG.integers(-3000, 3000, out).astype(np.int32)
    inputs = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", *(["B"] * bias)]
    node = helper.make_node("QLinearConv", inputs, ["y"], **attrs)
    return _model([node], inits, ("x", dtype, shape), ("y", dtype, None))


@pytest.mark.parametrize(("target", "shape", "attrs", "dtype", "bias"), [
    pytest.param("accel", [1, 16, 9, 9], {"pads": [1, 1, 1, 1]}, np.int8, True, marks=pytest.mark.slow),
    ("accel", [2, 5, 8, 7], {"strides": [2, 2], "pads": [0, 1, 2, 1], "dilations": [1, 2]}, np.uint8, False),
    ("accel-small", [1, 12, 6, 6], {"pads": [1, 1, 1, 1]}, np.uint8, True),
    ("accel-small", [2, 8, 5, 5], {"pads": [1, 1, 1, 1], "group": 8}, np.int8, True)])  # depthwise
def test_qlinear_conv_matches_onnxruntime_and_the_reference(target: str, shape: list[int], attrs: dict,
                                                            dtype: type, bias: bool) -> None:
    model = qlinear_conv(shape, 24, 3, attrs, dtype, bias)
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max + 1, shape).astype(dtype)
    module = tensoregg.compile(model, target)
    (y,) = module.run(x)
    np.testing.assert_array_equal(y, onnxruntime(model, x))
    np.testing.assert_array_equal(y, tensoregg.compile(model, "ref").run(x)[0])
    kernel = module.program.kernels[0]
    assert isinstance(kernel.parts[0][1] if "group" in attrs else kernel, ConvKernel)  # not unfolded


@pytest.mark.parametrize(("shape", "pads"), [([1, 3, 5, 5], [1, 0, 1, 0]), ([2, 3, 9], [1, 2])])
def test_conv_integer(shape: list[int], pads: list[int]) -> None:
    """2-D: directly; 1-D: unfolded by the host (im2col) into a matrix product; uint8 weights with
    zero point 0 run as three int8 parts (255 = 127 + 127 + 1)."""
    w = RNG.integers(0, 256, (8, 3, *[2] * (len(shape) - 2))).astype(np.uint8)
    w.reshape(-1)[:2] = 0, 255
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=pads)
    model = _model([node], {"w": w, "xz": np.array(77, np.uint8), "wz": np.array(0, np.uint8)},
                   ("x", np.uint8, shape), ("y", TensorProto.INT32, None))
    x = RNG.integers(0, 256, shape).astype(np.uint8)
    module = tensoregg.compile(model, "accel-small")
    np.testing.assert_array_equal(module.run(x)[0], onnxruntime(model, x))
    kernel = module.program.kernels[0]
    if len(shape) == 4:
        assert isinstance(kernel, ConvKernel) and kernel.parts == 3
    else:
        assert isinstance(kernel, GemmKernel) and kernel.k == 3 * (3 * 2)  # three parts of C x kernel


def test_batched_weights() -> None:
    b = RNG.integers(-128, 128, (2, 1, 20, 9)).astype(np.int8)  # broadcast over A's batch axis of 3
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    model = _model([node], {"b": b}, ("a", np.int8, [3, 4, 20]), ("y", TensorProto.INT32, [2, 3, 4, 9]))
    a = RNG.integers(-128, 128, (3, 4, 20)).astype(np.int8)
    module = tensoregg.compile(model, "accel-small")
    np.testing.assert_array_equal(module.run(a)[0], onnxruntime(model, a))
    assert module.program.stats[0].macs == 6 * 4 * 24 * 16  # six products, K and N padded to blocks of 8


def test_other_ops_are_unsupported_on_the_accelerator() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])], {}, ("x", TensorProto.FLOAT, [4]),
                   ("y", TensorProto.FLOAT, [4]))
    with pytest.raises(UnsupportedOperator, match=r"op 'Relu'.*target 'accel'"):
        tensoregg.compile(model, "accel")


def test_weights_outside_int8_and_weights_fed_at_run_time() -> None:
    b = RNG.integers(0, 256, (20, 9)).astype(np.uint8)
    b[0, 0], b[1, 1] = 255, 0  # b - bz: -255 and 255, three int8 parts
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    for weights, bz in (({"b": b}, np.array(0, np.uint8)), ({}, np.array(255, np.uint8))):
        inputs = [helper.make_tensor_value_info(name, TensorProto.UINT8, shape)
                  for name, shape in (("a", [3, 20]), ("b", [20, 9])) if name not in weights]
        graph = helper.make_graph([node], "g", inputs,
                                  [helper.make_tensor_value_info("y", TensorProto.INT32, [3, 9])],
                                  [numpy_helper.from_array(v, k) for k, v in
                                   {**weights, "az": np.array(9, np.uint8), "bz": bz}.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        feeds = {"a": RNG.integers(0, 256, (3, 20)).astype(np.uint8), **({} if weights else {"b": b})}
        module = tensoregg.compile(model, "accel-small")
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(module.run(**feeds)[0], session.run(None, feeds)[0])
