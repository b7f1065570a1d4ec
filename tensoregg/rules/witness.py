"""Witness builders: hypothesis strategies of small Graphs on which a rule applies.

Used through each rule's ``example``; hypothesis is imported lazily (it is a test dependency).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import ml_dtypes
import numpy as np

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.types import TensorType


def chain(steps: Sequence[tuple[str, dict[str, Any]]], *, min_rank: int = 1, max_rank: int = 4,
          rank: int | None = None) -> Any:
    """Strategy of (Graph, feeds): a float32 input through the single-input ops of ``steps``."""
    from hypothesis import strategies as st

    from tensoregg.strategies import arrays, shapes

    rank_st = st.just(rank) if rank is not None else st.integers(min_rank, max_rank)

    def build(shape: tuple[int, ...], x: np.ndarray) -> tuple[Graph, dict[str, np.ndarray]]:
        nodes, value = [], "x"
        for k, (op, attrs) in enumerate(steps):
            out = "y" if k == len(steps) - 1 else f"v{k}"
            nodes.append(Node(op, (value,), (out,), attrs))
            value = out
        return Graph({"x": TensorType(np.dtype(np.float32), shape)}, {}, nodes, ["y"]), {"x": x}

    return rank_st.flatmap(lambda r: shapes(r, r)).flatmap(
        lambda shape: arrays(np.float32, shape).map(lambda x: build(shape, x)))


def int_min_chain(steps: Sequence[tuple[str, dict[str, Any]]]) -> Any:
    """Strategy of (Graph, feeds): a signed-integer input (int8 to int64) holding its dtype's minimum
    (where |x| and -x wrap) among random values, through the single-input ops of ``steps``."""
    from hypothesis import strategies as st

    from tensoregg.strategies import shapes

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        dtype = np.dtype(draw(st.sampled_from(["int8", "int16", "int32", "int64"])))
        shape = draw(shapes(1, 3))
        x = np.random.default_rng(draw(st.integers(0, 2**16))).integers(-100, 100, shape).astype(dtype)
        x.reshape(-1)[draw(st.integers(0, x.size - 1))] = np.iinfo(dtype).min
        nodes, value = [], "x"
        for k, (op, attrs) in enumerate(steps):
            out = "y" if k == len(steps) - 1 else f"v{k}"
            nodes.append(Node(op, (value,), (out,), attrs))
            value = out
        return Graph({"x": TensorType(dtype, shape)}, {}, nodes, ["y"]), {"x": x}

    return build()


def permutations(rank: int) -> Any:
    """Strategy of permutations of ``range(rank)`` as tuples."""
    from hypothesis import strategies as st

    return st.permutations(list(range(rank))).map(tuple)


Shape = tuple[int, ...]
Case = tuple[Graph, dict[str, np.ndarray]]
"""A witness: a graph and the values of its inputs."""


def np_dtype(name: str) -> np.dtype:
    return np.dtype(getattr(ml_dtypes, name, name))


def _values(draw: Any, dtype: np.dtype, shape: Shape) -> np.ndarray:
    """Small values of ``dtype`` mixed with its extremes: min/max and for floats +-inf, NaN, -0, the
    smallest normal and subnormal numbers."""
    from hypothesis import strategies as st

    pool: Any
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        pool = st.sampled_from([int(info.min), int(info.max)]) | st.integers(max(-3, int(info.min)), 3)
    elif dtype == np.bool_:
        pool = st.booleans()
    else:
        f = ml_dtypes.finfo(dtype)
        pool = st.sampled_from([float(f.max), -float(f.max), float(f.tiny), float(f.smallest_subnormal),
                                math.inf, -math.inf, math.nan, -0.0]) | st.integers(-3, 3).map(float)
    n = math.prod(shape)
    xs = draw(st.lists(pool, min_size=n, max_size=n))
    return np.array(xs, dtype if dtype.kind in "biu" else np.float64).astype(dtype).reshape(shape)


def _case(feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray],
          steps: Sequence[tuple[str, tuple[str, ...], dict[str, Any]]]
          ) -> tuple[Graph, dict[str, np.ndarray]]:
    """(Graph, feeds) of ``steps`` (op, inputs, attributes): step k writes ``v{k}``, the last ``y``."""
    nodes = [Node(op, ins, ("y" if k == len(steps) - 1 else f"v{k}",), attrs)
             for k, (op, ins, attrs) in enumerate(steps)]
    return Graph({n: TensorType.of(v) for n, v in feeds.items()}, consts, nodes, ["y"]), feeds


def binary_case(steps: Sequence[tuple[str, ...]], dtypes: Sequence[str]) -> Any:
    """Strategy: inputs a, b of one of ``dtypes``, shapes broadcasting together, through ``steps``
    (op, *inputs)."""
    from hypothesis import strategies as st

    from tensoregg.strategies import broadcastable_shapes, shapes

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        dtype, base = np_dtype(draw(st.sampled_from(dtypes))), draw(shapes(0, 3, max_side=3))
        feeds = {n: _values(draw, dtype, draw(broadcastable_shapes(base))) for n in "ab"}
        return _case(feeds, {}, [(op, tuple(ins), {}) for op, *ins in steps])

    return build()


def cast_chain(op: str, routes: Sequence[tuple[str, ...]]) -> Any:
    """Strategy: x of dtype ``route[0]`` cast (by Cast or CastLike) to each later dtype in turn."""
    from hypothesis import strategies as st
    from onnx import helper

    from tensoregg.strategies import shapes

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        route = [np_dtype(t) for t in draw(st.sampled_from(routes))]
        feeds = {"x": _values(draw, route[0], draw(shapes(0, 2, max_side=3)))}
        consts = {f"t{k}": np.zeros((), t) for k, t in enumerate(route[1:])}
        steps = [(op, ("x" if k == 0 else f"v{k - 1}", f"t{k}"), {}) if op == "CastLike" else
                 (op, ("x" if k == 0 else f"v{k - 1}",), {"to": helper.np_dtype_to_tensor_dtype(t)})
                 for k, t in enumerate(route[1:])]
        return _case(feeds, consts if op == "CastLike" else {}, steps)

    return build()


def _without(shape: Shape, axes: Sequence[int]) -> Shape:
    return tuple(d for k, d in enumerate(shape) if k not in axes)


ViewNode = tuple[dict[str, Any], np.ndarray | None]
"""(attributes, second input or None) of a view node."""


def _view_options(op: str, src: Shape, dst: Shape) -> list[ViewNode]:
    """(attributes, second input or None) of the ``op`` nodes that turn shape ``src`` into ``dst``."""
    ints = partial(np.array, dtype=np.int64)
    if op == "Reshape" and math.prod(src) == math.prod(dst):  # dst; with one -1; 0 copying src dims
        targets = [dst, tuple(0 if k < len(src) and src[k] == d else d for k, d in enumerate(dst)),
                   *[(*dst[:k], -1, *dst[k + 1:]) for k in range(len(dst))]]
        return [({}, ints(t)) for t in targets] + [({"allowzero": 1}, ints(dst))]
    if op == "Flatten":  # axis k or, below the rank, k - rank
        axes = [k for k in range(len(src) + 1) if (math.prod(src[:k]), math.prod(src[k:])) == dst]
        flat: list[ViewNode] = [({"axis": k}, None) for k in axes]
        return flat + [({"axis": k - len(src)}, None) for k in axes if k < len(src)]
    big, small = (src, dst) if op == "Squeeze" else (dst, src)
    if op in ("Squeeze", "Unsqueeze") and len(big) >= len(small):  # axes of 1s of the larger shape
        ones = [k for k, d in enumerate(big) if d == 1]
        subsets = [s for s in itertools.combinations(ones, len(big) - len(small))
                   if _without(big, s) == small]
        found: list[ViewNode] = [({}, ints([k - len(big) * neg for k in s]))
                                 for s in subsets for neg in (0, 1)]
        return found + ([({}, None)] if op == "Squeeze" and _without(src, ones) == dst else [])
    if op == "Expand" and dst == (1,) * (len(dst) - len(src)) + src:  # count kept: leading 1s only
        return [({}, ints(dst)), ({}, ints((1,) * len(dst)))]
    return []


def view_chain(ops: Sequence[str], same_end: bool = True) -> Any:
    """Strategy: x through the view ops ``ops`` (one or two), the last giving back x's shape (not
    ``same_end``: another shape); the middle shape is a reshape of x (flat, a 1 added or removed,
    two factors, reversed) when it can be."""
    from hypothesis import assume
    from hypothesis import strategies as st

    from tensoregg.strategies import shapes

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        rank = 2 if "Flatten" in ops else draw(st.integers(1, 3))
        shape = draw(shapes(rank, rank, max_side=3))
        n = math.prod(shape)
        mids = {shape, (n,), (1, n), (1, *shape), shape[::-1],
                *[(*shape[:k], 1, *shape[k:]) for k in range(rank)],
                *[_without(shape, (k,)) for k in range(rank) if shape[k] == 1],
                *[(math.prod(shape[:k]), math.prod(shape[k:])) for k in range(rank + 1)]}
        routes: dict[bool, list[Any]] = {True: [], False: []}  # by whether the middle shape is x's
        for final in [shape] if same_end else sorted(mids - {shape}):
            for mid_shape in sorted(mids if len(ops) > 1 else {final}):
                ends = [shape, *[mid_shape] * (len(ops) - 1), final]
                routes[mid_shape == shape] += itertools.product(
                    *[_view_options(op, src, dst) for op, src, dst in zip(ops, ends, ends[1:])])
        options = routes[False] or routes[True]
        assume(options)  # (not ``same_end``) no other shape these ops reach from x's
        route = draw(st.sampled_from(options))
        consts = {f"s{k}": second for k, (_, second) in enumerate(route) if second is not None}
        steps = [(op, ("x" if k == 0 else f"v{k - 1}",) + ((f"s{k}",) if second is not None else ()), attrs)
                 for k, (op, (attrs, second)) in enumerate(zip(ops, route))]
        dtype = np_dtype(draw(st.sampled_from(["float32", "int64", "bool"])))
        return _case({"x": _values(draw, dtype, shape)}, consts, steps)

    return build()


def merged(cases: Sequence[Case]) -> Case:
    """The disjoint union of ``cases``: case k's values renamed ``g{k}.name``, its outputs in order."""
    inputs: dict[str, TensorType] = {}
    consts: dict[str, np.ndarray] = {}
    nodes: list[Node] = []
    outputs: list[str] = []
    feeds: dict[str, np.ndarray] = {}
    for k, (graph, case_feeds) in enumerate(cases):
        def name(n: str, k: int = k) -> str:
            return f"g{k}.{n}" if n else n

        inputs.update({name(n): t for n, t in graph.inputs.items()})
        consts.update({name(n): v for n, v in graph.initializers.items()})
        feeds.update({name(n): v for n, v in case_feeds.items()})
        nodes += [Node(n.op, tuple(map(name, n.inputs)), tuple(map(name, n.outputs)), n.attrs,
                       name(n.name), n.domain, n.schedule) for n in graph.nodes]
        outputs += [name(o) for o in graph.outputs]
    return Graph(inputs, consts, nodes, outputs), feeds
