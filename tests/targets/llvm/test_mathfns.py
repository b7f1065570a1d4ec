"""Inline math functions of the llvm target against float64 numpy."""

import numpy as np

from tensoregg.ir import Graph, Node, TensorType
from tensoregg.targets.llvm import NativeModel

F32 = np.dtype(np.float32)


def test_exp_is_within_2_ulp_over_the_float32_range_and_handles_specials():
    x = np.concatenate([np.linspace(-110, 95, 100_001, dtype=np.float32),
                        np.random.default_rng(0).standard_normal(10_000).astype(np.float32)])
    graph = Graph({"x": TensorType(F32, x.shape)}, {}, [Node("Exp", ("x",), ("y",))], ["y"])
    got = NativeModel(graph).run({"x": x})[0].astype(np.float64)
    want = np.exp(x.astype(np.float64))
    normal = (want > np.finfo(np.float32).tiny) & (want < np.finfo(np.float32).max)
    ulp = np.spacing(want[normal].astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got[normal] - want[normal]) / ulp) <= 2.0
    tiny = want <= np.finfo(np.float32).tiny  # subnormal results: within one subnormal step
    assert np.max(np.abs(got[tiny] - want[tiny])) <= 2 * np.finfo(np.float32).smallest_subnormal
    assert np.all(np.isinf(got[want >= np.finfo(np.float32).max]))
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    graph = Graph({"x": TensorType(F32, (5,))}, {}, [Node("Exp", ("x",), ("y",))], ["y"])
    out = NativeModel(graph).run({"x": specials})[0]
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == 0.0 and out[3] == 1.0 and out[4] == 1.0
