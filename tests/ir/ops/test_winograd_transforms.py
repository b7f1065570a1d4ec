"""Winograd F(2x2, 3x3) ops (domain ``tensoregg``): hand-computed transforms, and the three
references around their product computing Conv for random shapes (the rule's equivalence is proved in
tests/rules/test_winograd.py)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.ops.winograd import DOMAIN
from tensoregg.ir.registry import get_op
from tensoregg.rules.winograd import PRODUCT
from tensoregg.testing import assert_same

F32 = np.float32
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], F32)
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], F32)


def run_op(op, inputs, attrs=None, *, expected):
    """Run one Winograd ``op`` node and compare with ``expected``."""
    names = [f"in{i}" for i in range(len(inputs))]
    graph = Graph({n: TensorType.of(a) for n, a in zip(names, inputs)}, {},
                  [Node(op, tuple(names), ("y",), attrs or {}, domain=DOMAIN)], ["y"])
    assert_same(run_graph(graph, dict(zip(names, inputs)))[0], np.asarray(expected, F32), op)


def test_transforms_by_hand():
    x = np.arange(16, dtype=F32).reshape(1, 1, 4, 4)  # one tile, no padding: d = x
    run_op("WinogradInput", [x], expected=(BT @ x[0, 0] @ BT.T).reshape(16, 1, 1, 1, 1))
    w = np.zeros((1, 1, 3, 3), F32)
    w[0, 0, 1, 1] = 1  # the centre tap: U = G[:, 1] G[:, 1]^T
    run_op("WinogradWeights", [w], expected=np.outer([0, .5, -.5, 0], [0, .5, -.5, 0]).reshape(16, 1, 1))
    m = np.zeros((16, 1, 1, 1, 1), F32)
    m[5] = 1  # xi = nu = 1: AT's column 1 is (1, 1)
    run_op("WinogradOutput", [m, np.array([2], F32)], {"output_shape": (1, 1, 2, 2)},
           expected=np.full((1, 1, 2, 2), 3))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5), st.integers(3, 9), st.integers(3, 9),
       st.integers(0, 1), st.integers(0, 2**32 - 1))
def test_the_three_references_compute_conv(n, c, k, h, w, pad, seed):
    rng = np.random.default_rng(seed)
    x, weights, bias = (rng.standard_normal(s).astype(F32) for s in ((n, c, h, w), (k, c, 3, 3), (k,)))
    pads = (pad,) * 4
    out = (n, k, h + 2 * pad - 2, w + 2 * pad - 2)
    u = get_op("WinogradWeights", DOMAIN).reference({}, weights)
    v = get_op("WinogradInput", DOMAIN).reference({"pads": pads}, x)
    y = get_op("WinogradOutput", DOMAIN).reference({"output_shape": out}, np.einsum(PRODUCT, u, v), bias)
    conv = get_op("Conv")
    want = conv.reference(conv.check_attrs({"pads": list(pads)}, "Conv"), x, weights, bias)
    assert_same(y, want, "Winograd", rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))
