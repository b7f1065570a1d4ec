"""Parallel merging (Tensat's multi-pattern rules): n MatMuls, Gemms or Convs that read one input
with constant weights of one shape become one op over the concatenated weights, and a Split cuts
its result back into the n parts; the n constant biases added to a Split's parts become one Add
before the Split.

The IR's Split takes part sizes as a constant input (which a rule cannot invent) or as
``num_outputs`` equal parts, so only ops of equal output width merge: Q/K/V projections, for one.
Weights and biases match only as ``Tensor.const`` leaves, so a merged op (whose weight is a Concat)
never matches again: the family saturates after two rounds of matches (ops, then biases). Every
ordering fires (egglog cannot order names), so n ops sharing an input add n!/(n-k)! k-way merged
forms: bounded, and small for k <= 3 (a transformer layer: 179 -> 408 table rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import combinations
from typing import Any

import numpy as np
from egglog import String, Vec, eq, f64, i64, ne, set_, union, var

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.terms import CONSTRUCTORS, Tensor, dtype_of, shape_of, term
from tensoregg.ir.types import TensorType
from tensoregg.rules.registry import Example, Family
from tensoregg.rules.witness import Case, merged

parallel = Family("parallel", __doc__ or "")

MatMul, Concat, Add = (CONSTRUCTORS[n].fn for n in ("MatMul", "Concat", "Add"))
WAYS = (2, 3)
x, m = var("x", Tensor), var("m", Tensor)
sw, sb, sy = var("sw", Vec[i64]), var("sb", Vec[i64]), var("sy", Vec[i64])
dt = var("dt", String)
split_axis = var("split_axis", i64)
alpha, beta, trans_a, trans_b = var("alpha", f64), var("beta", f64), var("trans_a", i64), var("trans_b", i64)
auto_pad = var("auto_pad", String)
dilations, kernel, pads, strides = (var(n, Vec[Vec[i64]]) for n in ("dilations", "kernel", "pads", "strides"))

Op = Callable[[Any, Any, Any], Any]
"""Builds an op's term from (input, weight, bias); the bias is ``Tensor.none()`` when absent."""


def _consts(prefix: str, n: int) -> tuple[list[Any], list[Any]]:
    """``n`` constant leaves with name variables ``prefix0..``: (names, leaves)."""
    names = [var(f"{prefix}{k}", String) for k in range(n)]
    return names, [Tensor.const(s) for s in names]


def _last(shape: Any) -> Any:
    return shape.length() - 1


def _widen(shape: Any, axis: Any, n: int) -> Any:
    """``shape`` with dim ``axis`` ``n`` times as large: the shape of n parts joined on ``axis``."""
    return shape.set(axis, shape[axis] * i64(n))


def _facts(t: Any, shape: Any, dtype: Any) -> list[Any]:
    """Type facts for a term a right-hand side creates, so later rules can test its shape."""
    return [set_(shape_of(t)).to(shape), set_(dtype_of(t)).to(dtype)]


def _parts(t: Any, axis: Any, n: int) -> list[Any]:
    """``t`` cut into ``n`` equal parts along ``axis``."""
    split = term("Split", t, Tensor.none(), axis=axis, num_outputs=Vec[i64](i64(n)))
    return [split.get(k) for k in range(n)]


def _merge_parallel(name: str, law: str, n: int, op: Op, *, weight_axis: Any, out_axis: Any, bias: bool,
                    when: Sequence[Any], example: Example, counter: Example) -> None:
    """y_k = op(x, W_k[, B_k]) for k < n, the W_k distinct constants of one shape (the B_k too)
    => y_k = Split(op(x, Concat(W, weight_axis)[, Concat(B, last)]), n parts on out_axis)[k]."""
    names, weights = _consts("w", n)
    biases = _consts("b", n)[1] if bias else [Tensor.none()] * n
    ys = [var(f"y{k}", Tensor) for k in range(n)]
    facts: list[Any] = [eq(y).to(op(x, w, b)) for y, w, b in zip(ys, weights, biases)]
    facts += [eq(shape_of(w)).to(sw) for w in weights]
    facts += [eq(shape_of(b)).to(sb) for b in biases if bias]
    facts += [ne(a).to(b) for a, b in combinations(names, 2)]
    facts += [eq(shape_of(ys[0])).to(sy), eq(dtype_of(ys[0])).to(dt), *when]
    wide_w = Concat(Vec[Tensor](*weights), weight_axis)
    wide_b = Concat(Vec[Tensor](*biases), _last(sb)) if bias else Tensor.none()
    merged = op(x, wide_w, wide_b)
    actions = [union(y).with_(part) for y, part in zip(ys, _parts(merged, out_axis, n))]
    actions += _facts(wide_w, _widen(sw, weight_axis, n), dt) + _facts(merged, _widen(sy, out_axis, n), dt)
    if bias:
        actions += _facts(wide_b, _widen(sb, _last(sb), n), dt)
    parallel.rule(name, law, facts, actions, example=example, counter=counter)


def _merge_split_biases(n: int, bias_first: bool) -> None:
    """y_k = Split(m, n parts on the last axis)[k] + B_k, the B_k 1-D constants as wide as a part
    => y_k = Split(m + Concat(B), n parts)[k]."""
    _, biases = _consts("b", n)
    ys = [var(f"y{k}", Tensor) for k in range(n)]
    parts = _parts(m, split_axis, n)
    sums = [Add(b, p) if bias_first else Add(p, b) for p, b in zip(parts, biases)]
    facts: list[Any] = [eq(y).to(total) for y, total in zip(ys, sums)]
    facts += [eq(shape_of(t)).to(sy) for t in ys + parts]
    facts += [eq(shape_of(b)).to(sb) for b in biases]
    facts += [eq(sb.length()).to(i64(1)), eq(sb[0]).to(sy[_last(sy)]), eq(split_axis).to(_last(sy)),
              eq(dtype_of(ys[0])).to(dt)]
    wide_b = Concat(Vec[Tensor](*biases), i64(0))
    merged = Add(wide_b, m) if bias_first else Add(m, wide_b)
    actions = [union(y).with_(part) for y, part in zip(ys, _parts(merged, split_axis, n))]
    actions += _facts(wide_b, _widen(sb, i64(0), n), dt) + _facts(merged, _widen(sy, split_axis, n), dt)
    order = "b_k + p_k" if bias_first else "p_k + b_k"
    suffix = "-bias-first" if bias_first else ""
    parallel.rule(f"add-merge-split-{n}{suffix}", f"{order} over the parts p_k of one Split = the parts "
                  f"of Split(m + Concat(b)): each part's columns get their own bias", facts, actions,
                  example=partial(_split_add_example, n, bias_first),
                  counter=partial(_split_add_example, n, bias_first, True))


# ---- examples -----------------------------------------------------------------------------------

def _values(draw: Any, shape: Sequence[int]) -> np.ndarray:
    """Small integer-valued float32s: sums are exact, so merged and separate ops agree bit for bit."""
    from tensoregg.strategies import arrays

    return draw(arrays(np.int8, tuple(shape))).astype(np.float32)


def _parallel_graph(op: str, x: np.ndarray, weights: list[np.ndarray], biases: list[np.ndarray] | None,
                    attrs: dict[str, Any]) -> tuple[Graph, dict[str, np.ndarray]]:
    """``op(x, w_k[, b_k])`` for every k, each result a graph output."""
    inits: dict[str, np.ndarray] = {}
    nodes = []
    for k, w in enumerate(weights):
        inits[f"w{k}"] = w
        inputs = ["x", f"w{k}"]
        if biases is not None:
            inits[f"b{k}"] = biases[k]
            inputs.append(f"b{k}")
        nodes.append(Node(op, tuple(inputs), (f"y{k}",), attrs))
    outputs = [f"y{k}" for k in range(len(weights))]
    return Graph({"x": TensorType.of(x)}, inits, nodes, outputs), {"x": x}


def _narrowed(shapes: list[tuple[int, ...]], axis: int, j: int, by: int = -1) -> list[tuple[int, ...]]:
    """``shapes`` (one per op), that of op ``j`` (if >= 0) one narrower along ``axis`` (``by`` 1: wider)."""
    return [tuple(d + by if k == j and i == axis % len(sh) else d for i, d in enumerate(sh))
            for k, sh in enumerate(shapes)]


def _each_op(one: Callable[[int], Case], n: int) -> Case:
    """``one(j)`` (op j broken) for every j < n, side by side in one graph: whichever op a rule's
    premise ties the others to, one copy breaks it."""
    return merged([one(j) for j in range(n)])


def _matmul_example(n: int, broken: bool = False) -> Any:
    """x @ W_k for k < n, the W_k of one shape; ``broken``: one W_k a column narrower (each in turn),
    or the W_k vectors (x @ W_k drops the last axis: nothing to concatenate along)."""
    from hypothesis import strategies as st

    from tensoregg.strategies import shapes

    @st.composite
    def build(draw: Any) -> Case:
        how = draw(st.sampled_from(["weight", "vector"])) if broken else ""

        def one(j: int) -> Case:
            k, cols = draw(st.integers(1, 4)), draw(st.integers(2 if broken else 1, 4))
            x_shape = (*draw(shapes(0, 2, max_side=3)), k)
            w_shape = (k,) if how == "vector" else (*draw(st.sampled_from([(), (1,)])), k, cols)
            weights = [_values(draw, sh) for sh in _narrowed([w_shape] * n, -1, j)]
            return _parallel_graph("MatMul", _values(draw, x_shape), weights, None, {})

        return _each_op(one, n) if how == "weight" else one(-1)

    return build()


def _gemm_example(n: int, bias: bool, broken: bool = False) -> Any:
    """Gemm(x, W_k, C_k) for k < n (alpha, beta, transA, transB drawn), the W_k of one shape, the C_k
    too; ``broken`` (each op in turn where one op differs): one W_k a column narrower (with C: W_0 of
    1 column where the others have 2, or W_k of 2 where the others have 1, every C_k one column wide,
    so that the C_k keep one shape), one C_k of another shape that broadcasts all the same, or every
    C_k one column (of 2 or more) wide."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> Case:
        how = draw(st.sampled_from(["weight", "bias", "column"] if bias else ["weight"])) if broken else ""

        def one(j: int) -> Case:
            rows, k = draw(st.integers(1, 4)), draw(st.integers(1, 4))
            cols = draw(st.integers(2 if broken else 1, 4))
            if how == "weight" and bias:  # op j's output one column wider or (j = 0, whose shape the
                cols = 2 if j == 0 else 1  # premises take as the outputs') narrower than the others'
            wide = 1 if how == "weight" and bias and j > 0 else -1
            ta, tb = draw(st.integers(0, 1)), draw(st.integers(0, 1))
            attrs = {"transA": ta, "transB": tb, "alpha": draw(st.sampled_from([1.0, 0.5])),
                     "beta": draw(st.sampled_from([1.0, 0.5]))}
            c_options = [(cols,), (1, cols), (rows, cols)]
            c_shape = draw(st.sampled_from(c_options))
            narrow = j if how == "weight" else -1
            w_shapes = _narrowed([(cols, k) if tb else (k, cols)] * n, 0 if tb else 1, narrow, wide)
            c_shapes = [c_shape] * n
            if how in ("weight", "column"):
                c_shapes = [draw(st.sampled_from([(1,), (1, 1), (rows, 1)]))] * n
            if how == "bias":
                c_shapes[j] = draw(st.sampled_from([c for c in c_options if c != c_shape]))
            weights = [_values(draw, sh) for sh in w_shapes]
            biases = [_values(draw, sh) for sh in c_shapes] if bias else None
            x = _values(draw, (k, rows) if ta else (rows, k))
            return _parallel_graph("Gemm", x, weights, biases, attrs)

        return _each_op(one, n) if how in ("weight", "bias") else one(-1)

    return build()


def _conv_example(n: int, bias: bool, broken: bool = False) -> Any:
    """Conv(x, W_k, B_k) for k < n (pads, strides; dilations and kernel_shape set or left to their
    defaults), the W_k of one shape; ``broken``: one W_k (each in turn) an output channel short or
    (with B, whose shape follows the channels) a kernel row short."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> Case:
        def one(j: int) -> Case:
            batch, chans, width = (draw(st.integers(1, 3)) for _ in range(3))
            height, out = draw(st.integers(2 if broken else 1, 3)), draw(st.integers(2 if broken else 1, 3))
            pad, stride, dilation = draw(st.integers(0, 1)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
            kh, kw = (draw(st.integers(1, (side + 2 * pad - 1) // dilation + 1)) for side in (height, width))
            attrs: dict[str, Any] = {"pads": (pad,) * 4, "strides": (stride, stride)}
            if broken and bias:  # kernels of two sizes: none set in the attributes
                kh = max(kh, 2)
            elif draw(st.booleans()):  # else dilation 1: the kernel fits all the same
                attrs.update(kernel_shape=(kh, kw), dilations=(dilation, dilation))
            w_shapes = _narrowed([(out, chans, kh, kw)] * n, 2 if bias else 0, j)
            weights = [_values(draw, sh) for sh in w_shapes]
            biases = [_values(draw, sh[:1]) for sh in w_shapes] if bias else None
            x = _values(draw, (batch, chans, height, width))
            return _parallel_graph("Conv", x, weights, biases, attrs)

        return _each_op(one, n) if broken else one(-1)

    return build()


SPLIT_BREAKS = ("leading-axis", "bias-2d", "bias-1", "one-bias-1", "uneven")
"""How ``_split_add_example`` breaks a premise of add-merge-split: the Split along a leading axis, the
biases (1, 1) (parts of one column) or (1,) (all, or one), or the parts uneven (the last one narrower,
its bias broadcast)."""


def _split_add_example(n: int, bias_first: bool, broken: bool = False) -> Any:
    """x (rank 1-3, the last side n * C) -> Split in n parts on the last axis -> each part + a constant
    bias of shape (C,); ``broken``: a premise broken in one of the ways of ``SPLIT_BREAKS`` (one
    bias (1,): each in turn)."""
    from hypothesis import strategies as st

    from tensoregg.strategies import shapes

    @st.composite
    def build(draw: Any) -> Case:
        how = draw(st.sampled_from(SPLIT_BREAKS)) if broken else ""

        def one(j: int) -> Case:
            lead, cols = draw(shapes(0, 2, max_side=3)), draw(st.integers(1, 4))
            if how == "leading-axis":
                lead = (n * draw(st.integers(1, 2)), *lead)
            if how in ("bias-1", "one-bias-1"):
                cols = max(cols, 2)
            if how == "bias-2d":  # a (1, 1) bias keeps the part's shape (rank >= 2) and passes for 1-D
                lead, cols = (draw(st.integers(1, 3)), *lead), 1
            width, axis = n * cols, len(lead)
            if how == "uneven":  # parts of 2 and a last part of 1, which a bias of 2 widens to 2
                width, cols = 2 * n - 1, 2
            if how == "leading-axis":
                width, axis = cols, 0
            bias_shapes = [{"bias-2d": (1, cols), "bias-1": (1,)}.get(how, (cols,)) for _ in range(n)]
            if j >= 0:
                bias_shapes[j] = (1,)
            parts = [f"p{k}" for k in range(n)]
            nodes = [Node("Split", ("x",), tuple(parts), {"axis": axis, "num_outputs": n})]
            inits = {f"b{k}": _values(draw, shape) for k, shape in enumerate(bias_shapes)}
            for k, p in enumerate(parts):
                nodes.append(Node("Add", (f"b{k}", p) if bias_first else (p, f"b{k}"), (f"y{k}",)))
            x_value = _values(draw, (*lead, width))
            graph = Graph({"x": TensorType.of(x_value)}, inits, nodes, [f"y{k}" for k in range(n)])
            return graph, {"x": x_value}

        return _each_op(one, n) if how == "one-bias-1" else one(-1)

    return build()


# ---- the rules ----------------------------------------------------------------------------------

def _matmul(a: Any, w: Any, _: Any) -> Any:
    return MatMul(a, w)


def _gemm(a: Any, w: Any, c: Any) -> Any:
    return term("Gemm", a, w, c, alpha=alpha, beta=beta, transA=trans_a, transB=trans_b)


def _conv(a: Any, w: Any, b: Any) -> Any:
    return term("Conv", a, w, b, auto_pad=auto_pad, dilations=dilations, group=i64(1), kernel_shape=kernel,
                pads=pads, strides=strides)


for _n in WAYS:
    # x @ W_k = Split(x @ Concat(W, last axis))[k]: output columns are independent
    _merge_parallel(f"matmul-merge-parallel-{_n}", "x @ W_k = part k of x @ Concat(W_1..W_n, last axis)", _n,
                    _matmul, weight_axis=_last(sw), out_axis=_last(sy), bias=False,
                    when=[sw.length() >= i64(2)], example=partial(_matmul_example, _n),
                    counter=partial(_matmul_example, _n, True))
    for _bias in (True, False):
        _tail = "" if _bias else "-nobias"
        # Gemm's output columns come from B's columns (rows when transB) and C's columns
        _merge_parallel(f"gemm-merge-parallel-{_n}{_tail}", "Gemm(x, W_k, C_k) = part k of Gemm(x, "
                        "Concat(W) on B's column axis, Concat(C) on the last axis)", _n, _gemm,
                        weight_axis=i64(1) - trans_b, out_axis=i64(1), bias=_bias,
                        when=[eq(sb[_last(sb)]).to(sy[1])] if _bias else [],
                        example=partial(_gemm_example, _n, _bias),
                        counter=partial(_gemm_example, _n, _bias, True))
        # Conv's output channels come from W's and B's rows (group 1 only: groups would mix)
        _merge_parallel(f"conv-merge-parallel-{_n}{_tail}", "Conv(x, W_k, B_k) = channel part k of "
                        "Conv(x, Concat(W, 0), Concat(B, 0)) for group 1", _n, _conv,
                        weight_axis=i64(0), out_axis=i64(1), bias=_bias, when=[],
                        example=partial(_conv_example, _n, _bias),
                        counter=partial(_conv_example, _n, _bias, True))
        _merge_split_biases(_n, bias_first=_bias)
