"""Translation validation: compile(..., validate=True) refuses an optimized program that differs from
the imported one, naming the output, the error and the (narrowed) rules; sound programs pass."""

import numpy as np
import pytest
from egglog import var

import tensoregg
from tensoregg.cli import main
from tensoregg.errors import ValidationError
from tensoregg.ir.equivalence import compare, random_feeds, worst
from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.terms import CONSTRUCTORS, Tensor
from tensoregg.ir.types import TensorType
from tensoregg.rules import Family

Relu = CONSTRUCTORS["Relu"].fn
x = var("x", Tensor)
UNSOUND = Family("unsound", "test only: a rule that is wrong, to be caught")
UNSOUND.rewrite("relu-relu-drop", "relu(relu(x)) = x (wrong: relu(x))", Relu(Relu(x)), x)


def _graph() -> Graph:
    """a -> Relu -> Relu -> Neg: both relu-idempotent (sound) and relu-relu-drop match."""
    nodes = [Node("Relu", ("a",), ("r1",)), Node("Relu", ("r1",), ("r2",)), Node("Neg", ("r2",), ("y",))]
    return Graph({"a": TensorType(np.dtype("float32"), (4, 5))}, {}, nodes, ["y"])


def test_an_unsound_rule_is_refused_and_named():
    with pytest.raises(ValidationError) as caught:
        tensoregg.compile(_graph(), target="ref", rule_families=[UNSOUND, "algebra"], validate=True)
    err = caught.value
    assert err.output == "y" and err.error > 0.1
    assert err.rules == ["relu-relu-drop"]  # narrowed from the two rules that fired
    assert "'y'" in str(err) and "relu-relu-drop" in str(err) and "1 of the 2 that fired" in str(err)


def test_the_unsound_program_compiles_without_validation():
    module = tensoregg.compile(_graph(), target="ref", rule_families=[UNSOUND, "algebra"])
    a = -np.ones((4, 5), np.float32)
    assert (module.run(a)[0] == 1).all()  # -(a) where -(relu(relu(a))) = 0 was asked


def test_sound_rules_pass_validation():
    module = tensoregg.compile(_graph(), target="ref", rule_families=["algebra"], validate=True)
    assert module.report.phases[0].fired["relu-idempotent"] > 0


def test_the_example_model_passes_validation_on_the_cli(capsys):
    assert main(["run", "examples/tinycnn.onnx", "--validate", "--no-cache"]) == 0
    assert "output probs" in capsys.readouterr().out


def test_compare_tolerances():
    f = np.array([1.0, np.nan, np.inf, -0.0], np.float32)
    assert worst(f, f.copy()) is None
    assert worst(f + np.float32(1e-6), f) is None  # within float32's tolerance of max |want|
    assert worst(np.array([1.0, np.nan, -np.inf, 0.0], np.float32), f)[3] == np.inf
    index, got, want, error, allowed = worst(np.array([3, 4], np.int8), np.array([3, 5], np.int8))
    assert (index, got, want, error, allowed) == ((1,), 4.0, 5.0, 1.0, 0.0)
    assert worst(np.zeros((2, 3)), np.zeros((3, 2)))[1:3] == ("shape (2, 3)", "shape (3, 2)")


def test_random_feeds_are_seeded_and_typed():
    types = {"f": TensorType(np.dtype("float16"), (3,)), "i": TensorType(np.dtype("int64"), (2, 2)),
             "u": TensorType(np.dtype("uint8"), (5,)), "b": TensorType(np.dtype("bool"), ())}
    one, two = (random_feeds(types, np.random.default_rng(7)) for _ in range(2))
    assert {k: v.dtype for k, v in one.items()} == {k: t.dtype for k, t in types.items()}
    assert all(np.array_equal(one[k], two[k]) for k in types)
    assert compare(_graph(), _graph()) is None


def test_extreme_integers_and_rejected_inputs():
    # relu(|x|) = |x| is wrong for int32 only at the minimum, which the extreme draw holds
    nodes = [Node("Abs", ("a",), ("b",)), Node("Relu", ("b",), ("y",))]
    graph = Graph({"a": TensorType(np.dtype("int32"), (64,))}, {}, nodes, ["y"])
    wrong = Graph(graph.inputs, {}, [Node("Abs", ("a",), ("y",))], ["y"])
    found = compare(graph, wrong)
    assert found is not None and found.draw == 2 and found.got == -2**31 and found.want == 0
    # a Gather whose indices the original rejects on some draws: those draws are skipped
    gather = Graph({"i": TensorType(np.dtype("int64"), (3,))}, {"d": np.arange(2, dtype=np.float32)},
                   [Node("Gather", ("d", "i"), ("y",))], ["y"])
    assert compare(gather, gather) is None
