"""Integer MatMul and Gemm (int32, int64) compiled natively: products and sums wrap in the operands'
dtype as numpy's do (so values are drawn from the whole range), fused epilogues included; a scaled
integer Gemm, which the reference computes in float64 and truncates, is refused by name."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensoregg
from tensoregg.errors import UnsupportedOperator
from tensoregg.ir import Graph, Node, TensorType, run_graph

INTS = [np.dtype(np.int32), np.dtype(np.int64)]


def full_range(data, dtype, shape):
    info = np.iinfo(dtype)
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    return np.random.default_rng(seed).integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def assert_compiled_exactly(graph, feeds, targets=("llvm", "interp")):
    want = run_graph(graph, feeds)
    for target in targets:
        module = tensoregg.compile(graph, target)
        for threads in (1, 2) if target == "llvm" else (1,):
            module.num_threads = threads
            for name, got, w in zip(graph.outputs, module.run(**feeds), want):
                assert got.dtype == w.dtype and np.array_equal(got, w), (target, threads, name)


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(INTS), st.integers(1, 40), st.integers(1, 70), st.integers(1, 40),
       st.sampled_from(["", "Add", "Add+Relu"]), st.booleans(), st.data())
def test_integer_matmul_wraps_as_numpy(dtype, m, k, n, epilogue, batched, data):
    """MatMul (batched or not, constant or runtime B) with an optional bias and Relu, which the fusion
    rules turn into one FusedMatMul: the same bits as the reference on full-range values."""
    a_shape = (2, m, k) if batched else (m, k)
    inputs = {"a": TensorType(dtype, a_shape)}
    consts = {"c": full_range(data, dtype, (n,))}
    if data.draw(st.booleans(), label="constant B"):
        consts["w"] = full_range(data, dtype, (k, n))
    else:
        inputs["w"] = TensorType(dtype, (k, n))
    nodes, out = [Node("MatMul", ("a", "w"), ("y",))], "y"
    if epilogue:
        nodes.append(Node("Add", ("y", "c"), ("s",)))
        out = "s"
    if epilogue == "Add+Relu":
        nodes.append(Node("Relu", ("s",), ("r",)))
        out = "r"
    used = {k: v for k, v in consts.items() if any(k in nd.inputs for nd in nodes)}
    graph = Graph(inputs, used, nodes, [out])
    feeds = {name: full_range(data, dtype, t.shape) for name, t in inputs.items()}
    assert_compiled_exactly(graph, feeds)


@pytest.mark.parametrize("dtype", INTS)
@pytest.mark.parametrize("trans_a, trans_b, beta", [(0, 0, 1.0), (1, 1, 0.0), (0, 1, 1.0)])
def test_integer_gemm_with_unit_alpha_wraps_as_numpy(dtype, trans_a, trans_b, beta):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    a, w, c = (rng.integers(info.min, info.max, s, dtype=dtype) for s in [(9, 6) if trans_a else (6, 9),
                                                                       (5, 9) if trans_b else (9, 5), (5,)])
    graph = Graph({"a": TensorType(dtype, a.shape)}, {"w": w, "c": c},
                  [Node("Gemm", ("a", "w", "c"), ("y",), {"alpha": 1.0, "beta": beta, "transA": trans_a,
                                                         "transB": trans_b})], ["y"])
    assert_compiled_exactly(graph, {"a": a})


@pytest.mark.parametrize("alpha, beta", [(0.5, 1.0), (1.0, 2.0)])
def test_a_scaled_integer_gemm_is_refused_naming_its_attributes(alpha, beta):
    i32 = np.dtype(np.int32)
    graph = Graph({"a": TensorType(i32, (3, 4))}, {"w": np.ones((4, 2), i32)},
                  [Node("Gemm", ("a", "w"), ("y",), {"alpha": alpha, "beta": beta})], ["y"])
    refusal = rf"integer Gemm \(int32\) with alpha {alpha} and beta {beta}"
    with pytest.raises(UnsupportedOperator, match=refusal):
        tensoregg.compile(graph, "llvm")
