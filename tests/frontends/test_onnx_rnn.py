"""RNN, GRU and LSTM expanded at import (tensoregg/frontends/onnx_rnn.py) against onnxruntime."""

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from tensoregg.errors import InvalidModel, UnsupportedOperator
from tensoregg.frontends import onnx_backend
from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
ACTIVATIONS = {  # name -> (alphas, betas) it takes, for onnxruntime's reading of the attributes
    "Relu": (0, 0), "Tanh": (0, 0), "Sigmoid": (0, 0), "Softsign": (0, 0), "Softplus": (0, 0),
    "Affine": (1, 1), "ScaledTanh": (1, 1), "HardSigmoid": (1, 1), "LeakyRelu": (1, 0),
    "ThresholdedRelu": (1, 0), "Elu": (1, 0)}


def rnn_model(op, shapes, layout=0, **attrs):
    """A one-node model over inputs of ``shapes`` (name -> shape; sequence_lens an int32 input)."""
    n_out = 3 if op == "LSTM" else 2
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    inputs = [n if n in shapes else "" for n in names]
    while not inputs[-1]:
        inputs.pop()
    node = helper.make_node(op, inputs, ["Y", "Y_h", "Y_c"][:n_out], layout=layout, **attrs)
    ins = [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT,
                                         shapes[n]) for n in inputs if n]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output]
    model = helper.make_model(helper.make_graph([node], op, ins, outs),
                              opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    return model


def run_expanded(model, feeds):
    """The imported model run on the reference interpreter (sequence_lens bound at import)."""
    bind = {k: v for k, v in feeds.items() if k == "sequence_lens"}
    graph = import_onnx(model, bind=bind)
    return run_graph(graph, {k: v for k, v in feeds.items() if k not in bind})


@st.composite
def rnn_cases(draw):
    op = draw(st.sampled_from(sorted(GATES)))
    seq, batch, n_in, hidden = (draw(st.integers(1, n)) for n in (4, 3, 4, 4))
    direction = draw(st.sampled_from(["forward", "reverse", "bidirectional"]))
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op] * hidden
    shapes = {"X": (seq, batch, n_in), "W": (dirs, g, n_in), "R": (dirs, g, hidden)}
    optional = {"B": (dirs, 2 * g), "sequence_lens": (batch,), "initial_h": (dirs, batch, hidden)}
    if op == "LSTM":
        optional |= {"initial_c": (dirs, batch, hidden), "P": (dirs, 3 * hidden)}
    shapes |= {k: v for k, v in optional.items() if draw(st.booleans())}
    attrs = {"direction": direction, "hidden_size": hidden}
    if draw(st.booleans()):
        attrs["clip"] = draw(st.floats(0.2, 3.0))
    if op == "GRU":
        attrs["linear_before_reset"] = draw(st.integers(0, 1))
    if op == "LSTM":
        attrs["input_forget"] = draw(st.integers(0, 1))
    if draw(st.booleans()):
        n_act = {"RNN": 1, "GRU": 2, "LSTM": 3}[op]
        acts = draw(st.lists(st.sampled_from(sorted(ACTIVATIONS)), min_size=n_act, max_size=n_act)) * dirs
        attrs["activations"] = acts
        alphas = sum(ACTIVATIONS[a][0] for a in acts)
        betas = sum(ACTIVATIONS[a][1] for a in acts)
        for name, n in (("activation_alpha", alphas), ("activation_beta", betas)):
            if n:
                attrs[name] = draw(st.lists(st.floats(0.1, 1.5), min_size=n, max_size=n))
    return op, shapes, attrs, draw(st.integers(0, 2**32 - 1))


def feeds_for(shapes, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.integers(1, shapes["X"][0] + 1, s, dtype=np.int32) if k == "sequence_lens"
            else rng.uniform(-1, 1, s).astype(np.float32) for k, s in shapes.items()}


@settings(max_examples=40)
@given(rnn_cases())
@example(("LSTM", {"X": (3, 2, 2), "W": (1, 12, 2), "R": (1, 12, 3), "initial_c": (1, 2, 3)},
          {"hidden_size": 3, "clip": 0.3}, 0))  # clip leaves the cell's activation alone
def test_expanded_rnns_match_onnxruntime(case):
    op, shapes, attrs, seed = case
    model = rnn_model(op, shapes, **attrs)
    feeds = feeds_for(shapes, seed)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    # unbounded activations (Affine, Relu...) may grow the state until onnxruntime overflows (its
    # softplus gives inf past exp's range, where numpy's log1p(exp) form stays finite)
    assume(all(np.abs(e).max(initial=0) < 1e4 for e in expected))
    for got, want in zip(run_expanded(model, feeds), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", sorted(GATES))
def test_batchwise_layout_is_the_transposed_sequence_layout(op):
    # onnxruntime declines layout=1: it must give the layout-0 results, batch first
    dirs, seq, batch, hidden = 2, 3, 2, 3
    g = GATES[op] * hidden
    shapes = {"X": (seq, batch, 2), "W": (dirs, g, 2), "R": (dirs, g, hidden),
              "initial_h": (dirs, batch, hidden)}
    feeds = feeds_for(shapes, 0)
    seq_first = run_expanded(rnn_model(op, shapes, direction="bidirectional"), feeds)
    swapped = {"X": (batch, seq, 2), "initial_h": (batch, dirs, hidden)}
    batch_first = run_expanded(rnn_model(op, shapes | swapped, layout=1, direction="bidirectional"),
                               feeds | {k: feeds[k].swapaxes(0, 1) for k in swapped})
    np.testing.assert_allclose(batch_first[0], seq_first[0].transpose(2, 0, 1, 3), rtol=1e-6)
    np.testing.assert_allclose(batch_first[1], seq_first[1].transpose(1, 0, 2), rtol=1e-6)


def test_unsupported_forms_name_node_and_cause():
    shapes = {"X": (3, 2, 2), "W": (1, 4, 2), "R": (1, 4, 4), "sequence_lens": (2,)}
    model = rnn_model("RNN", shapes)
    with pytest.raises(UnsupportedOperator, match=r"'RNN'.*node 'Y'.*sequence_lens \[3, 0\]: each must lie"):
        import_onnx(model, bind={"sequence_lens": np.array([3, 0], np.int32)})
    with pytest.raises(UnsupportedOperator, match=r"'RNN'.*node 'Y'.*sequence_lens\) must be a constant"):
        import_onnx(model)
    with pytest.raises(UnsupportedOperator, match=r"'RNN'.*activations \('Swish',\)"):
        import_onnx(rnn_model("RNN", shapes, activations=["Swish"]),
                    bind={"sequence_lens": np.array([3, 3], np.int32)})


@pytest.mark.parametrize(("op", "attrs"), [("LSTM", {"direction": "bidirectional"}),
                                           ("GRU", {"linear_before_reset": 1, "layout": 1})])
def test_compiled_on_llvm_through_the_backend(op, attrs):
    # sequence_lens a graph input: the backend adapter binds it, as the conformance cases need
    dirs, g = 2 if attrs.get("direction") == "bidirectional" else 1, GATES[op] * 3
    first = (2, 3) if attrs.get("layout") else (3, 2)
    shapes = {"X": (*first, 4), "W": (dirs, g, 4), "R": (dirs, g, 3), "B": (dirs, 2 * g),
              "sequence_lens": (2,)}
    model, feeds = rnn_model(op, shapes, **attrs), feeds_for(shapes | {"X": (3, 2, 4)}, 1)
    feeds["X"] = feeds["X"].reshape(shapes["X"])
    got = onnx_backend.prepare(model, target="llvm").run(feeds)
    for a, b in zip(got, run_expanded(model, feeds), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_malformed_and_older_forms_name_the_node():
    shapes = {"X": (3, 2, 2), "W": (1, 4, 2), "R": (1, 4, 4)}
    with pytest.raises(InvalidModel, match=r"RNN node 'Y': unknown attribute 'bogus'"):
        import_onnx(rnn_model("RNN", shapes, bogus=1))
    with pytest.raises(InvalidModel, match=r"RNN node 'Y': unknown direction 'sideways'"):
        import_onnx(rnn_model("RNN", shapes, direction="sideways"))
    old = rnn_model("RNN", shapes)
    old.opset_import[0].version = 6
    with pytest.raises(UnsupportedOperator, match=r"'RNN', opset 6, node 'Y': the opset 6 form"):
        import_onnx(old)
