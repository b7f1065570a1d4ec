"""QLinearMatMul and QLinearConv requantize as onnxruntime does: the int32 sum converted to float32
and multiplied by the float32 scale in float32, then rounded half to even. A sum and a scale for
which float64 rounds the other way (one case in ~10^6 among in-range results) tell the two apart."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, TensorProto, helper, numpy_helper

import tensoregg


def _float64_disagrees() -> tuple[np.float32, int]:
    """A scale s and a multiple t of 127 below 100 / s where rint(f32(t) * s) differs from rint(t * s)."""
    for s in np.linspace(1e-4, 1e-3, 2000, dtype=np.float32):
        t = 127 * np.arange(1, int(100 / s / 127), dtype=np.int64)
        differ = np.nonzero(np.rint(t.astype(np.float32) * s) != np.rint(t * np.float64(s)))[0]
        if differ.size:
            return s, int(t[differ[0]])
    raise AssertionError("no case found")


def _model(op: str, k: int, scale: np.float32) -> ModelProto:
    """One int8 QLinearMatMul (a: 1 x k, b: k x 1 of 127) or QLinearConv (1x1 kernel over k channels)."""
    shape_x, shape_w, shape_y = ([1, k], [k, 1], [1, 1]) if op == "QLinearMatMul" else \
        ([1, k, 1, 1], [1, k, 1, 1], [1, 1, 1, 1])
    inits = [numpy_helper.from_array(np.full(shape_w, 127, np.int8), "w")] + [
        numpy_helper.from_array(np.array(v, dtype), name) for name, v, dtype in (
            ("xs", 1.0, np.float32), ("xz", 0, np.int8), ("ws", scale, np.float32), ("wz", 0, np.int8),
            ("ys", 1.0, np.float32), ("yz", 0, np.int8))]
    inputs = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.INT8, shape_x)],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, shape_y)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("op", ["QLinearMatMul", "QLinearConv"])
@pytest.mark.parametrize("target", ["ref", "llvm"])
def test_requantization_matches_onnxruntime_where_float64_differs(op: str, target: str) -> None:
    scale, total = _float64_disagrees()
    k = -(-total // 127 // 127)
    x = np.full(k, 127, np.int64)
    x[-1] = total // 127 - 127 * (k - 1)  # sum(x) * 127 == total
    model = _model(op, int(k), scale)
    feed = x.astype(np.int8).reshape([1, k] if op == "QLinearMatMul" else [1, k, 1, 1])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": feed})[0]
    assert want.item() == np.rint(np.float32(total) * scale) != np.rint(total * np.float64(scale))
    np.testing.assert_array_equal(tensoregg.compile(model, target).run(feed)[0], want)
