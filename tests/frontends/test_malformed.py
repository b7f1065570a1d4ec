"""Malformed and unsupported models raise the right tensoregg error, never a crash."""

import numpy as np
import onnx
import onnx.defs
import pytest
from onnx import TensorProto, external_data_helper, helper

import tensoregg
from tensoregg.errors import InputError, InvalidModel, ParameterError, ShapeError, UnsupportedOperator

F = TensorProto.FLOAT


def vi(name, shape=(2, 3), elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs=None, outputs=None, inits=(), opset=17, **kw):
    graph = helper.make_graph(nodes, "g", [vi("x")] if inputs is None else inputs,
                              [vi("y")] if outputs is None else outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kw)


def relu_model():
    return model([helper.make_node("Relu", ["x"], ["y"])])


def check(m, error, *words):
    with pytest.raises(error) as info:
        tensoregg.compile(m)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


def test_truncated_bytes():
    data = relu_model().SerializeToString()
    check(data[: len(data) // 2], InvalidModel)


def test_garbage_bytes():
    check(b"\xff\xfe not a protobuf \x00\x01" * 8, InvalidModel)


def test_missing_file(tmp_path):
    check(str(tmp_path / "nope.onnx"), InvalidModel, "nope.onnx")


def test_corrupted_file(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07\x12" + b"\xff" * 40)
    check(str(path), InvalidModel)


def test_wrong_python_type():
    check(12345, InvalidModel, "int")


def test_no_default_opset():
    m = relu_model()
    del m.opset_import[:]
    check(m, InvalidModel, "opset")


def test_other_domain_only_is_unsupported_not_invalid():
    m = relu_model()
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    m.graph.node[0].domain = "ai.onnx.ml"
    check(m, UnsupportedOperator, "ai.onnx.ml::Relu")


def test_no_outputs():
    check(model([helper.make_node("Relu", ["x"], ["y"])], outputs=[]), InvalidModel, "no outputs")


def test_dangling_input_name():
    check(model([helper.make_node("Relu", ["ghost"], ["y"])]), InvalidModel, "ghost")


def test_undefined_output():
    check(model([helper.make_node("Relu", ["x"], ["t"])]), InvalidModel, "'y'")


def test_value_defined_twice():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["y"])]
    check(model(nodes), InvalidModel, "twice")


def test_node_output_shadows_input():
    nodes = [helper.make_node("Relu", ["x"], ["x"]), helper.make_node("Relu", ["x"], ["y"])]
    check(model(nodes), InvalidModel, "'x'")


def test_cycle():
    nodes = [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["x", "b"], ["y"])]
    check(model(nodes), InvalidModel, "cycle")


def test_unknown_op_names_op_and_opset():
    check(model([helper.make_node("FrobnicateTensor", ["x"], ["y"], name="n7")]),
          UnsupportedOperator, "FrobnicateTensor", "opset 17", "n7")


def test_unknown_op_is_not_implemented_error():
    with pytest.raises(NotImplementedError):
        tensoregg.compile(model([helper.make_node("FrobnicateTensor", ["x"], ["y"])]))


def test_domain_not_imported():
    check(model([helper.make_node("Relu", ["x"], ["y"], domain="com.example")]), InvalidModel, "com.example")


def test_unknown_attribute():
    check(model([helper.make_node("Relu", ["x"], ["y"], alpha=0.5)]), InvalidModel, "alpha")


def test_attribute_given_twice():
    node = helper.make_node("Relu", ["x"], ["y"])
    node.attribute.extend([helper.make_attribute("a", 1), helper.make_attribute("a", 2)])
    check(model([node]), InvalidModel, "twice")


def test_bad_attribute_kind():
    check(model([helper.make_node("Concat", ["x", "x"], ["y"], axis="zero")], outputs=[vi("y", (4, 3))]),
          InvalidModel, "axis")


def test_missing_required_attribute():
    check(model([helper.make_node("Concat", ["x", "x"], ["y"])], outputs=[vi("y", (4, 3))]),
          InvalidModel, "axis")


def test_mixed_dtypes():
    inputs = [vi("x"), vi("z", elem=TensorProto.INT64)]
    check(model([helper.make_node("Add", ["x", "z"], ["y"])], inputs=inputs), ShapeError, "Add", "int64")


def test_shapes_do_not_broadcast():
    inputs = [vi("x"), vi("z", (4,))]
    check(model([helper.make_node("Add", ["x", "z"], ["y"])], inputs=inputs), ShapeError, "[2, 3]", "[4]")


def test_missing_required_input():
    check(model([helper.make_node("Add", ["x", ""], ["y"])]), InvalidModel, "missing")


def test_too_many_inputs():
    check(model([helper.make_node("Relu", ["x", "x"], ["y"])]), InvalidModel, "signature")


def test_symbolic_dim_past_the_first_needs_input_shapes():
    m = model([helper.make_node("Relu", ["x"], ["y"])], inputs=[vi("x", (2, "seq"))],
              outputs=[vi("y", (2, "seq"))])
    check(m, ShapeError, "'seq'", "dim 1", "input_shapes")
    assert tensoregg.compile(m, input_shapes={"x": [2, 5]}).input_shapes == [(2, 5)]


def test_input_shapes_unknown_name():
    with pytest.raises(InvalidModel, match="nosuch"):
        tensoregg.compile(relu_model(), input_shapes={"nosuch": [1]})


def test_sequence_input_unsupported():
    seq = helper.make_tensor_sequence_value_info("x", F, [2, 3])
    check(model([helper.make_node("Identity", ["x"], ["y"])], inputs=[seq]), UnsupportedOperator, "sequence")


def test_undefined_elem_type():
    check(model([helper.make_node("Relu", ["x"], ["y"])], inputs=[vi("x", elem=TensorProto.UNDEFINED)]),
          InvalidModel, "element type")


def test_initializer_with_wrong_byte_count():
    bad = onnx.TensorProto(name="w", data_type=F, dims=[2, 3], raw_data=b"\x00" * 7)
    check(model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[bad]), InvalidModel, "'w'")


def test_declared_output_dtype_mismatch():
    check(model([helper.make_node("Relu", ["x"], ["y"])], outputs=[vi("y", elem=TensorProto.INT32)]),
          InvalidModel, "declared")


def test_declared_output_shape_mismatch():
    check(model([helper.make_node("Relu", ["x"], ["y"])], outputs=[vi("y", (3, 2))]), ShapeError, "declared")


def test_control_flow_unsupported():
    def branch(shape):
        value = helper.make_tensor("v", TensorProto.FLOAT, shape, [0.0] * int(np.prod(shape)))
        return helper.make_graph([helper.make_node("Constant", [], ["v"], value=value)], "b", [], [vi("v")])

    node = helper.make_node("If", ["c"], ["y"], then_branch=branch((2,)), else_branch=branch((3,)))
    check(model([node], inputs=[vi("c", (), TensorProto.BOOL)], outputs=[vi("y", None)]), UnsupportedOperator,
          "If", "not a constant", "branches give")


def test_subgraph_dangling_name_is_invalid():
    body = helper.make_graph([], "body", [], [vi("x")])
    node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    check(model([node], inputs=[vi("c", (), TensorProto.BOOL)]), InvalidModel, "'x'", "nothing defines")


def test_runtime_shape_input_is_shape_error():
    inputs = [vi("x"), vi("s", (1,), TensorProto.INT64)]
    m = model([helper.make_node("Reshape", ["x", "s"], ["y"])], inputs=inputs, outputs=[vi("y", (6,))])
    check(m, ShapeError, "Reshape", "compile-time constant")


class TestRunInputs:
    @pytest.fixture
    def module(self):
        return tensoregg.compile(relu_model())

    def test_wrong_shape(self, module):
        with pytest.raises(InputError, match=r"\[3, 2\]"):
            module.run(np.zeros((3, 2), np.float32))

    def test_wrong_dtype(self, module):
        with pytest.raises(InputError, match="float64"):
            module.run(np.zeros((2, 3), np.float64))

    def test_unknown_name(self, module):
        with pytest.raises(InputError, match="nope"):
            module.run(nope=np.zeros((2, 3), np.float32))

    def test_missing(self, module):
        with pytest.raises(InputError, match="missing"):
            module.run()

    def test_too_many(self, module):
        x = np.zeros((2, 3), np.float32)
        with pytest.raises(InputError, match="positional"):
            module.run(x, x)

    def test_not_an_array(self, module):
        with pytest.raises(InputError, match="dict"):
            module.run({"x": 1})


def external_model(location):
    """y = x + w, with w's four floats in the external file ``location``."""
    w = helper.make_tensor("w", F, [4], np.zeros(4, np.float32).tobytes(), raw=True)
    external_data_helper.set_external_data(w, location)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    return model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", [4])], [vi("y", [4])], [w])


def test_external_data_of_bytes_is_not_read_from_the_current_directory(tmp_path, monkeypatch):
    """A model given as bytes has no directory: onnx would read its relative location from the
    process's current directory (a path-traversal leak through the outputs)."""
    np.arange(4, dtype=np.float32).tofile(tmp_path / "w.bin")
    monkeypatch.chdir(tmp_path)
    for given in (external_model("w.bin").SerializeToString(), external_model("w.bin")):
        check(given, InvalidModel, "'w'", "external file")


def test_external_data_of_a_path_stays_in_its_directory(tmp_path):
    """Beside the model, external data loads; a location that is absolute, climbs out with ``..``
    or is a symlink to a file outside is refused, naming the tensor."""
    folder = tmp_path / "model"
    folder.mkdir()
    outside = tmp_path / "secret.bin"
    np.arange(4, dtype=np.float32).tofile(outside)
    np.full(4, 2, np.float32).tofile(folder / "w.bin")
    (folder / "link.bin").symlink_to(outside)
    path = folder / "m.onnx"
    onnx.save(external_model("w.bin"), path)
    np.testing.assert_array_equal(tensoregg.compile(str(path)).run(np.ones(4, np.float32))[0], np.full(4, 3))
    for location in ("../secret.bin", str(outside), "link.bin", "sub/../../secret.bin"):
        onnx.save(external_model(location), path)
        check(str(path), InvalidModel, "'w'", location)


@pytest.mark.parametrize("dims", ["14", 14, b"14", [None, 3], ["", 3], [-1, 3], [2.5, 3], [True, 3],
                                  {"N": 2}])
def test_input_shapes_must_be_sequences_of_ints(dims):
    """``"14"`` was read as (1, 4) and ``None`` escaped as a raw TypeError: a ParameterError names
    the input."""
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", 3])], [vi("y", ["N", 3])])
    with pytest.raises(ParameterError, match="input_shapes\\['x'\\]"):
        tensoregg.compile(m, input_shapes={"x": dims})
    with pytest.raises(ParameterError, match="map input names"):
        tensoregg.compile(m, input_shapes=[("x", [2, 3])])
    assert tensoregg.compile(m, input_shapes={"x": np.array([2, 3])}).input_shapes == [(2, 3)]


@pytest.mark.parametrize("option", [{"optimize": "no"}, {"optimize": None}, {"cache": "x"},
                                    {"validate": 1}, {"rule_families": "algebra"}, {"rule_families": 5}])
def test_compile_options_are_checked(option):
    """``optimize="no"`` optimized, ``rule_families="algebra"`` was read as seven one-letter names:
    a ParameterError names the option."""
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2, 3])], [vi("y", [2, 3])])
    with pytest.raises(ParameterError, match=next(iter(option))):
        tensoregg.compile(m, **option)


@pytest.mark.parametrize("path", [5, None, [b"m.tegg"]])
def test_artifact_paths_are_checked(path):
    """A path that is no path escaped from save and load as a raw TypeError."""
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2, 3])], [vi("y", [2, 3])])
    with pytest.raises(ParameterError, match="artifact's path"):
        tensoregg.load(path)
    with pytest.raises(ParameterError, match="artifact's path"):
        tensoregg.compile(m, optimize=False).save(path)


def test_input_shapes_must_fit_the_declared_shape():
    """Another rank, or another value for a static dim, is a ShapeError showing the declared shape."""
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", 3])], [vi("y", ["N", 3])])
    for dims in ([2, 3, 4], [2, 4]):
        with pytest.raises(ShapeError, match="declares \\['\\?', 3\\]"):
            tensoregg.compile(m, input_shapes={"x": dims})


@pytest.mark.parametrize("domain,version,error", [
    ("", 999, UnsupportedOperator), ("", onnx.defs.onnx_opset_version() + 1, UnsupportedOperator),
    ("ai.onnx.ml", 99, UnsupportedOperator), ("", 0, InvalidModel), ("", -2, InvalidModel)])
def test_opset_newer_than_onnx_defines_or_below_one_is_refused(domain, version, error):
    """Opset 999 was accepted: a version onnx does not define has no known meaning."""
    m = relu_model()
    if domain:
        m.opset_import.append(helper.make_opsetid(domain, version))
    else:
        m.opset_import[0].version = version
    check(m, error, f"{domain or 'ai.onnx'}", str(version))
