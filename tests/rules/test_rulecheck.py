"""The rule checks fail where they should: premise deletions (issue 17's two cases), -0 vs +0, mutants
of a few rules; and each family checked in context on merged witnesses."""

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tensoregg.rules import RULESETS
from tensoregg.testing import assert_identical
from tensoregg.testing.mutate import mutants, outcomes, report, run_mutant, score, viable
from tensoregg.testing.rulecheck import check_in_context, check_rule_cases

RULES = {r.name: r for family in RULESETS.values() for r in family.rules}


def without_fact(name, text):
    """Rule ``name`` with the one fact whose text contains ``text`` deleted."""
    rule = RULES[name]
    kept = [f for f in rule.facts if text not in str(f)]
    assert len(kept) == len(rule.facts) - 1, [str(f) for f in rule.facts]
    return rule.rebuilt(kept, rule.actions, name=f"{name}-premise-dropped")


def test_neg_of_sub_without_its_integer_premise_is_caught():
    """-(a - b) = b - a fails in floats at a = b (-0 vs +0): the dtype sweep finds it."""
    mutant = without_fact("neg-of-sub", ".contains(dt)")
    check_rule_cases(RULES["neg-of-sub"], 2, 12, quick=True)
    with pytest.raises(AssertionError, match=r"(?s)neg-of-sub-premise-dropped.*IEEE-exact"):
        check_rule_cases(mutant, 2, 12, quick=True)


def test_gemm_bn_fold_without_its_c_shape_premise_is_caught():
    """A C with one value per row (or one value) is not a per-column bias: the counter-witness finds it
    and the check names the rule (a tensoregg error from the rewritten program, not a raw KeyError)."""
    mutant = without_fact("gemm-bn-fold", "eq(sc[sc.length() - 1]).to(sy[1])")
    check_rule_cases(RULES["gemm-bn-fold"], 2, 12, quick=True)
    with pytest.raises(AssertionError, match="gemm-bn-fold-premise-dropped"):
        check_rule_cases(mutant, 2, 12, quick=True)


def test_premise_breaking_cases_alone_catch_a_dropped_premise():
    """``examples=0`` runs only the premise-breaking cases (hypothesis refuses max_examples=0: the
    checker must not pass it on), and they alone catch the GEMM+BatchNorm fold's dropped premise."""
    mutant = without_fact("gemm-bn-fold", "eq(sc[sc.length() - 1]).to(sy[1])")
    check_rule_cases(RULES["gemm-bn-fold"], 0, 12, quick=True)
    with pytest.raises(AssertionError, match="gemm-bn-fold-premise-dropped"):
        check_rule_cases(mutant, 0, 12, quick=True)


def test_variadic_sink_without_its_scalar_operand_premise_is_caught():
    """Without ``operands[1] = s`` the -ts sink takes any scalar-shaped tensor for s: the counter puts
    another one in the e-graph."""
    mutant = without_fact("sum-transpose-sink-ts", "eq(operands[1]).to(in1)")
    check_rule_cases(RULES["sum-transpose-sink-ts"], 2, 12, quick=True)
    with pytest.raises(AssertionError, match="sum-transpose-sink-ts-premise-dropped"):
        check_rule_cases(mutant, 2, 12, quick=True)


@pytest.mark.parametrize("premise", ["sy.length() < 6", "Vec[i64](1, 1, 1).append(ss)[",
                                     "Vec[i64](1, 1).append(ss, Vec[i64](1))[",
                                     "Vec[i64](1).append(ss, Vec[i64](1, 1))["])
def test_conv_fold_without_a_spatial_premise_is_caught_by_its_first_counter_case(premise):
    """Each counter case of the conv Mul/Add folds breaks every premise on s at once (one graph): an s
    varying along each spatial axis, or along the last of 4 (past the rank the premises check)."""
    mutant = without_fact("conv-mul-fold", premise)
    with pytest.raises(AssertionError, match="conv-mul-fold-premise-dropped"):
        check_rule_cases(mutant, 1, 1, quick=True)


def test_where_sink_without_its_explicit_perm_premise_is_caught():
    """Where over two transposed operands and a scalar: unset perms over operands of different ranks
    (each reversing its own axes) are no one perm; the counter has such a case in every graph."""
    mutant = without_fact("where-transpose-sink-tts", "eq(p.length()).to(i64(1))")
    with pytest.raises(AssertionError, match="where-transpose-sink-tts-premise-dropped"):
        check_rule_cases(mutant, 1, 4, quick=True)  # the first case's all-false condition hides it


def test_prelu_sinks_empty_perm_premise_is_implied_by_prelus_typing():
    """The premise refuses only T(x, []) of a scalar x, where no valid graph has a slope of shape (1,)
    (it must broadcast to X): dropping it gives an equivalent mutant."""
    from tensoregg.errors import ShapeError
    from tensoregg.ir import Graph, Node, TensorType

    (mutant,) = [m for m in mutants(RULES["prelu-transpose-sink-ts"]) if m.dropped.startswith("p.push(")]
    assert "slope broadcasts to X" in mutant.equivalent
    with pytest.raises(ShapeError, match="slope"):
        Graph({"x": TensorType(np.dtype(np.float32), ())}, {"s": np.ones((1,), np.float32)},
              [Node("PRelu", ("x", "s"), ("y",))], ["y"])


def test_identical_tells_signed_zeros_and_infinities_apart_but_not_nans():
    assert_identical(np.array([np.nan, 1.0], np.float32), np.array([-np.nan, 1.0], np.float32), "nan")
    with pytest.raises(AssertionError, match="IEEE"):
        assert_identical(np.array([-0.0], np.float32), np.array([0.0], np.float32), "zero")
    with pytest.raises(AssertionError, match="IEEE"):
        assert_identical(np.array([np.inf], np.float16), np.array([-np.inf], np.float16), "inf")


SAMPLE = ("neg-of-sub", "abs-of-neg", "transpose-compose-rank2")


def test_mutation_tool_kills_the_mutants_of_a_sample():
    scores = score([RULES[n] for n in SAMPLE], examples=2, premise_breaking=4)
    text = report(scores)
    assert all(not s.survivors for s in scores.values()), text
    assert sum(s.killed for s in scores.values()) >= 10 and scores["algebra"].equivalent == 3, text


def test_mutants_cover_each_kind():
    kinds = {m.kind for n in ("transpose-compose-rank2", "matmul-add-to-gemm") for m in mutants(RULES[n])
             if viable(m)}
    assert kinds == {"drop", "swap", "const", "axis"}


def test_a_sound_rule_survives_its_own_check():
    (mutant,) = [m for m in mutants(RULES["sub-of-neg"]) if m.kind == "swap"]
    assert not run_mutant(mutant, 2, 4).killed  # a + b = b + a: an equivalent mutant
    assert mutant.commuted == "Add" and "commute" in mutant.equivalent


def test_equivalent_mutants_are_known_by_what_they_change_not_their_position():
    """The BN folds' equivalent mutants (saturate of the zero's CastLike, Flatten(t, 0) of a 1-D t,
    scale and mean swapped around a zero vector) are recognised by the mutated text, whatever their
    number; a mutant of the same kind elsewhere in the rule is not."""
    found = {m.name: m for n in ("conv-bn-fold-no-bias", "gemm-bn-fold-no-c") for m in mutants(RULES[n])}
    why = {n: m.equivalent for n, m in found.items() if m.kind != "drop"}
    assert sum("saturate" in (w or "") for w in why.values()) >= 4
    assert sum("symmetric in scale and mean" in (w or "") for w in why.values()) == 2
    assert any(w is None for n, w in why.items() if "~const" in n)


@pytest.mark.parametrize("family", sorted(RULESETS))
def test_family_in_context(family):
    """Every family, for several iterations, on 200+ programs built from its rules' witnesses (25 per
    e-graph), each e-graph's programs as encoded and at random checked against the reference."""
    rules = RULESETS[family].rules
    checked = []

    @settings(max_examples=8 if family != "winograd" else 2, deadline=None, database=None,
              phases=(Phase.explicit, Phase.generate))
    @given(st.data())
    def check(data):
        cases = [data.draw(data.draw(st.sampled_from(rules)).example()) for _ in range(25)]
        check_in_context(RULESETS[family], cases, iterations=3, choices=3)
        checked.append(len(cases))

    check()
    assert sum(checked) >= (200 if family != "winograd" else 50)


def test_an_unsound_rule_fails_in_context():
    from tensoregg.ir import Graph, Node, TensorType
    from tensoregg.ir.terms import CONSTRUCTORS
    from tensoregg.rules.algebra import a
    from tensoregg.rules.registry import Family

    relu, neg = CONSTRUCTORS["Relu"].fn, CONSTRUCTORS["Neg"].fn
    bad = Family("bad", "")
    bad.rewrite("relu-drops-neg", "wrong", relu(neg(a)), relu(a), example=lambda: None)
    x = np.array([-2.0, 0.5], np.float32)
    nodes = [Node("Neg", ("x",), ("v",)), Node("Relu", ("v",), ("y",))]
    graph = Graph({"x": TensorType.of(x)}, {}, nodes, ["y"])
    with pytest.raises(AssertionError, match="family bad"):
        check_in_context(bad, [(graph, {"x": x})] * 3, choices=8)


def test_a_rule_that_sets_a_wrong_shape_fact_is_caught():
    """Relu(x) = Relu(-(-x)) is sound, but giving the new term -x a wrong shape misleads later rules."""
    from egglog import Vec, i64, set_, union

    from tensoregg.ir import Graph, Node, TensorType
    from tensoregg.ir.terms import CONSTRUCTORS, dtype_of, shape_of
    from tensoregg.rules.algebra import a
    from tensoregg.rules.registry import Family
    from tensoregg.testing import check_rule

    relu, neg = CONSTRUCTORS["Relu"].fn, CONSTRUCTORS["Neg"].fn
    bad = Family("bad", "")
    rule = bad.rule("relu-of-negs-misshaped", "wrong shape", [relu(a)],
                    [union(relu(a)).with_(relu(neg(neg(a)))), set_(shape_of(neg(a))).to(Vec[i64](i64(7))),
                     set_(dtype_of(neg(a))).to("float32")], example=lambda: None)
    x = np.array([-2.0, 0.5], np.float32)
    graph = Graph({"x": TensorType.of(x)}, {}, [Node("Relu", ("x",), ("y",))], ["y"])
    with pytest.raises(AssertionError, match=r"the e-graph says .* has shape \(7,\)"):
        check_rule(rule, graph, {"x": x})


def test_a_rule_that_makes_egglog_panic_fails_its_check_naming_the_rule():
    """An index past a perm's end panics inside egglog: check_rule reports it as the rule's failure
    (an AssertionError naming the rule and the panic), and the mutation tool counts it killed."""
    (mutant,) = [m for m in mutants(RULES["transpose-compose-rank1"]) if m.name.endswith("~axis2")]
    with pytest.raises(AssertionError, match=r"rule transpose-compose-rank1~axis2: egglog failed running it "
                                             r"\(.*Panic"):
        check_rule_cases(mutant.rule, 1, 0, quick=True)
    outcome = run_mutant(mutant, 1, 0)
    assert outcome.killed and "egglog failed" in outcome.how


def test_mutation_tool_stops_a_check_past_its_time_limit():
    """A check over ``timeout`` is stopped with its worker process and reported apart, not as a kill;
    the next mutant is still checked (by a fresh worker)."""
    todo = mutants(RULES["neg-of-sub"])[:2]
    assert [r for _, r, _ in outcomes(todo, 1, 0, timeout=0.001)] == ["timeout", "timeout"]


def test_only_an_is_constant_premise_counts_as_a_constant_leaf_one():
    """Dropping ``eq(w).to(Tensor.const(w_name))`` only makes a rule pay less; dropping the shape of a
    constant leaf (the merges' weights) or a pattern over one is a real mutant."""
    bn = {m.dropped: m for m in mutants(RULES["conv-bn-fold"]) if m.kind == "drop"}
    assert "constant-leaf" in bn["eq(w).to(Tensor.const(w_name))"].equivalent
    merge = {m.dropped: m for m in mutants(RULES["matmul-merge-parallel-2"]) if m.kind == "drop"}
    assert merge["eq(shape_of(Tensor.const(w0))).to(sw)"].equivalent is None
    assert all(m.equivalent is None for d, m in merge.items() if d.startswith("eq(y"))


def test_a_premise_changed_into_a_copy_of_another_is_that_premise_dropped():
    """add-merge-split-2's axis mutant that states part 1's shape in place of part 0's drops part 0's
    shape premise, which the others imply: equivalent, for that reason."""
    (mutant,) = [m for m in mutants(RULES["add-merge-split-2"]) if m.replaced]
    assert ".get(0)" in mutant.replaced and ".get(1)" in mutant.changed
    assert mutant.equivalent.startswith("states another premise again")
