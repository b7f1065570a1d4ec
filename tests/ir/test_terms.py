"""Graph -> egglog term -> Graph round trips (tensoregg.ir.terms)."""

import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensoregg
from tensoregg.ir import OPS, Graph, Node, TensorType, run_graph, terms
from tensoregg.testing import arrays, light_model

F32 = np.dtype(np.float32)


def round_trip(graph: Graph) -> Graph:
    enc = terms.encode(graph)
    js = terms.serialize(enc.egraph)
    return terms.decode(js, terms.first_choice(js), enc)


def assert_same_program(a: Graph, b: Graph, feeds) -> None:
    assert Counter(n.op for n in a.nodes) == Counter(n.op for n in b.nodes)
    assert b.outputs == a.outputs
    assert [b.types[o] for o in b.outputs] == [a.types[o] for o in a.outputs]
    for x, y in zip(run_graph(a, feeds), run_graph(b, feeds)):
        np.testing.assert_array_equal(x, y)


def test_every_op_has_a_constructor():
    """ONNX's default-domain ops and tensoregg's own (FusedConv...), one constructor each."""
    assert terms.TERM_DOMAINS == ("", "tensoregg")
    assert sorted(terms.CONSTRUCTORS) == sorted(name for dom, name in OPS if dom in terms.TERM_DOMAINS)
    assert {c.opdef.domain for c in terms.CONSTRUCTORS.values()} == set(terms.TERM_DOMAINS)


@pytest.mark.parametrize("name", ["resnet50", "shufflenet", "inception_v2"])
def test_zoo_model_round_trips(name):
    graph = tensoregg.compile(light_model(name), "ref").graph
    (x_name, x_type), = graph.inputs.items()
    x = np.random.default_rng(0).standard_normal(x_type.shape).astype(np.float32)
    assert_same_program(graph, round_trip(graph), {x_name: x})


def graph_of(nodes, inits=None, outputs=("y",), shape=(2, 3, 4, 4)):
    return Graph({"x": TensorType(F32, shape)}, inits or {}, nodes, list(outputs))


def test_awkward_arguments_round_trip():
    """Several outputs, variadic inputs, omitted optionals, unset/set optional attributes, floats,
    strings, a tensor attribute, and outputs that are an input or repeat another output."""
    w = np.random.default_rng(1).standard_normal((3, 3, 1, 1)).astype(np.float32)
    inits = {"w": w, "mx": np.array(0.5, np.float32), "shape": np.array([2, 3, 4, 4], np.int64),
             "k": np.array([2], np.int64)}
    nodes = [
        Node("Conv", ("x", "w"), ("c",)),                                   # no bias, pads unset
        Node("Conv", ("x", "w"), ("c2",), {"pads": (0, 0, 0, 0), "auto_pad": "NOTSET"}),
        Node("Clip", ("c", "", "mx"), ("clip",)),                           # omitted middle input
        Node("LeakyRelu", ("c2",), ("lr",), {"alpha": 0.1}),
        Node("Sum", ("clip", "lr", "x"), ("s",)),                           # variadic
        Node("Split", ("s",), ("p0", "p1"), {"axis": 2, "num_outputs": 2}),  # several outputs
        Node("TopK", ("p1", "k"), ("", "idx"), {"axis": -1}),               # only output 1 used
        Node("ConstantOfShape", ("shape",), ("fill",), {"value": np.array([1.5], np.float32)}),
        Node("Add", ("p0", "p0"), ("y",)),
        Node("Mul", ("fill", "x"), ("z",)),
    ]
    graph = graph_of(nodes, inits, outputs=("y", "idx", "z", "x", "y"))
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    back = round_trip(graph)
    assert {n.op: dict(n.attrs) for n in back.nodes}["LeakyRelu"]["alpha"] == pytest.approx(0.1)
    conv_pads = sorted(str(n.attrs["pads"]) for n in back.nodes if n.op == "Conv")
    assert conv_pads == ["(0, 0, 0, 0)", "None"]
    for a, b in zip(run_graph(graph, {"x": x}), run_graph(back, {"x": x})):
        np.testing.assert_array_equal(a, b)


UNARY = ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", "Softsign"]
BINARY = ["Add", "Sub", "Mul", "Max", "Min"]


@st.composite
def random_graphs(draw):
    """Well-typed random DAGs of element-wise ops over one (2, 3) input and a constant."""
    nodes, values = [], ["x", "c"]
    for i in range(draw(st.integers(1, 12))):
        if draw(st.booleans()):
            op, ins = draw(st.sampled_from(UNARY)), (draw(st.sampled_from(values)),)
        else:
            op = draw(st.sampled_from(BINARY))
            ins = (draw(st.sampled_from(values)), draw(st.sampled_from(values)))
        nodes.append(Node(op, ins, (f"v{i}",)))
        values.append(f"v{i}")
    outputs = draw(st.lists(st.sampled_from(values[2:]), min_size=1, max_size=3))
    const = draw(arrays(np.float32, (3,)))
    return Graph({"x": TensorType(F32, (2, 3))}, {"c": const}, nodes, outputs)


@given(random_graphs(), st.data())
def test_random_graphs_round_trip(graph, data):
    x = data.draw(arrays(np.float32, (2, 3)))
    back = round_trip(graph)
    assert len(back.outputs) == len(graph.outputs)
    for a, b in zip(run_graph(graph, {"x": x}), run_graph(back, {"x": x})):
        np.testing.assert_array_equal(a, b)


def test_long_chain_round_trips():
    """A 300-node chain: egglog 13.2's global lets mis-resolve in chains this long (``$v33`` read
    as ``$v3``), so an encoding that leaned on them would drop ``x`` from the sum here."""
    nodes = [Node("Add", ("x" if k == 0 else f"a{k - 1}", "w"), ("y" if k == 299 else f"a{k}",))
             for k in range(300)]
    graph = Graph({"x": TensorType(F32, (4,))}, {"w": np.full(4, 0.25, np.float32)}, nodes, ["y"])
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(run_graph(round_trip(graph), {"x": x})[0], x + 75.0)


def test_every_value_carries_its_shape_and_dtype():
    nodes = [Node("Transpose", ("x",), ("t",), {"perm": (1, 0)}), Node("Cast", ("t",), ("y",), {"to": 7})]
    graph = Graph({"x": TensorType(F32, (2, 3))}, {}, nodes, ["y"])
    enc = terms.encode(graph)
    facts = {name: (tuple(d.value for d in enc.egraph.extract(terms.shape_of(t)).value),
                    enc.egraph.extract(terms.dtype_of(t)).value) for name, t in enc.terms.items()}
    assert facts == {"x": ((2, 3), "float32"), "t": ((3, 2), "float32"), "y": ((3, 2), "int64")}


def test_rules_build_terms_by_attribute_name():
    from egglog import String, Vec, i64

    from tensoregg.ir.terms import CONSTRUCTORS, Tensor, attr_vars, term

    x = Tensor.input("x")
    by_name = term("Flatten", x, axis=i64(1))
    assert str(by_name) == str(CONSTRUCTORS["Flatten"].fn(x, i64(1)))
    with pytest.raises(ValueError, match=r"Einsum term: attributes \['equation'\] missing"):
        term("Einsum", Vec[Tensor](x))
    with pytest.raises(ValueError, match=r"\['eqation'\] unknown"):
        term("Einsum", Vec[Tensor](x), equation=String("i->i"), eqation=String("i->i"))
    assert set(attr_vars("Conv")) == set(CONSTRUCTORS["Conv"].attrs)


def test_a_deep_chain_round_trips():
    """A dependency chain deeper than Python's default recursion limit (a 128-step bidirectional
    LSTM unrolls to ~4400 nodes) decodes: the decoder recurses once per node along the chain."""
    n = sys.getrecursionlimit()
    nodes = [Node("Neg", ("x" if k == 0 else f"v{k - 1}",), (f"v{k}" if k < n - 1 else "y",))
             for k in range(n)]
    graph = graph_of(nodes, shape=(2,))
    x = np.arange(2, dtype=np.float32)
    assert_same_program(graph, round_trip(graph), {"x": x})


def test_the_scratch_egraph_starts_empty_and_keeps_its_rulesets():
    """``optimize`` on the main thread reuses one e-graph: what one optimization added is gone for
    the next, the rulesets it ran stay registered; another thread gets e-graphs of its own."""
    import threading

    from tensoregg.optimize import optimize
    from tensoregg.rules.saturation import node_count
    from tensoregg.targets import registration

    target = registration("llvm").describe()
    x = TensorType(F32, (3, 4))
    neg = Graph({"x": x}, {}, [Node("Neg", ("x",), ("a",)), Node("Neg", ("a",), ("y",))], ["y"])
    relu = Graph({"x": x}, {}, [Node("Relu", ("x",), ("y",))], ["y"])
    feeds = {"x": np.arange(12, dtype=np.float32).reshape(3, 4) - 6}
    for graph in (neg, relu, neg):
        result, _ = optimize(graph, target)
        np.testing.assert_array_equal(run_graph(result, feeds)[0], run_graph(graph, feeds)[0])
    with terms.scratch_egraph() as egraph:
        assert node_count(egraph) == 0 and egraph._state.rulesets  # rulesets registered, no rows
    seen = []
    thread = threading.Thread(target=lambda: seen.append(optimize(relu, target)[0]))
    thread.start()
    thread.join()
    np.testing.assert_array_equal(run_graph(seen[0], feeds)[0], np.maximum(feeds["x"], 0))
    with terms.scratch_egraph() as again:
        assert again is egraph
