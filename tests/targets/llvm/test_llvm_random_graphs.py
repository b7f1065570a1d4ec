"""Differential test: random small graphs compiled for llvm (optimized, in guard mode) against the
reference interpreter on the unoptimized graph."""

from hypothesis import given, settings

import tensoregg
from tensoregg.ir import run_graph
from tensoregg.targets.llvm import NativeModel
from tensoregg.testing import assert_same, graphs


@settings(max_examples=40)
@given(graphs())
def test_llvm_matches_the_reference(case):
    graph, feeds = case
    want = run_graph(graph, feeds)
    optimized = tensoregg.compile(graph, "ref").graph
    got = NativeModel(optimized, guard=64).run(feeds)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_same(g, w, f"output {k}", rtol=1e-4, atol=1e-5)
