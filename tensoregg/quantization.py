"""Static post-training quantization into ONNX's QDQ format, as onnxruntime's ``quantize_static``.

The float model runs on the calibration feeds in the reference interpreter, which records each
activation's minimum and maximum (MinMax calibration). Activations feeding or leaving Conv and
MatMul (graph outputs stay float), and feeding Gemm, then pass through a QuantizeLinear/
DequantizeLinear pair (uint8, asymmetric); weights become int8 initializers (symmetric in
[-127, 127], per output channel for Conv with ``per_channel``) read through DequantizeLinear, and
biases int32 with scale x_scale * w_scale and zero point 0. A Relu, or a Clip from 0, that alone
consumes a Conv or MatMul output is dropped: its output's range is calibrated, so its quantization
(zero point 0, saturating at the calibrated maximum) clips the same values. Scales and zero points
follow onnxruntime's ``compute_scale_zp``, so the rules of ``rules/quantization.py`` can turn each
DQ -> Conv/MatMul -> Q into an integer kernel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensoregg.errors import InputError, InvalidModel, ParameterError
from tensoregg.frontends.onnx import import_onnx, load_model
from tensoregg.ir import Graph, run_graph

PRODUCTS = {"Conv": (1, 2), "MatMul": (1, -1), "Gemm": (1, 2)}
"""The ops whose inputs are quantized: (weight input, bias input or -1)."""
OUTPUT_QUANTIZED = {"Conv", "MatMul"}
"""The ops whose outputs are quantized too: an integer kernel (QLinearConv, QLinearMatMul) replaces them."""
U8 = (0, 255)
I8_SYMMETRIC = (-127, 127)


@dataclass(frozen=True)
class QParams:
    """A scale (float32, scalar or per channel) and zero point of one quantized tensor."""

    scale: np.ndarray
    zero_point: np.ndarray


def scale_zero_point(rmin: np.ndarray | np.floating, rmax: np.ndarray | np.floating, qmin: int, qmax: int,
                     symmetric: bool, dtype: type) -> QParams:
    """onnxruntime's ``compute_scale_zp``: the range widened to hold 0 (and made symmetric), the
    scale (rmax - rmin) / (qmax - qmin) computed in float64 and stored as float32, the zero point
    rounded half to even; a range narrower than float32's ``tiny`` gets scale 1."""
    rmin = np.minimum(np.asarray(rmin, np.float32), np.float32(0))
    rmax = np.maximum(np.asarray(rmax, np.float32), np.float32(0))
    if symmetric:
        rmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin = -rmax
    scale = (rmax.astype(np.float64) - rmin.astype(np.float64)) / float(qmax - qmin)
    tiny = scale < np.finfo(np.float32).tiny
    zero = (np.full(scale.shape, np.round((qmin + qmax) / 2.0)) if symmetric
            else np.round(qmin - rmin / np.where(tiny, 1.0, scale)))
    return QParams(np.where(tiny, 1.0, scale).astype(np.float32), np.where(tiny, 0, zero).astype(dtype))


def quantize_array(x: np.ndarray, q: QParams, lo: int, hi: int, dtype: type, axis: int = 0) -> np.ndarray:
    """``clip(round_half_even(x / scale) + zero_point)`` in float32, the scale per ``axis`` if a vector."""
    shape = [-1 if i == axis else 1 for i in range(x.ndim)] if q.scale.ndim else []
    zero_point = q.zero_point.reshape(shape).astype(np.float32)
    y = np.rint(x.astype(np.float32) / q.scale.reshape(shape)) + zero_point
    return np.clip(y, lo, hi).astype(dtype)


def quantize(model: onnx.ModelProto | str | bytes, calibration_inputs: Sequence[Mapping[str, np.ndarray]], *,
             per_channel: bool = True) -> onnx.ModelProto:
    """``model`` quantized statically in QDQ format from ``calibration_inputs`` (feeds: input name
    -> float32 array, the model's declared shapes), as onnxruntime's ``quantize_static`` with uint8
    asymmetric activations, int8 symmetric weights (per output channel for Conv with
    ``per_channel``) and int32 biases. The result passes ``onnx.checker``."""
    proto = load_model(model)
    feeds = _checked_feeds(proto, calibration_inputs)
    plan = _Plan(proto)
    ranges = _calibrate(proto, feeds, sorted(plan.activations))
    out = plan.build(ranges, per_channel)
    onnx.checker.check_model(out)
    return out


def _checked_feeds(proto: onnx.ModelProto, feeds: object) -> list[dict[str, np.ndarray]]:
    """The feeds as float32 arrays; InputError naming the feed and input whose name, type or shape
    does not fit the model's inputs."""
    if isinstance(feeds, Mapping) or not isinstance(feeds, Sequence) or not feeds:
        raise ParameterError("calibration_inputs must be a non-empty list of feeds (input name -> array)")
    weights = {t.name for t in proto.graph.initializer}
    declared = {i.name: i for i in proto.graph.input if i.name not in weights}
    checked = []
    for k, feed in enumerate(feeds):
        if not isinstance(feed, Mapping) or set(feed) != set(declared):
            got = sorted(feed) if isinstance(feed, Mapping) else type(feed).__name__
            raise InputError(f"calibration feed {k}: needs the inputs {sorted(declared)}, got {got}")
        arrays = {}
        for name, info in declared.items():
            a = np.asarray(feed[name])
            dims = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
            if a.dtype != np.float32 or info.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                raise InputError(f"calibration feed {k}: input {name!r} must be float32, got {a.dtype}")
            if len(dims) != a.ndim or any(d is not None and d != s for d, s in zip(dims, a.shape)):
                raise InputError(f"calibration feed {k}: input {name!r} has shape {list(a.shape)}, "
                                 f"the model declares {[d if d is not None else '?' for d in dims]}")
            arrays[name] = a
        checked.append(arrays)
    return checked


def _calibrate(proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]],
               names: list[str]) -> dict[str, tuple[np.float32, np.float32]]:
    """Each of ``names``' minimum and maximum over all feeds, by the reference interpreter."""
    ranges: dict[str, tuple[np.float32, np.float32]] = {}
    graphs: dict[tuple, Graph] = {}
    for feed in feeds:
        key = tuple((n, a.shape) for n, a in sorted(feed.items()))
        if key not in graphs:
            g = import_onnx(proto, input_shapes={n: a.shape for n, a in feed.items()})
            graphs[key] = Graph(g.inputs, g.initializers, g.nodes, names, g.name)
        for name, v in zip(names, run_graph(graphs[key], feed)):
            lo, hi = ranges.get(name, (np.float32(np.inf), np.float32(-np.inf)))
            ranges[name] = (min(lo, np.float32(v.min(initial=np.inf))),
                            max(hi, np.float32(v.max(initial=-np.inf))))
    return ranges


class _Plan:
    """Which tensors of ``proto`` are quantized, and the QDQ model built from their ranges."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.proto = proto
        self.consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        for node in proto.graph.node:  # also constants: Constant, Identity of a constant (torch's export)
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            elif node.op_type == "Identity" and node.input[0] in self.consts:
                self.consts[node.output[0]] = self.consts[node.input[0]]
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in proto.graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        outputs = {o.name for o in proto.graph.output}
        self.activations: set[str] = set()
        self.weights: dict[str, str] = {}
        """Weight name -> the op it is a weight of."""
        self.biases: dict[str, tuple[str, str]] = {}
        """Bias name -> (activation, weight): its scale is their scales' product."""
        self.dropped: dict[str, str] = {}
        """A dropped Relu/Clip's output -> its input (the product's output)."""
        for node in proto.graph.node:
            if node.op_type not in PRODUCTS or node.domain not in ("", "ai.onnx"):
                continue
            w_at, b_at = PRODUCTS[node.op_type]
            x, w = node.input[0], node.input[w_at]
            self.activations.add(x)
            bias = node.input[b_at] if 0 <= b_at < len(node.input) else ""
            if not self._float_const(w):  # weights computed at run time: quantized as activations
                self.activations.add(w)
            else:
                self.weights[w] = node.op_type
                if bias and self._float_const(bias) and self.consts[bias].ndim == 1 and x not in self.consts:
                    self.biases[bias] = (x, w)
            y = node.output[0]
            if node.op_type not in OUTPUT_QUANTIZED or y in outputs:  # a graph output stays float
                continue
            after = consumers.get(y, [])
            if len(after) == 1 and self._clips_below_zero(after[0]) and after[0].output[0] not in outputs:
                self.dropped[after[0].output[0]] = y
                y = after[0].output[0]
            self.activations.add(y)
        self.activations -= set(self.consts)

    def _float_const(self, name: str) -> bool:
        return name in self.consts and self.consts[name].dtype == np.float32

    def _clips_below_zero(self, node: onnx.NodeProto) -> bool:
        """A Relu, or a Clip from the constant 0: with its output's range calibrated, the
        quantization (zero point 0, saturating at the calibrated maximum) clips as it does."""
        if node.op_type == "Relu":
            return True
        return (node.op_type == "Clip" and len(node.input) == 3
                and all(self._float_const(i) for i in node.input[1:])
                and float(self.consts[node.input[1]]) == 0.0)

    def build(self, ranges: Mapping[str, tuple[np.float32, np.float32]],
              per_channel: bool) -> onnx.ModelProto:
        graph = self.proto.graph
        inits = {t.name: t for t in graph.initializer}
        params: dict[str, QParams] = {}
        renamed: dict[str, str] = {}
        nodes: list[onnx.NodeProto] = []
        for name in sorted(self.activations):
            lo, hi = ranges[name]
            params[name] = q = scale_zero_point(lo, hi, *U8, False, np.uint8)
            source = self.dropped.get(name, name)
            inits[f"{name}_scale"] = numpy_helper.from_array(q.scale, f"{name}_scale")
            inits[f"{name}_zero_point"] = numpy_helper.from_array(q.zero_point, f"{name}_zero_point")
            nodes.append(helper.make_node("QuantizeLinear", [source, f"{name}_scale", f"{name}_zero_point"],
                                          [f"{name}_quantized"], name=f"{name}_QuantizeLinear"))
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_quantized", f"{name}_scale",
                                                               f"{name}_zero_point"],
                                          [f"{name}_dequantized"], name=f"{name}_DequantizeLinear"))
            renamed[name] = f"{name}_dequantized"
        for w, op in self.weights.items():
            value = self.consts[w]
            channel = per_channel and op == "Conv"
            axes = tuple(range(1, value.ndim)) if channel else None
            q = scale_zero_point(value.min(axis=axes), value.max(axis=axes), *I8_SYMMETRIC, True, np.int8)
            params[w] = q
            self._dequantized(w, quantize_array(value, q, *I8_SYMMETRIC, np.int8), q, inits, nodes, renamed)
        for b, (x, w) in self.biases.items():
            scale = (params[x].scale * params[w].scale).astype(np.float32)
            q = QParams(scale, np.zeros(scale.shape, np.int32))
            info = np.iinfo(np.int32)
            value = quantize_array(self.consts[b], q, info.min, info.max, np.int32)
            self._dequantized(b, value, q, inits, nodes, renamed)
        replaced = set(self.dropped) | set(self.weights) | set(self.biases)
        for node in graph.node:
            if node.output and node.output[0] in replaced:  # a dropped activation; a weight's Identity
                continue
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.ClearField("input")
            copy.input.extend(renamed.get(i, i) for i in node.input)
            nodes.append(copy)
        kept_inits = [t for n, t in inits.items() if n not in self.weights and n not in self.biases]
        nodes = _ordered(nodes, {i.name for i in graph.input} | set(inits))
        new = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), kept_inits)
        opsets = [o for o in self.proto.opset_import if o.domain not in ("", "ai.onnx")]
        version = max([o.version for o in self.proto.opset_import if o.domain in ("", "ai.onnx")] + [13])
        out = helper.make_model(new, opset_imports=[helper.make_opsetid("", version), *opsets],
                                producer_name="tensoregg.quantize")
        out.ir_version = self.proto.ir_version
        return out

    def _dequantized(self, name: str, value: np.ndarray, q: QParams, inits: dict[str, onnx.TensorProto],
                     nodes: list[onnx.NodeProto], renamed: dict[str, str]) -> None:
        """Constant ``name`` replaced by DequantizeLinear of its quantized ``value`` (axis 0 if per
        channel)."""
        parts = [f"{name}_{suffix}" for suffix in ("quantized", "scale", "zero_point")]
        for part, array in zip(parts, (value, q.scale, q.zero_point)):
            inits[part] = numpy_helper.from_array(array, part)
        node = helper.make_node("DequantizeLinear", parts, [f"{name}_dequantized"],
                                name=f"{name}_DequantizeLinear")
        if q.scale.ndim:
            node.attribute.append(helper.make_attribute("axis", 0))
        nodes.append(node)
        renamed[name] = f"{name}_dequantized"


def _ordered(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` in an order where each reads only what is available or produced before it."""
    ready, pending, done = set(available) | {""}, list(nodes), []
    while pending:
        later = []
        for node in pending:
            if all(i in ready for i in node.input):
                done.append(node)
                ready.update(node.output)
            else:
                later.append(node)
        if len(later) == len(pending):
            raise InvalidModel(f"{later[0].op_type} node {later[0].name!r} reads a value no node makes "
                               "before it")
        pending = later
    return done
