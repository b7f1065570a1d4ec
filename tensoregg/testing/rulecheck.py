"""Rule checks that can fail: a rule is checked on its own ``example`` witnesses (it must fire and be
right) and on cases that break its premises, where it may fire only if it is still right.

The premise-breaking cases come from the rule's ``counter`` strategy (declared next to the rule)
and from two sweeps derived from its example (``derived_cases``), so that every rule gets them
without code of its own:

- **dtypes**: the example with its data (every array of its first input's dtype) cast to another
  dtype of ``DTYPES``; a rule whose dtype premise was dropped then meets a dtype where its law fails;
- **IEEE specials**: for exact rules, elements of its float inputs set to -0, +-inf or NaN, compared
  bit for bit (``assert_identical``), so that a law that fails on -0 or infinities is caught.

A derived case that is not a valid graph (an op that does not take the new dtype) is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st

from tensoregg.errors import TensoreggError
from tensoregg.ir.graph import Graph
from tensoregg.ir.types import TensorType
from tensoregg.rules.witness import Case, merged
from tensoregg.testing import check_rule

DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8")
"""The dtypes an example's data is swept over."""
SPECIALS = (-0.0, math.inf, -math.inf, math.nan)
"""IEEE values that an exact rule's float inputs are drawn with."""

def retyped(graph: Graph, feeds: Mapping[str, np.ndarray], dtype: str) -> Case | None:
    """``graph`` with its data (inputs and constants of its first input's dtype) cast to ``dtype``;
    None when that is not a valid graph or the dtype is the data's own."""
    if not graph.inputs:
        return None
    data = next(iter(graph.inputs.values())).dtype
    new = np.dtype(dtype)
    if new == data:
        return None

    def cast(v: np.ndarray) -> np.ndarray:
        if v.dtype != data:
            return v
        with np.errstate(all="ignore"):
            return v.astype(new)

    new_feeds = {k: cast(np.asarray(v)) for k, v in feeds.items()}
    consts = {k: cast(v) for k, v in graph.initializers.items()}
    try:
        return Graph({k: TensorType.of(v) for k, v in new_feeds.items()}, consts, graph.nodes,
                     graph.outputs), new_feeds
    except TensoreggError:
        return None


@st.composite
def with_specials(draw: Any, case: Case) -> Case:
    """``case`` with some elements of its float inputs and constants set to -0, +-inf or NaN."""
    graph, feeds = case

    def spiked(v: np.ndarray) -> np.ndarray:
        if v.dtype.kind != "f" or v.size == 0:
            return v
        v = v.copy()
        flat = v.reshape(-1)
        for k in draw(st.lists(st.integers(0, v.size - 1), min_size=1, max_size=max(1, v.size // 2))):
            flat[k] = draw(st.sampled_from(SPECIALS))
        return v

    new_feeds = {k: spiked(np.asarray(v)) for k, v in feeds.items()}
    consts = {k: spiked(v) for k, v in graph.initializers.items()}
    return Graph(dict(graph.inputs), consts, graph.nodes, graph.outputs), new_feeds


def derived_cases(rule: Any) -> Any:
    """Strategy of (Graph, feeds) or None (a case that is not a valid graph): the rule's example
    retyped (``DTYPES``) and, for exact rules, with IEEE specials."""
    assert rule.example is not None, f"rule {rule.name} has no example"
    sweep = st.tuples(rule.example(), st.sampled_from(DTYPES))
    kinds = [sweep.map(lambda c: retyped(c[0][0], c[0][1], c[1]))]
    if rule.exact:
        kinds.append(rule.example().flatmap(with_specials))
    return st.one_of(*kinds)


def _check_premise_case(rule: Any, case: Case | None) -> None:
    """check_rule on a premise-breaking case: firing is allowed, a wrong result is not. A case the
    reference interpreter itself rejects (an op undefined on the new values) is skipped."""
    if case is None:
        return
    graph, feeds = case
    from tensoregg.ir import run_graph

    try:
        with np.errstate(all="ignore"):
            run_graph(graph, feeds)
    except TensoreggError:
        return
    with np.errstate(all="ignore"):
        check_rule(rule, graph, feeds, must_fire=False)


def check_rule_cases(rule: Any, examples: int = 6, premise_breaking: int = 6, *,
                     quick: bool = False) -> None:
    """``check_rule`` on ``examples`` random instances of the rule's example (it must fire and be
    right), then on ``premise_breaking`` cases of its ``counter`` strategy if it has one and as many
    ``derived_cases`` (it may fire only where right). Raises AssertionError naming the rule and the
    case on the first failure. ``quick``: derandomized, no shrinking of a failing case (for the
    mutation tool)."""
    assert rule.example is not None, f"rule {rule.name} has no example strategy, so it cannot be checked"
    common: dict[str, Any] = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}
    # settings refuses max_examples=0, and on_examples' source (which seeds its derandomized draws,
    # on which the mutation kills rest) stays as it is: it is built with 1 and not run
    run_examples, examples = examples, max(examples, 1)
    if quick:
        common.update(derandomize=True, phases=(Phase.explicit, Phase.generate),
                      print_blob=False, verbosity=Verbosity.quiet)

    @settings(max_examples=examples, **common)
    @given(st.data())
    def on_examples(data: st.DataObject) -> None:
        with np.errstate(all="ignore"):
            check_rule(rule, *data.draw(rule.example()))

    def on(cases: Any) -> Any:
        @settings(max_examples=premise_breaking, **common)
        @given(st.data())
        def check(data: st.DataObject) -> None:
            _check_premise_case(rule, data.draw(cases()))

        return check

    if run_examples:
        on_examples()
    if premise_breaking and rule.counter is not None:
        on(rule.counter)()
    if premise_breaking:
        on(lambda: derived_cases(rule))()


def random_choice(classes: Mapping[str, list[Any]], rng: np.random.Generator) -> dict[str, str]:
    """One e-node per e-class, chosen at random among those whose inputs are already chosen, so the
    program is acyclic: every class reachable from the leaves gets a node."""
    choice: dict[str, str] = {}
    pending = dict(classes)
    while pending:
        ready = {c: [n for n in ns if all(i == "" or i in choice for i in n.inputs)]
                 for c, ns in pending.items()}
        ready = {c: ns for c, ns in ready.items() if ns}
        if not ready:
            break  # the rest is unreachable from the leaves (only cyclic nodes)
        for c, ns in ready.items():
            choice[c] = ns[int(rng.integers(len(ns)))].id
            del pending[c]
    return choice


def check_in_context(family: Any, cases: Sequence[Case], *, iterations: int = 3, choices: int = 4,
                     seed: int = 0) -> int:
    """Run ``family``'s ruleset for up to ``iterations`` on the union of ``cases`` (one e-graph, so
    the saturation work is shared) and check ``choices`` random acyclic programs of the e-graph
    against the reference: bit for bit where every rule of the family is exact, else within the
    dtype tolerance. Returns how many programs were compared."""
    from tensoregg.ir import run_graph
    from tensoregg.ir.terms import decode, encode, parse, serialize
    from tensoregg.rules import Phase, saturate
    from tensoregg.testing import assert_identical, assert_same

    graph, feeds = merged(cases)
    enc = encode(graph)
    saturate(enc.egraph, [Phase(family.name, family.ruleset, max_iterations=iterations, max_nodes=50_000,
                                max_seconds=20.0)])
    js = serialize(enc.egraph)
    classes = parse(js)
    rng = np.random.default_rng(seed)
    picks = [random_choice(classes, rng) for _ in range(choices)]
    same = assert_identical if all(r.exact for r in family.rules) else assert_same
    with np.errstate(all="ignore"):
        want = run_graph(graph, feeds)
        for choice in picks:
            program = decode(js, choice, enc, classes)
            for out, got, ref in zip(graph.outputs, run_graph(program, feeds), want):
                same(got, ref, f"family {family.name}, output {out} of the program\n{program}")
    return len(picks)
