"""Quantization: QDQ patterns (as ``tensoregg.quantize`` and onnxruntime's ``quantize_static`` write
them) into integer kernels with fused requantization.

``Q(Conv(DQ(x), DQ(w), DQ(b)), y_scale, y_zp)`` becomes ``QLinearConv`` and ``Q(MatMul(DQ(a),
DQ(b)), ...)`` becomes ``QLinearMatMul``: the integer kernel sums (x - x_zp)(w - w_zp) exactly in
int32 and requantizes once, ``round_half_even(acc * x_scale * w_scale / y_scale) + y_zp``, where
the float program rounds each product, the sum and the division. The two agree exactly where the
float program is exact (scales powers of two, as the examples draw them); otherwise they can differ
by one quantization step at a tie, as onnxruntime's own QDQ fusion does. The bias, int32 at scale
b_scale, becomes ``round(DQ(b) / (x_scale * w_scale))``, a term over constants that folds away
(``b`` itself when b_scale = x_scale * w_scale, as quantizers write it). A Relu between a DQ and a
Q of the same scale and zero point is ``Max(q, z)`` on the 8-bit data.

Premises: activation scales and zero points per tensor (one element), the weight's per tensor or
(Conv) per output channel (DequantizeLinear axis 0), every zero point present (the QLinear ops need
them), 8-bit integer data and output, float32 scales, no blocked quantization, default Q/DQ
attributes otherwise. The laws need finite, nonzero scales (a model's), which no premise can
read from a constant's values: the rules are checked on such scales (``exact=False``: no -0, inf or
NaN drawn into them). The accel target saturates this family (integer kernels are what its GEMM
core runs).
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_dtypes
import numpy as np
from egglog import String, Vec, eq, i64, var

from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.terms import Tensor, dtype_of, shape_of, term
from tensoregg.ir.types import TensorType
from tensoregg.rules.registry import Family
from tensoregg.rules.witness import Case, merged

quantization = Family("quantization", __doc__ or "")

xq, xs, xz, wq, ws, wz, ys, yz, bq, bs, bz = (var(n, Tensor) for n in (
    "xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz", "bq", "bs", "bz"))
x_axis, w_axis, b_axis, y_axis, group = (var(n, i64) for n in ("x_axis", "w_axis", "b_axis", "y_axis",
                                                                  "group"))
auto_pad = var("auto_pad", String)
dilations, kernel_shape, pads, strides = (var(n, Vec[Vec[i64]]) for n in ("dilations", "kernel_shape", "pads",
                                                                          "strides"))
EIGHT_BITS = Vec[String](String("uint8"), String("int8"))
F32 = String("float32")
INT32 = 6
"""onnx.TensorProto.INT32, Cast's ``to``."""


def _dq(data: Any, scale: Any, zero_point: Any, axis: Any) -> Any:
    return term("DequantizeLinear", data, scale, zero_point, axis=axis, block_size=i64(0),
                output_dtype=i64(0))


def _q(t: Any, scale: Any = ys, zero_point: Any = yz) -> Any:
    return term("QuantizeLinear", t, scale, zero_point, axis=y_axis, block_size=i64(0), output_dtype=i64(0),
                saturate=i64(1), precision=i64(0))


def _scalar(t: Any, name: str) -> list[Any]:
    """Facts: ``t`` has shape () or (1,) (the first of shape + (1,) is 1)."""
    shape = var(f"{name}_shape", Vec[i64])
    return [eq(shape_of(t)).to(shape), shape.length() < i64(2), eq(shape.push(i64(1))[0]).to(i64(1))]


def _quantized(data: Any | None, scale: Any, zero_point: Any, name: str) -> list[Any]:
    """Facts: a present 8-bit zero point (of ``data``'s dtype, if given), a float32 scale."""
    dt = var(f"{name}_dtype", String)
    of_data = [] if data is None else [eq(dtype_of(data)).to(dt)]
    return [*of_data, EIGHT_BITS.contains(dt), eq(dtype_of(zero_point)).to(dt), eq(dtype_of(scale)).to(F32)]


def _activations() -> list[Any]:
    """Facts on x and y: 8-bit, zero points present, float32 scales, all per tensor (y's type is its
    zero point's)."""
    return [*_quantized(xq, xs, xz, "x"), *_scalar(xs, "xs"), *_quantized(None, ys, yz, "y"),
            *_scalar(ys, "ys")]


def _weight_scale(per_channel: bool) -> list[Any]:
    """Facts on w's scale: per output channel (axis 0), or one element."""
    return [eq(w_axis).to(i64(0))] if per_channel else _scalar(ws, "ws")


def _conv(op: str, *inputs: Any) -> Any:
    return term(op, *inputs, auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                pads=pads, strides=strides)


def _integer_bias() -> Any:
    """The int32 bias at scale x_scale * w_scale: round(DQ(b) / (x_scale * w_scale))."""
    exact = term("Div", _dq(bq, bs, bz, b_axis), term("Mul", xs, ws))
    return term("Cast", term("Round", exact), round_mode=String("up"), saturate=i64(1), to=i64(INT32))


def _conv_rule(per_channel: bool, with_bias: bool) -> None:
    bias = _dq(bq, bs, bz, b_axis) if with_bias else Tensor.none()
    lhs = _q(_conv("Conv", _dq(xq, xs, xz, x_axis), _dq(wq, ws, wz, w_axis), bias))
    rhs = _conv("QLinearConv", xq, xs, xz, wq, ws, wz, ys, yz,
                _integer_bias() if with_bias else Tensor.none())
    name = ("qdq-conv-to-qlinearconv" + ("-per-channel" if per_channel else "")
            + ("-bias" if with_bias else ""))
    int32 = [eq(dtype_of(bq)).to(String("int32"))] if with_bias else []
    quantization.rewrite(
        name, "Q(conv(DQ(x), DQ(w), DQ(b))) = QLinearConv(x, w, round(DQ(b)/(x_s*w_s))): the int32 sum "
        "requantized once (exact for power-of-two scales, else up to a tie's rounding)",
        lhs, rhs, *_activations(), *_quantized(wq, ws, wz, "w"), *_weight_scale(per_channel), *int32,
        example=lambda: _conv_example(per_channel, with_bias),
        counter=lambda: _broken(_conv_example(per_channel, with_bias)), exact=False)


for _per_channel in (False, True):
    for _with_bias in (False, True):
        _conv_rule(_per_channel, _with_bias)

quantization.rewrite(
    "qdq-matmul-to-qlinearmatmul", "Q(DQ(a) @ DQ(b)) = QLinearMatMul(a, b): the int32 product requantized "
    "once (exact for power-of-two scales, else up to a tie's rounding)",
    _q(term("MatMul", _dq(xq, xs, xz, x_axis), _dq(wq, ws, wz, w_axis))),
    term("QLinearMatMul", xq, xs, xz, wq, ws, wz, ys, yz),
    *_activations(), *_quantized(wq, ws, wz, "w"), *_scalar(ws, "ws"),
    example=lambda: _matmul_example(), counter=lambda: _broken(_matmul_example()), exact=False)

quantization.rewrite(
    "qdq-relu-to-max", "Q(relu(DQ(q, s, z)), s, z) = max(q, z): relu keeps q >= z and makes the rest z "
    "(exact: f32((q - z)*s) / s rounds back to q - z for scales whose products stay normal floats)",
    _q(term("Relu", _dq(xq, xs, xz, x_axis)), xs, xz), term("Max", Vec[Tensor](xq, xz)),
    *_quantized(xq, xs, xz, "x"), *_scalar(xs, "xs"), example=lambda: _relu_example(),
    counter=lambda: _broken(_relu_example()), exact=False)


# ---- witnesses --------------------------------------------------------------------------------------

def _pow2(rng: np.random.Generator, low: int, high: int, shape: tuple[int, ...] = ()) -> np.ndarray:
    return np.exp2(rng.integers(low, high + 1, shape)).astype(np.float32)


def _ints(rng: np.random.Generator, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(int(info.min), int(info.max) + 1, shape).astype(dtype)


def _qdq(rng: np.random.Generator, draw: Any, per_channel: bool,
         w_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The constants of a QDQ product: power-of-two scales (the float program is then
    exact), random 8-bit data and zero points; y's scale 2^4..2^10 times x_s * w_s's largest."""
    from hypothesis import strategies as st

    x_dt, w_dt, y_dt = (draw(st.sampled_from([np.uint8, np.int8])) for _ in range(3))
    channels = (w_shape[0],) if per_channel else ()
    consts = {"xs": _pow2(rng, -6, 0), "xz": _ints(rng, x_dt, ()), "wq": _ints(rng, w_dt, w_shape),
              "ws": _pow2(rng, -7, -1, channels), "wz": _ints(rng, w_dt, channels),
              "yz": _ints(rng, y_dt, ())}
    consts["ys"] = np.asarray(consts["xs"] * consts["ws"].max() * 2.0 ** rng.integers(4, 11), np.float32)
    return consts


def _case(nodes: list[Node], feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray]
          ) -> tuple[Graph, dict[str, np.ndarray]]:
    inputs = {k: TensorType.of(v) for k, v in feeds.items()}
    return Graph(inputs, consts, nodes, ["y"]), feeds


def _qdq_nodes(product: Node, per_channel: bool) -> list[Node]:
    """DQ of x and w into ``product`` (writing ``p``), then Q into y."""
    return [Node("DequantizeLinear", ("xq", "xs", "xz"), ("x",)),
            Node("DequantizeLinear", ("wq", "ws", "wz"), ("w",), {"axis": 0} if per_channel else {}),
            product, Node("QuantizeLinear", ("p", "ys", "yz"), ("y",))]


def _conv_example(per_channel: bool, with_bias: bool) -> Any:
    """x (N=1, C, 1 or 2 spatial dims) -> Conv (groups, strides, pads; dilations and kernel_shape
    set or left to their defaults) with DQ'd 8-bit data, per-tensor or per-channel weights, an int32
    bias at scale x_s * w_s (per tensor, or laid out per channel along axis 0 or -1) -> Q."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        spatial, group = draw(st.integers(1, 2)), draw(st.sampled_from([1, 2]))
        cin, cout = group * draw(st.integers(1, 2)), group * draw(st.integers(1, 3))
        kernel = tuple(draw(st.integers(1, 2)) for _ in range(spatial))
        attrs = {"group": group, "strides": [draw(st.integers(1, 2)) for _ in kernel],
                 "pads": [draw(st.integers(0, 1)) for _ in range(2 * spatial)]}
        if draw(st.booleans()):  # set explicitly (a dilation may differ from 1), or left to the defaults
            attrs.update(kernel_shape=list(kernel), dilations=[draw(st.integers(1, 2)) for _ in kernel])
        reach = [(k - 1) * d + 1 for k, d in zip(kernel, attrs.get("dilations", [1] * spatial))]
        size = tuple(draw(st.integers(r, 4)) for r in reach)
        consts = _qdq(rng, draw, per_channel, (cout, cin // group, *kernel))
        feeds = {"xq": _ints(rng, consts["xz"].dtype, (1, cin, *size))}
        nodes = _qdq_nodes(Node("Conv", ("x", "w", "b" if with_bias else ""), ("p",), attrs), per_channel)
        if with_bias:
            axis = draw(st.sampled_from([0, -1] if per_channel else [None, 0, -1]))
            scale = (consts["xs"] * consts["ws"]).astype(np.float32)
            if axis is not None:
                scale = np.broadcast_to(scale, (cout,)).copy()
            consts.update(bq=rng.integers(-2 ** 16, 2 ** 16, cout).astype(np.int32), bs=scale,
                          bz=np.zeros(scale.shape, np.int32))
            nodes.insert(0, Node("DequantizeLinear", ("bq", "bs", "bz"), ("b",),
                                 {} if axis is None else {"axis": axis}))
        return _case(nodes, feeds, consts)

    return build()


def _matmul_example() -> Any:
    """a (rank 1-3) @ constant 2-D b, both DQ'd 8-bit with per-tensor scales -> Q."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        k, n = draw(st.integers(1, 8)), draw(st.integers(1, 4))
        batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        consts = _qdq(rng, draw, False, (k, n))
        feeds = {"xq": _ints(rng, consts["xz"].dtype, (*batch, k))}
        return _case(_qdq_nodes(Node("MatMul", ("x", "w"), ("p",)), False), feeds, consts)

    return build()


def _relu_example() -> Any:
    """DQ(x) (8-bit, rank 0-3) -> Relu -> Q with the same scale (any normal float) and zero point."""
    from hypothesis import strategies as st

    from tensoregg.strategies import shapes

    @st.composite
    def build(draw: Any) -> tuple[Graph, dict[str, np.ndarray]]:
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        dtype = draw(st.sampled_from([np.uint8, np.int8]))
        scale = np.asarray(draw(st.floats(2.0 ** -10, 2.0 ** 10, width=32)), np.float32)
        consts = {"xs": scale, "xz": _ints(rng, dtype, ())}
        feeds = {"xq": _ints(rng, dtype, draw(shapes(0, 3, max_side=4)))}
        nodes = [Node("DequantizeLinear", ("xq", "xs", "xz"), ("x",)), Node("Relu", ("x",), ("r",)),
                 Node("QuantizeLinear", ("r", "xs", "xz"), ("y",))]
        return _case(nodes, feeds, consts)

    return build()


BREAKS = ("no-zero-point", "int16", "float8", "float16-scale", "per-axis-first", "per-axis-last")
"""How ``_break`` breaks a premise of one QuantizeLinear/DequantizeLinear node of an example."""


COPIES = 3
"""How many broken copies of an example one premise-breaking case holds."""


def _broken(example: Any) -> Any:
    """Premise-breaking cases: ``example`` broken in ``COPIES`` different ways (``BREAKS`` at a Q/DQ
    node), the copies side by side in one graph (a check meets several breaks for the price of one
    saturation); None where no break gives a valid graph."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> Case | None:
        case = draw(example)
        picks = [k for k, n in enumerate(case[0].nodes) if n.op in ("QuantizeLinear", "DequantizeLinear")]
        order = draw(st.permutations([(how, k) for how in BREAKS for k in picks]))
        cases = list(itertools.islice(filter(None, (_break(case, how, k) for how, k in order)), COPIES))
        return merged(cases) if cases else None

    return build()


def _break(case: Case, how: str, k: int) -> Case | None:
    """``case`` with Q/DQ node ``k`` changed: its zero point left out (from every node sharing it),
    its data (DQ) and zero point 16-bit or float8 (an infinity among the data), its scale float16, or
    its scale and zero point per axis along the data's first or last axis (``2 ** k`` apart, on every
    node sharing that scale). None where that is no valid graph or changes nothing."""
    from tensoregg.errors import TensoreggError

    graph, feeds = case
    node = graph.nodes[k]
    data, scale, zero = node.inputs
    consts, feeds = dict(graph.initializers), dict(feeds)
    nodes = list(graph.nodes)
    if how == "no-zero-point":  # from every node that shares it (a rule may match it in several)
        nodes = [Node(n.op, tuple("" if i == zero and j == 2 else i for j, i in enumerate(n.inputs)),
                      n.outputs, n.attrs, n.name, n.domain) for n in nodes]
    elif how in ("int16", "float8"):
        for name in (zero, data) if node.op == "DequantizeLinear" else (zero,):
            where = consts if name in consts else feeds
            old = where[name]
            new = (ml_dtypes.float8_e5m2 if how == "float8" else np.int16 if old.dtype.kind == "i"
                   else np.uint16)
            where[name] = old.astype(new)
            if how == "float8" and name == data and old.size:
                where[name].reshape(-1)[0] = np.inf
    elif how == "float16-scale":
        consts[scale] = consts[scale].astype(np.float16)
    else:  # per axis: the scale and zero point along the first or last axis of the data
        shape = graph.types[data].shape
        if not shape:
            return None
        axis = 0 if how == "per-axis-first" else len(shape) - 1
        n = shape[axis]
        old_axis = node.attrs.get("axis", 1) % len(shape)
        if n == 1 or (consts[scale].size == n and old_axis == axis):
            return None
        consts[scale] = (consts[scale].reshape(-1)[0] * np.exp2(np.arange(n) % 3)).astype(consts[scale].dtype)
        consts[zero] = np.resize(consts[zero], n)
        sharing = [m.op in ("QuantizeLinear", "DequantizeLinear") and m.inputs[1] == scale for m in nodes]
        nodes = [Node(m.op, m.inputs, m.outputs, {**m.attrs, "axis": axis - len(shape)}, m.name, m.domain)
                 if shares else m for m, shares in zip(nodes, sharing)]
    try:
        return Graph({n: TensorType.of(v) for n, v in feeds.items()}, consts, nodes, graph.outputs), feeds
    except TensoreggError:
        return None
