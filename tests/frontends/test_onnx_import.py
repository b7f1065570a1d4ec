"""ONNX import: constant folding of shape subgraphs, old opsets, external data, backend adapter."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import tensoregg
from tensoregg.frontends import onnx_backend
from tensoregg.frontends.onnx import import_onnx

F = TensorProto.FLOAT


def test_shape_subgraph_folds_to_static_reshape():
    # y = Reshape(x, Concat(Gather(Shape(x), 0), [-1])): the shape computation folds away
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "zero1"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", F, [2, 12])], inits)
    g = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.op for n in g.nodes] == ["Reshape"]
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    (y,) = tensoregg.compile(g).run(x)
    np.testing.assert_array_equal(y, x.reshape(2, 12))


def test_old_opset_attribute_becomes_input():
    # Unsqueeze-11 carries axes as an attribute; the IR holds the opset-13+ form
    graph = helper.make_graph([helper.make_node("Unsqueeze", ["x"], ["y"], axes=[0, 3])], "g",
                              [helper.make_tensor_value_info("x", F, [2, 3])],
                              [helper.make_tensor_value_info("y", F, [1, 2, 3, 1])])
    module = tensoregg.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]))
    assert module.output_types[0].shape == (1, 2, 3, 1)


def test_initializer_listed_as_input_is_a_weight():
    w = numpy_helper.from_array(np.full((2, 3), 2, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", F, [2, 3]),
                               helper.make_tensor_value_info("w", F, [2, 3])],
                              [helper.make_tensor_value_info("y", F, [2, 3])], [w])
    module = tensoregg.compile(helper.make_model(graph))
    assert module.input_names == ["x"]
    np.testing.assert_array_equal(module.run(np.ones((2, 3), np.float32))[0], np.full((2, 3), 2))


def test_external_data(tmp_path):
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", F, [64, 64])],
                              [helper.make_tensor_value_info("y", F, [64, 64])],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "ext.onnx"
    onnx.save(helper.make_model(graph), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.bin", size_threshold=0)
    assert (tmp_path / "ext.bin").stat().st_size >= w.nbytes
    (y,) = tensoregg.compile(str(path)).run(np.zeros((64, 64), np.float32))
    np.testing.assert_array_equal(y, w)


def test_backend_binds_shape_inputs_at_run_time():
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", F, ["n", 6]),
                               helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", F, None)])
    rep = onnx_backend.prepare(helper.make_model(graph))
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    (y,) = rep.run([x, np.array([4, 3], np.int64)])
    np.testing.assert_array_equal(y, x.reshape(4, 3))
    (y,) = rep.run([x, np.array([3, -1], np.int64)])
    assert y.shape == (3, 4) and len(rep.cache) == 2


def test_backend_run_node():
    node = helper.make_node("Add", ["a", "b"], ["c"])
    a, b = np.ones((2, 2), np.float32), np.arange(2, dtype=np.float32)
    (c,) = onnx_backend.run_node(node, [a, b])
    np.testing.assert_array_equal(c, a + b)
    assert onnx_backend.supports_device("CPU") and not onnx_backend.supports_device("CUDA")
