"""Control flow, sequences and optionals imported as plain graphs (tensoregg/frontends/onnx_control.py),
against onnxruntime."""

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import tensoregg
from tensoregg.errors import InvalidModel, UnsupportedOperator
from tensoregg.frontends import onnx_backend, onnx_control
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
CONTROL = set(onnx_control.HANDLERS)


def vi(name, elem=F, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, inits=(), opset=21):
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def const(name, value):
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(
        name, helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype), np.shape(value), np.ravel(value)))


def ort_run(m, feeds):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def ours(m, feeds, bind=None):
    """The model imported (``bind``: inputs fixed as constants) and run on the reference interpreter;
    also checks no control op is left in the imported graph."""
    graph = import_onnx(m, bind=bind)
    assert not {n.op for n in graph.nodes} & CONTROL
    return run_graph(graph, {k: v for k, v in feeds.items() if k not in (bind or {})})


def branch(name, nodes, outputs):
    return helper.make_graph(nodes, name, [], outputs)


def randn(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def if_model():
    """y = x * 2 if cond else x - 1 (x: [2, 3])."""
    then = branch("then", [const("two", np.float32(2)), helper.make_node("Mul", ["x", "two"], ["t"])],
                  [vi("t")])
    other = branch("else", [const("one", np.float32(1)), helper.make_node("Sub", ["x", "one"], ["e"])],
                   [vi("e")])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)
    return model([node], [vi("x", F, (2, 3)), vi("cond", B, ())], [vi("y")])


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_a_constant_condition_is_its_branch_inlined(cond):
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    feeds = {"x": x, "cond": np.array(cond)}
    graph = import_onnx(if_model(), bind={"cond": np.array(cond)})
    assert [n.op for n in graph.nodes if n.op != "Identity"] == ["Mul" if cond else "Sub"]
    got = ours(if_model(), feeds, bind={"cond": np.array(cond)})
    np.testing.assert_allclose(got[0], ort_run(if_model(), feeds)[0])


@pytest.mark.parametrize("cond", [True, False])
def test_if_on_a_runtime_condition_is_if_converted(cond):
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    feeds = {"x": x, "cond": np.array(cond)}
    graph = import_onnx(if_model())
    assert "Where" in {n.op for n in graph.nodes}
    np.testing.assert_allclose(ours(if_model(), feeds)[0], ort_run(if_model(), feeds)[0])
    module = tensoregg.compile(graph, target="llvm")
    np.testing.assert_allclose(module.run(x=x, cond=np.array(cond))[0], ort_run(if_model(), feeds)[0])


def test_if_conversion_refuses_a_branch_that_may_fail():
    then = branch("then", [const("i", np.array([5])), helper.make_node("Gather", ["x", "i"], ["t"])],
                  [vi("t")])
    other = branch("else", [helper.make_node("Identity", ["x"], ["e"])], [vi("e")])
    m = model([helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
              [vi("x", F, (2,)), vi("cond", B, ())], [vi("y")])
    with pytest.raises(UnsupportedOperator, match=r"Gather.*may fail at run time"):
        import_onnx(m)


def loop_model(trips, n_carried=1):
    """Loop: s += x[i % 3] * i each iteration, also scanned; trip count and condition given."""
    body = helper.make_graph([
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        const("three", np.int64(3)),
        helper.make_node("Mod", ["i", "three"], ["k"]),
        helper.make_node("Gather", ["x", "k"], ["row"]),
        helper.make_node("Cast", ["i"], ["fi"], to=F),
        helper.make_node("Mul", ["row", "fi"], ["step"]),
        helper.make_node("Add", ["s_in", "step"], ["s_out"]),
        helper.make_node("Identity", ["s_out"], ["scan"]),
    ], "body", [vi("i", I64, ()), vi("cond_in", B, ()), vi("s_in", F, (4,))],
        [vi("cond_out", B, ()), vi("s_out", F, (4,)), vi("scan", F, (4,))])
    node = helper.make_node("Loop", ["M", "c", "s0"], ["s", "scans"], body=body)
    inits = [helper.make_tensor("M", I64, (), [trips]), helper.make_tensor("c", B, (), [True])]
    return model([node], [vi("x", F, (3, 4)), vi("s0", F, (4,))], [vi("s"), vi("scans")], inits)


@settings(max_examples=8, deadline=None)
@given(trips=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_loop_with_a_constant_trip_count_is_unrolled(trips, seed):
    rng = np.random.default_rng(seed)
    feeds = {"x": randn(rng, (3, 4)), "s0": randn(rng, 4)}
    for got, want in zip(ours(loop_model(trips), feeds), ort_run(loop_model(trips), feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_loop_unrolling_is_bounded():
    with pytest.raises(UnsupportedOperator, match="MAX_UNROLLED_NODES"):
        import_onnx(loop_model(10**6))


def test_loop_with_a_runtime_trip_count_is_declined():
    m = loop_model(3)
    m.graph.input.append(vi("M", I64, ()))
    del m.graph.initializer[0]
    with pytest.raises(UnsupportedOperator, match=r"trip count .* not a constant"):
        import_onnx(m)


@pytest.mark.parametrize("trips", [None, np.iinfo(np.int64).max])
def test_loop_stops_when_its_condition_folds_false(trips):
    """No trip count, or the largest (as exporters write a while loop): runs while i < 3 (the
    condition computed by the body)."""
    body = helper.make_graph([
        const("three", np.int64(3)), const("one", np.int64(1)),
        helper.make_node("Add", ["i", "one"], ["next"]),
        helper.make_node("Less", ["next", "three"], ["cond_out"]),
        helper.make_node("Add", ["s_in", "x"], ["s_out"]),
    ], "body", [vi("i", I64, ()), vi("cond_in", B, ()), vi("s_in", F, (2,))],
        [vi("cond_out", B, ()), vi("s_out", F, (2,))])
    inits = [] if trips is None else [helper.make_tensor("M", I64, (), [trips])]
    m = model([helper.make_node("Loop", ["" if trips is None else "M", "", "s0"], ["s"], body=body)],
              [vi("x", F, (2,)), vi("s0", F, (2,))], [vi("s")], inits)
    feeds = {"x": np.array([1, 2], np.float32), "s0": np.zeros(2, np.float32)}
    np.testing.assert_allclose(ours(m, feeds)[0], ort_run(m, feeds)[0])
    np.testing.assert_allclose(ours(m, feeds)[0], [3, 6])


@settings(max_examples=6, deadline=None)
@given(axis=st.integers(0, 1), reverse_in=st.booleans(), reverse_out=st.booleans(),
       out_axis=st.integers(0, 1))
def test_scan_is_unrolled(axis, reverse_in, reverse_out, out_axis):
    body = helper.make_graph([helper.make_node("Add", ["s_in", "e"], ["s_out"]),
                              helper.make_node("Mul", ["s_out", "e"], ["o"])], "body",
                             [vi("s_in", F, (2,)), vi("e", F, (2,))],
                             [vi("s_out", F, (2,)), vi("o", F, (2,))])
    node = helper.make_node("Scan", ["s0", "x"], ["s", "os"], body=body, num_scan_inputs=1,
                            scan_input_axes=[axis], scan_input_directions=[int(reverse_in)],
                            scan_output_axes=[out_axis], scan_output_directions=[int(reverse_out)])
    shape = (3, 2) if axis == 0 else (2, 3)
    m = model([node], [vi("s0", F, (2,)), vi("x", F, shape)], [vi("s"), vi("os")])
    rng = np.random.default_rng(axis)
    feeds = {"s0": randn(rng, 2), "x": randn(rng, shape)}
    for got, want in zip(ours(m, feeds), ort_run(m, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def sequence_model():
    """Split x [6, 2] into [2, 4] rows, insert y at the front, erase the last, insert y before the
    last, concatenate."""
    nodes = [
        const("split", np.array([2, 4])), const("zero", np.int64(0)), const("minus1", np.int64(-1)),
        helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=0),
        helper.make_node("SequenceInsert", ["seq", "y", "zero"], ["seq2"]),
        helper.make_node("SequenceLength", ["seq2"], ["n"]),
        helper.make_node("SequenceAt", ["seq2", "minus1"], ["last"]),
        helper.make_node("SequenceErase", ["seq2"], ["seq3"]),
        helper.make_node("SequenceInsert", ["seq3", "y", "minus1"], ["seq4"]),
        helper.make_node("ConcatFromSequence", ["seq4"], ["cat"], axis=0),
    ]
    return model(nodes, [vi("x", F, (6, 2)), vi("y", F, (1, 2))], [vi("n", I64), vi("last"), vi("cat")])


def test_sequence_ops_are_import_time_lists():
    rng = np.random.default_rng(2)
    feeds = {"x": randn(rng, (6, 2)), "y": randn(rng, (1, 2))}
    for got, want in zip(ours(sequence_model(), feeds), ort_run(sequence_model(), feeds), strict=True):
        np.testing.assert_allclose(got, want)


def test_sequence_graph_input_and_output_through_the_backend():
    """A sequence input flattened into tensors, a sequence output returned as a list (llvm)."""
    tp = helper.make_tensor_sequence_value_info
    body = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "body", [vi("a", F, None)],
                             [vi("b", F, None)])
    nodes = [helper.make_node("SequenceMap", ["xs"], ["ys"], body=body),
             helper.make_node("ConcatFromSequence", ["ys"], ["cat"], axis=0, new_axis=1)]
    m = model(nodes, [tp("xs", F, None)], [tp("ys", F, None), vi("cat")])
    xs = [np.array([-1, 2], np.float32), np.array([3, -4], np.float32)]
    ys, cat = onnx_backend.prepare(m, target="llvm").run([xs])
    assert isinstance(ys, list) and len(ys) == 2
    want_ys, want_cat = ort_run(m, {"xs": xs})
    for got, want in zip(ys, want_ys, strict=True):
        np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(cat, want_cat)


def test_optional_values():
    opt_t = helper.make_optional_type_proto(helper.make_tensor_type_proto(F, (2,)))
    nodes = [helper.make_node("Optional", ["x"], ["o"]),
             helper.make_node("Optional", [], ["none"], type=helper.make_tensor_type_proto(F, (2,))),
             helper.make_node("OptionalHasElement", ["o"], ["has"]),
             helper.make_node("OptionalHasElement", ["none"], ["has_none"]),
             helper.make_node("OptionalGetElement", ["o"], ["y"])]
    m = model(nodes, [vi("x", F, (2,))], [vi("has", B, ()), vi("has_none", B, ()), vi("y", F, (2,))])
    feeds = {"x": np.array([1, 2], np.float32)}
    got = ours(m, feeds)
    assert bool(got[0]) and not bool(got[1])
    np.testing.assert_allclose(got[2], feeds["x"])
    rep = onnx_backend.prepare(model([helper.make_node("OptionalHasElement", ["oi"], ["h"])],
                                     [helper.make_value_info("oi", opt_t)], [vi("h", B, ())]), target="llvm")
    assert not rep.run([None])[0] and rep.run([np.zeros(2, np.float32)])[0]


def test_a_sequence_output_through_import_onnx_is_declined():
    m = model([helper.make_node("SequenceConstruct", ["x"], ["s"])], [vi("x", F, (2,))],
              [helper.make_tensor_sequence_value_info("s", F, None)])
    with pytest.raises(UnsupportedOperator, match="graph output 's'"):
        import_onnx(m)


def test_sequence_position_out_of_range_is_invalid():
    m = model([const("p", np.int64(3)), helper.make_node("SequenceConstruct", ["x"], ["s"]),
               helper.make_node("SequenceAt", ["s", "p"], ["y"])], [vi("x", F, (2,))], [vi("y")])
    with pytest.raises(InvalidModel, match="position 3 is out of range"):
        import_onnx(m)


def test_scan_over_a_data_dependent_length_is_declined():
    """NonZero's output is typed at its upper bound: a Scan unrolled over it would scan the padding."""
    body = helper.make_graph([helper.make_node("Add", ["s_in", "e"], ["s_out"])], "body",
                             [vi("s_in", I64, (1,)), vi("e", I64, (1,))], [vi("s_out", I64, (1,))])
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]),
             helper.make_node("Scan", ["s0", "nz"], ["s"], body=body, num_scan_inputs=1, scan_input_axes=[1])]
    m = model(nodes, [vi("x", F, (4,)), vi("s0", I64, (1,))], [vi("s", I64)])
    with pytest.raises(UnsupportedOperator, match="data-dependent shape"):
        import_onnx(m)


def test_linear_attention_with_an_omitted_past_state_is_expanded():
    """onnx's schema inliner fails on the omitted optional input in the middle; its body is then
    copied into the model per node (onnx_functions._local_bodies), a Scan imported unrolled. An
    omitted past state is zeros."""
    names = ["query", "key", "value", "past_state", "decay"]

    def attention(past):
        node = helper.make_node("LinearAttention", [n if n != "past_state" or past else "" for n in names],
                                ["out", "state"], q_num_heads=2, kv_num_heads=2, update_rule="gated")
        inits = [helper.make_tensor("past_state", F, (1, 2, 4, 4), [0.0] * 32)] if past else []
        ins = [vi(n, F, (1, 3, 8)) for n in names if n != "past_state"]
        return model([node], ins, [vi("out"), vi("state")],
                     inits, opset=27)

    rng = np.random.default_rng(3)
    feeds = {n: randn(rng, (1, 3, 8)) for n in names if n != "past_state"}
    feeds["decay"] = -np.abs(feeds["decay"])
    for got, want in zip(ours(attention(False), feeds), ours(attention(True), feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
