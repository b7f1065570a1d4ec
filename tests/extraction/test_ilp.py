"""ILP extraction: valid, value-preserving programs never costlier than greedy; shared subterms
that greedy misses; cyclic e-graphs; the time limit."""

import time

import numpy as np
import pytest
from egglog import String, Vec, eq, i64, ne, rule, union, var

import tensoregg
from tensoregg.extraction.cost import analytic_cost
from tensoregg.extraction.greedy import dag_cost, extract_greedy, node_costs
from tensoregg.extraction.ilp import FALLBACK_GREEDY, OPTIMAL, TIME_LIMIT_FEASIBLE, extract_ilp
from tensoregg.extraction.view import build_view
from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.fold import fold_constants
from tensoregg.ir.terms import CONSTRUCTORS, Tensor, decode, encode, serialize, shape_of
from tensoregg.rules import RULESETS, Family, Phase, Rule, saturate
from tensoregg.targets import REF
from tensoregg.testing import assert_same, light_model

F32 = np.dtype(np.float32)
Add, Mul, Exp, Neg, Identity = (CONSTRUCTORS[n].fn for n in ("Add", "Mul", "Exp", "Neg", "Identity"))
MatMul, Concat, Split = (CONSTRUCTORS[n].fn for n in ("MatMul", "Concat", "Split"))
a, b, x = var("a", Tensor), var("b", Tensor), var("x", Tensor)

commutative = Family("test-commutative", "Add and Mul commute.")
commutative.rewrite("add-comm", "a + b = b + a", Add(a, b), Add(b, a))
commutative.rewrite("mul-comm", "a * b = b * a", Mul(a, b), Mul(b, a))

cyclic = Family("test-cyclic", "Rewrites that put a class inside its own subterms.")
cyclic.rewrite("exp-double-neg", "exp(x) = -(-exp(x))", Exp(x), Neg(Neg(Exp(x))))  # a 2-class cycle
cyclic.rewrite("exp-identity", "exp(x) = identity(exp(x))", Exp(x), Identity(Exp(x)))  # a self-loop


def _parallel_matmuls() -> Family:
    """MatMul(x, W1), MatMul(x, W2) -> Split(MatMul(x, Concat(W1, W2))).get(0 / 1), for constant
    weights of one shape (a multi-pattern rule with two unions)."""
    n1, n2, sw = var("n1", String), var("n2", String), var("sw", Vec[i64])
    w1, w2 = Tensor.const(n1), Tensor.const(n2)
    wide = Split(MatMul(x, Concat(Vec[Tensor](w1, w2), i64(-1))), Tensor.none(), i64(-1), Vec[i64](i64(2)))
    command = rule(eq(a).to(MatMul(x, w1)), eq(b).to(MatMul(x, w2)), ne(n1).to(n2),
                   eq(shape_of(w1)).to(sw), eq(shape_of(w2)).to(sw), name="merge-parallel-matmuls").then(
        union(a).with_(wide.get(0)), union(b).with_(wide.get(1)))
    family = Family("test-parallel", "Parallel MatMuls over a shared input become one.")
    law = "x@W1, x@W2 = split(x@[W1 W2])"
    family.rules.append(Rule("merge-parallel-matmuls", law, family.name, command, None))
    return family


def saturated(g: Graph, *families: Family):
    enc = encode(g)
    saturate(enc.egraph, [Phase(f.name, f.ruleset) for f in families])
    js = serialize(enc.egraph)
    return enc, js, build_view(js, enc)


def per_op(view, table):
    """Hand-set costs: table[op] for operators, 0 for leaves."""
    return {n.id: table.get(n.op, 0.0) for nodes in view.classes.values() for n in nodes}


def check_extraction(g: Graph, feeds, costs_of, *families: Family, **kwargs):
    """ILP-extract ``g`` saturated with ``families``: the choice must decode to a program that
    computes what ``g`` computes and cost no more than greedy's. Returns (choice, report, view, costs)."""
    enc, js, view = saturated(g, *families)
    costs = costs_of(view)
    choice, report = extract_ilp(view, costs, **kwargs)
    greedy = dag_cost(view, extract_greedy(view, costs), costs)
    assert report.objective == dag_cost(view, choice, costs) <= greedy == report.greedy_objective
    out = decode(js, choice, enc, view.classes)
    for k, (got, want) in enumerate(zip(run_graph(out, feeds), run_graph(g, feeds))):
        assert_same(got, want, f"output {k} of\n{out}")
    return choice, report, view, out


def analytic(view):
    return node_costs(view, analytic_cost, REF)


def small(nodes, outputs=("y",), inits=None):
    return Graph({"x": TensorType(F32, (2, 3))}, inits or {}, nodes, list(outputs))


X = np.arange(-3.0, 3.0, dtype=np.float32).reshape(2, 3)
SMALL_GRAPHS = {
    "relu-chain": small([Node("Relu", ("x",), ("r",)), Node("Relu", ("r",), ("y",))]),
    "shared-terms": small([Node("Neg", ("x",), ("n",)), Node("Neg", ("n",), ("nn",)),
                           Node("Identity", ("x",), ("i",)), Node("Add", ("nn", "i"), ("s",)),
                           Node("Add", ("i", "nn"), ("t",)), Node("Mul", ("s", "t"), ("y",)),
                           Node("Relu", ("s",), ("z",))], ("y", "z")),
    "dropout-abs": small([Node("Dropout", ("x",), ("d",)), Node("Abs", ("d",), ("p",)),
                          Node("Relu", ("p",), ("q",)), Node("Abs", ("q",), ("y",))]),
}


@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_ilp_choice_is_a_valid_program_no_costlier_than_greedy(name):
    _, report, _, out = check_extraction(SMALL_GRAPHS[name], {"x": X}, analytic, RULESETS["algebra"],
                                         commutative)
    assert report.status == OPTIMAL and report.bound <= report.objective * (1 + 1e-9)
    assert len(out.nodes) < len(SMALL_GRAPHS[name].nodes)


def test_ilp_on_a_zoo_model_matches_greedy_or_beats_it():
    g = tensoregg.compile(light_model("squeezenet"), "ref", optimize=False).graph
    feeds = {name: np.random.default_rng(0).standard_normal(t.shape).astype(t.dtype)
             for name, t in g.inputs.items()}
    _, report, _, _ = check_extraction(g, feeds, analytic, RULESETS["algebra"], commutative)
    assert report.status == OPTIMAL and report.variables > 0 and report.constraints > 0


def test_ilp_shares_one_wide_matmul_where_greedy_pays_two():
    rng = np.random.default_rng(1)
    weights = {w: rng.standard_normal((3, 4)).astype(np.float32) for w in ("w1", "w2")}
    g = small([Node("MatMul", ("x", "w1"), ("y",)), Node("MatMul", ("x", "w2"), ("z",))], ("y", "z"), weights)

    def costs_of(view):
        # each MatMul pays a kernel overhead: the wide one costs 12, a narrow one 10, Split 1
        def cost(n):
            if n.op == "MatMul":
                return 12.0 if view.types[n.inputs[1]][0].shape[-1] == 8 else 10.0
            return 1.0 if n.op == "Split" else 0.0
        return {n.id: cost(n) for nodes in view.classes.values() for n in nodes}

    _, report, _, out = check_extraction(g, {"x": X}, costs_of, _parallel_matmuls())
    assert (report.greedy_objective, report.objective, report.status) == (20.0, 13.0, OPTIMAL)
    assert sorted(n.op for n in fold_constants(out).nodes) == ["MatMul", "Split"]


def test_ilp_returns_an_acyclic_program_when_a_cycle_is_free():
    g = small([Node("Exp", ("x",), ("y",))])
    # -(-exp(x)) and identity(exp(x)) sit in exp(x)'s class: picking them for free would be a cycle
    _, report, _, out = check_extraction(g, {"x": X}, lambda v: per_op(v, {"Exp": 10.0}), cyclic)
    assert report.objective == 10.0 and report.status == OPTIMAL
    assert [n.op for n in out.nodes] == ["Exp"]


def test_ilp_breaks_the_cycle_of_an_involution():
    g = small([Node("Neg", ("x",), ("n",)), Node("Neg", ("n",), ("m",)), Node("Relu", ("m",), ("y",))])
    _, report, _, out = check_extraction(g, {"x": X}, analytic, RULESETS["algebra"])
    assert [n.op for n in out.nodes] == ["Relu"] and report.status == OPTIMAL


@pytest.fixture(scope="module")
def resnet():
    g = tensoregg.compile(light_model("resnet50"), "ref", optimize=False).graph
    enc, js, view = saturated(g, RULESETS["algebra"], commutative)
    return enc, js, view, analytic(view)


def test_ilp_without_time_falls_back_to_greedy(resnet):
    _, _, view, costs = resnet
    greedy = extract_greedy(view, costs)
    choice, report = extract_ilp(view, costs, time_limit=0.0, warm_start=greedy)
    assert report.status == FALLBACK_GREEDY and choice == greedy
    assert report.objective == report.greedy_objective and "time limit" in report.message.lower()


def test_ilp_honours_a_tiny_time_limit(resnet):
    enc, js, view, costs = resnet
    start = time.perf_counter()
    choice, report = extract_ilp(view, costs, time_limit=0.01)
    assert time.perf_counter() - start < 5.0
    assert report.status in (OPTIMAL, TIME_LIMIT_FEASIBLE, FALLBACK_GREEDY)
    assert report.objective <= report.greedy_objective
    assert decode(js, choice, enc, view.classes).outputs == enc.output_names
