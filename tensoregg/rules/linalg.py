"""Linear algebra: fold BatchNormalization, and a per-channel Mul/Add (BatchNormalization written
out), into Conv/Gemm weights, MatMul+Add -> Gemm, and move scalar multiplications through linear ops.

New weights are written as ordinary ops over the ``Tensor.const`` leaves, so the extractor sees them
as free and ``ir/fold.py`` folds them into constants. No new constant is needed: with
k = scale / sqrt(var + eps) per channel, BatchNormalization over the constants themselves computes
``W * k`` (zero mean and shift, the channel axis moved to axis 1) and ``(B - mean) * k + shift``;
zeros are ``mean < mean`` cast like the mean; Einsum moves axes and drops the unit axis that Flatten added. A
per-channel constant s of a Mul/Add after a Conv becomes the vector ``Einsum(Flatten(s, 0), "ij->j")``
(length C, or 1 for a one-element s), which scales W's rows and B, or adds to B.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from egglog import String, Vec, eq, f64, i64, ne, set_, union, var

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.terms import CONSTRUCTORS, Tensor, dtype_of, shape_of, term
from tensoregg.ir.types import TensorType
from tensoregg.rules.registry import Family
from tensoregg.rules.witness import merged

linalg = Family("linalg", __doc__ or "")

MatMul = CONSTRUCTORS["MatMul"].fn
Add, Sub, Mul, Div = (CONSTRUCTORS[n].fn for n in ("Add", "Sub", "Mul", "Div"))
Flatten = CONSTRUCTORS["Flatten"].fn

x, a, b, c, s, w, bias = (var(n, Tensor) for n in ("x", "a", "b", "c", "s", "w", "bias"))
scale, shift, mean, variance = (var(n, Tensor) for n in ("scale", "shift", "mean", "variance"))
eps, momentum, alpha, beta = (var(n, f64) for n in ("eps", "momentum", "alpha", "beta"))
trans_a, group = var("trans_a", i64), var("group", i64)
auto_pad = var("auto_pad", String)
dilations, kernel_shape, pads, strides = (var(n, Vec[Vec[i64]]) for n in ("dilations", "kernel_shape", "pads",
                                                                          "strides"))
sa, sb, sc, ss, sy = (var(n, Vec[i64]) for n in ("sa", "sb", "sc", "ss", "sy"))
dt = var("dt", String)
F32 = String("float32")
FOLD_DTYPES = Vec[String](F32, String("float16"))
"""The dtypes whose weights the per-channel folds rewrite."""


def is_const(*tensors: Any) -> list[Any]:
    """Facts: each of ``tensors`` is a constant leaf (an initializer)."""
    return [eq(t).to(Tensor.const(var(f"{t}_name", String))) for t in tensors]


def rank_is(t: Any, shape_var: Any, rank: int) -> list[Any]:
    """Facts: ``t`` has static shape ``shape_var`` of length ``rank``."""
    return [eq(shape_of(t)).to(shape_var), eq(shape_var.length()).to(i64(rank))]


# ---- BatchNormalization folding -----------------------------------------------------------------

def _bn(t: Any, bn_bias: Any, bn_mean: Any) -> Any:
    """Inference-mode BatchNormalization of ``t`` with the matched scale, variance and epsilon."""
    return term("BatchNormalization", t, scale, bn_bias, bn_mean, variance, epsilon=eps, momentum=momentum,
                training_mode=i64(0)).get(0)


def _einsum(t: Any, equation: str) -> Any:
    return term("Einsum", Vec[Tensor](t), equation=String(equation))


def _zero() -> Any:
    """A per-channel zero vector in the mean's dtype: ``mean < mean`` (false for every value, an
    infinite or NaN mean too, where ``mean - mean`` is NaN) cast like the mean."""
    return term("CastLike", term("Less", mean, mean), mean, saturate=i64(1), round_mode=String("up"))


def _scaled_columns(t: Any) -> Any:
    """``t * k`` with channels on axis 1 (zero mean and shift leave only the scaling)."""
    return _bn(t, _zero(), _zero())


def _scaled_rows(t: Any) -> Any:
    """``t * k`` with channels on axis 0: axes 0 and 1 swapped around ``_scaled_columns``."""
    return _einsum(_scaled_columns(_einsum(t, "oi...->io...")), "io...->oi...")


def _shifted(t: Any) -> Any:
    """``(t - mean) * k + shift`` for a per-channel (1-D or (r, C)) ``t``, shaped (1 or r, C)."""
    return _bn(Flatten(t, i64(-1)), shift, mean)


BN_CONSTS = is_const(scale, shift, mean, variance)
ZERO_FITS_W = [eq(dtype_of(w)).to(dt), eq(dtype_of(mean)).to(dt)]
"""Where B or C is absent the zero bias is ``mean - mean``, of mean's dtype: it must be W's."""
HAS_BIAS = [eq(dtype_of(bias)).to(dt)]
"""Conv's bias is present: an absent one (``none``) has no dtype (a ``ne`` against ``Tensor.none()``
would need a ``none`` somewhere in the e-graph to match)."""


def _conv(weight: Any, conv_bias: Any) -> Any:
    return term("Conv", x, weight, conv_bias, auto_pad=auto_pad, dilations=dilations, group=group,
                kernel_shape=kernel_shape, pads=pads, strides=strides)


def _conv_fold(name: str, law: str, lhs: Any, weight: Any, new_bias: Any | None, facts: list[Any],
               example: Any, counter: Any = None) -> None:
    """Register ``lhs = conv(x, weight, new_bias)`` (``None``: no bias) where ``lhs`` has shape sy
    and dtype dt. A new bias gets its type facts, shape (C,) = (sy[1],) and dtype dt, so that a
    later fold over the new Conv sees it as present (``HAS_BIAS``)."""
    rhs = _conv(weight, Tensor.none() if new_bias is None else new_bias)
    typed = ([] if new_bias is None else
             [set_(shape_of(new_bias)).to(Vec[i64](sy[1])), set_(dtype_of(new_bias)).to(dt)])
    linalg.rule(name, law, [lhs, *facts, eq(shape_of(lhs)).to(sy), eq(dtype_of(lhs)).to(dt)],
                [union(lhs).with_(rhs), *typed], example=example, counter=counter, exact=False)


def _conv_bn_rule(with_bias: bool) -> None:
    conv_bias, premises = (bias, is_const(bias)) if with_bias else (Tensor.none(), ZERO_FITS_W)
    # BN(conv(x, W) + B) = conv(x, W * k) + (B - mean) * k + shift, k per output channel (axis 0 of W)
    _conv_fold("conv-bn-fold" + ("" if with_bias else "-no-bias"),
               "bn(conv(x, W, B)) = conv(x, W*k, (B-mean)*k+shift), k = scale/sqrt(var+eps)",
               _bn(_conv(w, conv_bias), shift, mean), _scaled_rows(w),
               _einsum(_shifted(bias if with_bias else _zero()), "ij->j"),
               [*is_const(w), *BN_CONSTS, *premises], lambda: _conv_bn_example(with_bias),
               lambda: _conv_bn_example(with_bias).map(_float16_stats))


_conv_bn_rule(True)
_conv_bn_rule(False)


def _gemm_bn_rule(trans_b: int, with_c: bool) -> None:
    # B' = B * k per column of op(B) (rows of B if transB=1), the result kept with transB's layout
    weight = _scaled_rows(w) if trans_b else _scaled_columns(w)
    name = "gemm-bn-fold" + ("-trans-b" if trans_b else "") + ("" if with_c else "-no-c")
    lhs = _bn(term("Gemm", a, w, c if with_c else Tensor.none(), alpha=alpha, beta=beta, transA=trans_a,
                   transB=i64(trans_b)), shift, mean)
    rhs = term("Gemm", a, weight, _shifted(c if with_c else _zero()), alpha=alpha, beta=f64(1.0),
               transA=trans_a, transB=i64(trans_b))
    # C (beta = 1) broadcasts to (M, N); Flatten(C, -1) is (1 or M, N) when C's last dim is N
    premises = ([*is_const(c), eq(beta).to(f64(1.0)), eq(shape_of(c)).to(sc), ne(sc.length()).to(i64(0)),
                 eq(shape_of(lhs)).to(sy), eq(sc[sc.length() - 1]).to(sy[1])] if with_c
                else ZERO_FITS_W)
    linalg.rewrite(name, "bn(alpha*A'B' + C) = alpha*A'(B'*k) + (C-mean)*k+shift, k = scale/sqrt(var+eps)",
                   lhs, rhs, *is_const(w), *BN_CONSTS, *premises, exact=False,
                   example=lambda: _gemm_bn_example(trans_b, with_c),
                   counter=lambda: _gemm_bn_example(trans_b, with_c, broken=True))


for _trans_b in (0, 1):
    for _with_c in (True, False):
        _gemm_bn_rule(_trans_b, _with_c)


# ---- per-channel Mul/Add after Conv ------------------------------------------------------------

MAX_CONV_RANK = 5
"""The per-channel premise checks the axes of Conv outputs up to this rank (3 spatial axes)."""


def _per_channel(conv: Any, full: bool) -> list[Any]:
    """Facts: s is a constant of ``conv``'s dtype dt (float32 or float16) and ``conv`` has shape sy
    of rank <= 5; s is 1 on every axis of sy but the channel axis 1 (``_conv_fold`` checks that it
    keeps sy when broadcast, so s's channel side is C or 1); ``full``: it is C.

    s's shape right-aligned to sy (numpy broadcasting): its extent along axis i of sy is element
    ``len(s) + 5 - rank(sy)`` of ones(5 - i) + shape(s) + ones(i - 2), a one where s has no axis
    (the ones before stand for the axes before s's first, those after for axes past sy's last)."""
    offset = ss.length() + i64(MAX_CONV_RANK) - sy.length()

    def extent(i: int) -> Any:
        ones = [Vec[i64](*[i64(1)] * n) for n in (MAX_CONV_RANK - i, i - 2)]
        return ones[0].append(ss, *ones[1:] if i > 2 else [])[offset]

    channel = [eq(extent(1)).to(sy[1])] if full else []
    return [*is_const(s), eq(dtype_of(s)).to(dt), eq(dtype_of(conv)).to(dt), FOLD_DTYPES.contains(dt),
            eq(shape_of(s)).to(ss), eq(shape_of(conv)).to(sy), sy.length() < i64(MAX_CONV_RANK + 1),
            *[eq(extent(i)).to(i64(1)) for i in range(MAX_CONV_RANK) if i != 1], *channel]


def _conv_affine_rule(op: str, commuted: bool, with_bias: bool) -> None:
    """``op`` (Mul or Add) of a Conv and a per-channel constant s folded into the Conv's W and B.

    W and B need not be initializers: after conv-bn-fold or another of these folds they are terms
    over constants, which the extractor folds all the same."""
    conv = _conv(w, bias if with_bias else Tensor.none())
    lhs = (Mul if op == "Mul" else Add)(*((s, conv) if commuted else (conv, s)))
    row = _einsum(Flatten(s, i64(0)), "ij->j")  # s as a vector s_o: C per-channel values, or one
    if op == "Mul":  # conv(x, W, B) * s = conv(x, W * s_o, B * s_o), s_o scaling W's rows
        weight = term("Einsum", Vec[Tensor](w, row), equation=String("o...,o->o..."))
        new_bias = Mul(bias, row) if with_bias else None
        law = "Mul(conv(x, W, B), s) = conv(x, W*s_o, B*s_o)"
    else:  # conv(x, W, B) + s = conv(x, W, B + s_o); without B, s_o must be C long
        weight, new_bias = w, (Add(bias, row) if with_bias else row)
        law = "Add(conv(x, W, B), s) = conv(x, W, B+s_o)"
    name = f"conv-{op.lower()}-fold" + ("" if with_bias else "-no-bias") + ("-commuted" if commuted else "")
    _conv_fold(name, law + " for a constant s varying only along the output channels (or one-element s)",
               lhs, weight, new_bias,
               [*_per_channel(conv, op == "Add" and not with_bias), *(HAS_BIAS if with_bias else [])],
               lambda: _conv_affine_example(op, commuted, with_bias),
               lambda: _conv_affine_counter(op, commuted, with_bias))


for _op in ("Mul", "Add"):
    for _with_bias in (True, False):
        for _commuted in (False, True):
            _conv_affine_rule(_op, _commuted, _with_bias)


# ---- MatMul + Add -> Gemm -------------------------------------------------------------------------

def _matmul_add_rule(name: str, commuted: bool) -> None:
    # C broadcasts unidirectionally to (M, N) exactly when the Add keeps MatMul's shape
    lhs = Add(c, MatMul(a, b)) if commuted else Add(MatMul(a, b), c)
    linalg.rewrite(name, "a @ b + c = gemm(a, b, c) for 2-D a, b and c broadcasting to a @ b",
                   lhs, term("Gemm", a, b, c, alpha=f64(1.0), beta=f64(1.0), transA=i64(0), transB=i64(0)),
                   *rank_is(a, sa, 2), *rank_is(b, sb, 2), eq(shape_of(MatMul(a, b))).to(sy),
                   eq(shape_of(lhs)).to(sy), eq(dtype_of(lhs)).to(F32),
                   example=lambda: _matmul_add_example(commuted),
                   counter=lambda: _matmul_add_counter(commuted))


_matmul_add_rule("matmul-add-to-gemm", False)
_matmul_add_rule("matmul-add-to-gemm-commuted", True)


# ---- scalars through MatMul -----------------------------------------------------------------------

def _scalar_rule(name: str, op: str, scalar_first: bool = False) -> None:
    # s has shape () or (1,): with the result's shape kept, scaling commutes with the matmul
    fn = Mul if op == "Mul" else Div
    lhs, rhs = (fn(s, MatMul(a, b)) if scalar_first else fn(MatMul(a, b), s)), MatMul(a, fn(b, s))
    linalg.rewrite(name, f"{op}(a @ b, s) = a @ {op}(b, s) for a one-element s and constant b, s",
                   lhs, rhs, *is_const(b, s), eq(shape_of(s)).to(sc), sc.length() < i64(2),
                   eq(sc.push(i64(1))[0]).to(i64(1)),  # () or (1,): the first of sc + (1,) is 1
                   eq(shape_of(MatMul(a, b))).to(sy), eq(shape_of(lhs)).to(sy), exact=False,
                   example=lambda: _scalar_example(op, scalar_first),
                   counter=lambda: _scalar_example(op, scalar_first, broken=True))


_scalar_rule("matmul-scalar-reassoc", "Mul")
_scalar_rule("matmul-scalar-reassoc-commuted", "Mul", scalar_first=True)
_scalar_rule("matmul-scalar-div-reassoc", "Div")


# ---- witnesses --------------------------------------------------------------------------------------

def _case(nodes: list[Node], feeds: dict[str, np.ndarray],
          consts: dict[str, np.ndarray]) -> tuple[Graph, dict[str, np.ndarray]]:
    """A (Graph, feeds) example with output ``y``."""
    inputs = {k: TensorType.of(v) for k, v in feeds.items()}
    return Graph(inputs, consts, nodes, ["y"]), feeds


def _f32(draw: Any, shape: tuple[int, ...], low: float = -1.0, high: float = 1.0) -> np.ndarray:
    from tensoregg.strategies import arrays

    return draw(arrays(np.float32, shape, low=low, high=high))


def _bn_consts(draw: Any, channels: int) -> dict[str, np.ndarray]:
    """scale, shift, mean, var of modest size (var in [0.5, 2]: near 0 BN is ill-conditioned)."""
    return {"scale": _f32(draw, (channels,), 0.5, 2.0), "shift": _f32(draw, (channels,)),
            "mean": _f32(draw, (channels,)), "var": _f32(draw, (channels,), 0.5, 2.0)}


def _bn_node(draw: Any, t: str) -> Node:
    from hypothesis import strategies as st

    eps = draw(st.sampled_from([1e-5, 1e-3]))
    return Node("BatchNormalization", (t, "scale", "shift", "mean", "var"), ("y",), {"epsilon": eps})


def _draw_conv(draw: Any, with_bias: bool, spatial: int | None = None,
               one_channel: bool = False) -> tuple[Node, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Conv x -> t (W, B?) with ``spatial`` (default: 1 to 3) spatial dims, batch 1 or 2, random
    groups/strides/pads, dilations and kernel_shape set or unset (``one_channel``: one output
    channel, group 1): (node, consts, feeds)."""
    from hypothesis import strategies as st

    spatial = spatial or draw(st.integers(1, 3))
    group = 1 if one_channel else draw(st.sampled_from([1, 2]))
    cin, cout = group * draw(st.integers(1, 2)), 1 if one_channel else group * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 2)) for _ in range(spatial))
    dilations = [draw(st.integers(1, 2)) for _ in kernel]
    size = tuple(draw(st.integers((k - 1) * d + 1, 4)) for k, d in zip(kernel, dilations))
    attrs = {"group": group, "strides": [draw(st.integers(1, 2)) for _ in kernel],
             "pads": [draw(st.integers(0, 1)) for _ in range(2 * spatial)]}
    if draw(st.booleans()):  # set explicitly, or left to their defaults
        attrs.update(dilations=dilations, kernel_shape=list(kernel))
    elif dilations != [1] * spatial:
        size = tuple(k + draw(st.integers(0, 2)) for k in kernel)
    consts = {"w": _f32(draw, (cout, cin // group, *kernel))}
    if with_bias:
        consts["b"] = _f32(draw, (cout,))
    conv = Node("Conv", ("x", "w", "b" if with_bias else ""), ("t",), attrs)
    return conv, consts, {"x": _f32(draw, (draw(st.integers(1, 2)), cin, *size))}


def _conv_bn_example(with_bias: bool) -> Any:
    """x -> Conv(W, B?) -> BatchNormalization (see ``_draw_conv``)."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        conv, consts, feeds = _draw_conv(draw, with_bias)
        channels = consts["w"].shape[0]
        return _case([conv, _bn_node(draw, "t")], feeds, {**consts, **_bn_consts(draw, channels)})

    return build()


BREAKS = {"batch": 0, "axis2": 2, "axis3": 3, "axis4": 4, "rank": 5, "wider": -1, "wider-ones": -1,
          "channels": -1}
"""The ways ``_conv_affine_example`` breaks the per-channel premise, each with the output axis along
which s then varies (-1: none)."""


def _conv_out(conv: Node, consts: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> tuple[int, ...]:
    return Graph({"x": TensorType.of(feeds["x"])}, consts, [conv], ["t"]).types["t"].shape


def _conv_affine_example(op: str, commuted: bool, with_bias: bool, broken: str = "") -> Any:
    """x -> Conv(W, B?) (see ``_draw_conv``) -> Mul/Add with a constant s of shape (1, C, 1, ...) or
    (C, 1, ...), or (when B is present, op is Mul or C is 1) ones of any length up to the output's rank.
    The Conv's spatial rank is drawn first, then s's rank (0 to the output's), which gives the offset of
    s's axes to the output's that the premises index by; a scalar s on a Conv with 3 spatial axes too.

    ``broken`` (a key of ``BREAKS``, or "ones"): s not per-channel: varying along the batch (of 2) or
    along spatial axis 2, 3 or 4 (at least 2 long there), maybe along the channels too, and of any
    rank that has those axes; ("rank") along the last axis of a Conv with 4 spatial axes (past the
    rank the premises check); ("wider", "wider-ones") with an extra leading axis (s widens the result;
    of 2 or of 1 element); ("channels") of 2 channels after a Conv of one (s widens it); ("ones", for
    Add without B, where s must be C along the channels) ones."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        full = op == "Add" and not with_bias  # s must be C along the channels
        along = BREAKS.get(broken, -1)
        # (this order of the spatial ranks is one whose derandomized draws, as the mutation tool makes
        # them, reach every offset and rank: tests/rules/test_linalg_rules.py checks it)
        spatial = 4 if broken == "rank" else max(along - 1, draw(st.sampled_from([2, 3, 1])))
        offset = draw(st.integers(3 - spatial, MAX_CONV_RANK))  # rank(s) + 5 - rank(output): s of any rank
        # s without the channel axis must be one value for all channels: one channel, where s must be C
        one_channel = broken == "channels" or (full and not broken and offset < MAX_CONV_RANK - 1)
        conv, consts, feeds = _draw_conv(draw, with_bias, spatial, one_channel)
        out = _conv_out(conv, consts, feeds)
        if along == 0:
            feeds["x"] = _f32(draw, (2, *feeds["x"].shape[1:]))
        elif along > 0 and out[along] == 1:  # one stride more of x along that axis: 2 outputs
            size = list(feeds["x"].shape)
            size[along] += conv.attrs["strides"][along - 2]
            feeds["x"] = _f32(draw, tuple(size))
        out = _conv_out(conv, consts, feeds)
        channels, ones = out[1], (1,) * (len(out) - 2)
        if along >= 0:  # s varying along that axis (and along the channels, where s must be C there;
            # else maybe), its leading ones maybe left out
            keep = full or draw(st.booleans())
            first = draw(st.integers(0, min(along, 1) if keep else along))
            s_shape = tuple(d if k == along or (k == 1 and keep) else 1 for k, d in enumerate(out))[first:]
        elif broken.startswith("wider"):
            s_shape = (2 if broken == "wider" else 1, *(1,) * len(out))
        elif broken == "channels":  # s widens a Conv of one channel to two
            s_shape = (1, 2, *ones)
        elif broken == "ones":  # no channel axis where C > 1 values are needed (a Conv of 2+ channels)
            s_shape = (1,) * draw(st.integers(0, len(out)))
        else:
            rank = len(out) + offset - MAX_CONV_RANK
            shapes = [sh for sh in [(1, channels, *ones), (channels, *ones)] if len(sh) == rank]
            if not full or channels == 1:  # ones: one value for all channels
                shapes.append((1,) * rank)
            s_shape = draw(st.sampled_from(shapes or [(1, channels, *ones), (channels, *ones)]))
        consts["s"] = _f32(draw, s_shape, -2.0, 2.0)
        affine = Node(op, ("s", "t") if commuted else ("t", "s"), ("y",))
        return _case([conv, affine], feeds, consts)

    return build()


def _conv_affine_counter(op: str, commuted: bool, with_bias: bool) -> Any:
    """Premise-breaking cases, all in one graph, so that every draw breaks each premise: s not
    per-channel in each way of ``BREAKS`` (and, for Add without B, ones), and for the rules over a
    Conv with a bias, a Conv without one, whose absent bias the premises must not take for a present
    one."""
    from hypothesis import strategies as st

    ways = [*BREAKS, *(["ones"] if op == "Add" and not with_bias else [])]
    cases = [_conv_affine_example(op, commuted, with_bias, how) for how in ways]
    if with_bias:
        cases.append(_conv_affine_example(op, commuted, False))
    return st.tuples(*cases).map(merged)


def _gemm_bn_example(trans_b: int, with_c: bool, broken: bool = False) -> Any:
    """a -> Gemm(B, C?; alpha, transA, transB) -> BatchNormalization over the N columns; ``broken``
    (a premise broken, each way as often): N >= 2 and C one value per row, a scalar or of shape ()
    (beta 1 or not), a C of a right shape with beta 0.5, or float16 mean and variance."""
    from hypothesis import strategies as st

    from tensoregg.strategies import broadcastable_shapes

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        how = draw(st.sampled_from(["c-shape", "beta", "stats"] if with_c else ["stats"])) if broken else ""
        m, k = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        n = draw(st.integers(2 if how == "c-shape" else 1, 4))
        trans_a = draw(st.integers(0, 1))
        beta = 0.5 if how == "beta" else draw(st.sampled_from([1.0, 0.5])) if how == "c-shape" else 1.0
        alpha = draw(st.sampled_from([1.0, 0.5]))
        attrs = {"alpha": alpha, "transA": trans_a, "transB": trans_b, "beta": beta}
        consts = {"w": _f32(draw, (n, k) if trans_b else (k, n)), **_bn_consts(draw, n)}
        if with_c:
            c_shape = (draw(st.sampled_from([(m, 1), (1,), (1, 1), ()])) if how == "c-shape" else
                       draw(broadcastable_shapes((m, n)).filter(lambda sh: len(sh) >= 1 and sh[-1] == n)))
            consts["c"] = _f32(draw, c_shape)
        gemm = Node("Gemm", ("a", "w", "c" if with_c else ""), ("t",), attrs)
        case = _case([gemm, _bn_node(draw, "t")], {"a": _f32(draw, (k, m) if trans_a else (m, k))}, consts)
        return _float16_stats(case) if how == "stats" else case

    return build()


def _float16_stats(case: tuple[Graph, dict[str, np.ndarray]]) -> tuple[Graph, dict[str, np.ndarray]]:
    """``case`` with BatchNormalization's mean and variance in float16 (ONNX lets them differ from X's
    type): a zero bias made from the mean (``_zero``) is then of another type than the weights."""
    graph, feeds = case
    consts = {k: v.astype(np.float16) if k in ("mean", "var") else v for k, v in graph.initializers.items()}
    return Graph(dict(graph.inputs), consts, graph.nodes, graph.outputs), feeds


def _matmul_add_example(commuted: bool) -> Any:
    """MatMul of 2-D inputs a, b plus c of a shape broadcasting to (M, N)."""
    from hypothesis import strategies as st

    from tensoregg.strategies import broadcastable_shapes

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
        c_shape = draw(broadcastable_shapes((m, n)))
        feeds = {"a": _f32(draw, (m, k)), "b": _f32(draw, (k, n)), "c": _f32(draw, c_shape)}
        add = Node("Add", ("c", "t") if commuted else ("t", "c"), ("y",))
        return _case([Node("MatMul", ("a", "b"), ("t",)), add], feeds, {})

    return build()


def _matmul_add_counter(commuted: bool) -> Any:
    """MatMul of a and b plus c, one of them breaking the Gemm premises: a or b of rank 1 or 3, or
    c widening the product (a leading axis, or rows where the product has one)."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        m, k, n = (draw(st.integers(1, 3)) for _ in range(3))
        broken = draw(st.sampled_from("abc"))
        a_shape = draw(st.sampled_from([(k,), (2, m, k)])) if broken == "a" else (m, k)
        b_shape = draw(st.sampled_from([(k,), (2, k, n)])) if broken == "b" else (k, n)
        product = np.matmul(np.zeros(a_shape), np.zeros(b_shape)).shape
        widen = [(3, *product)] + ([(3, *product[1:])] if product[0] == 1 else [])
        c_shape = draw(st.sampled_from(widen)) if broken == "c" else product
        feeds = {"a": _f32(draw, a_shape), "b": _f32(draw, b_shape), "c": _f32(draw, c_shape)}
        add = Node("Add", ("c", "t") if commuted else ("t", "c"), ("y",))
        return _case([Node("MatMul", ("a", "b"), ("t",)), add], feeds, {})

    return build()


def _scalar_example(op: str, scalar_first: bool, broken: bool = False) -> Any:
    """a (rank 1-3) @ constant 2-D b, then Mul/Div by a constant of shape () or (1,); ``broken``: s
    not one element, or widening the product: a dot product scaled by s of shape (1,), s of shape
    (1, M, 1) scaling the rows of a batched product (M = K), or s of shape (M,) or (1, M) scaling
    the rows of a (batched) matrix-vector product (M = K)."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        how = draw(st.sampled_from(["dot", "rows", "vector"])) if broken else ""
        k, n = draw(st.integers(2 if broken else 1, 4)), draw(st.integers(1, 4))
        batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        s_shape: tuple[int, ...] = draw(st.sampled_from([(), (1,)]))
        a_shape: tuple[int, ...] = (*batch, k)
        b_shape: tuple[int, ...] = (k, n)
        if how == "dot":
            a_shape, b_shape, s_shape = (k,), (k,), (1,)
        elif how == "rows":
            a_shape, s_shape = (draw(st.integers(1, 2)), k, k), (1, k, 1)
        elif how == "vector":
            a_shape, b_shape = (*batch[:1], k, k), (k,)
            s_shape = draw(st.sampled_from([(k,), (1, k)] if batch else [(k,)]))
        sign = draw(st.sampled_from([1.0, -1.0]))  # |s| in [0.5, 2]: away from 0 for Div
        scalar = _f32(draw, s_shape, 0.5, 2.0)
        consts = {"b": _f32(draw, b_shape), "s": np.asarray(sign * scalar, np.float32)}
        scaled = Node(op, ("s", "t") if scalar_first else ("t", "s"), ("y",))
        return _case([Node("MatMul", ("a", "b"), ("t",)), scaled], {"a": _f32(draw, a_shape)}, consts)

    return build()
