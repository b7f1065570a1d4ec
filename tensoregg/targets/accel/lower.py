"""The optimized Graph as accelerator programs: each int8 matrix product or convolution
(MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv) becomes one program with its weights
packed and its zero points folded into an int32 bias when it is built. A 2-D convolution runs
directly (``conv.conv_program``: the DMA pads the input with its zero point); other convolutions
(1-D, 3-D, padding over 15) run as a matrix product (``tensorize.gemm_program``) of the input the
host unfolds into rows (im2col); a grouped one, one per group. The host also shifts uint8 tensors to
int8 (by -128, exactly) and back, and packs and unpacks tiles. Any other node raises
``UnsupportedOperator`` (a CPU fallback is a later step).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from tensoregg.errors import UnsupportedOperator
from tensoregg.ir import Graph
from tensoregg.ir.graph import Node
from tensoregg.ir.ops.nn import ConvWindow, conv_window
from tensoregg.targets.accel.conv import Geometry, conv_program
from tensoregg.targets.accel.machines import Accel
from tensoregg.targets.accel.program import AccelProgram
from tensoregg.targets.accel.simulator import Stats
from tensoregg.targets.accel.tensorize import gemm_program

Convert = Callable[[np.ndarray], np.ndarray]


@dataclass
class GemmKernel:
    """One node as a program: the graph value it reads, the value it writes, and the host's
    conversions around the program (``prepare``: the value -> the product's int8 rows; ``finish``:
    the product's int8 or int32 rows -> the node's output)."""

    source: str
    output: str
    program: AccelProgram
    k: int
    n: int
    prepare: Convert
    finish: Convert

    def run(self, values: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Stats]:
        """The node's output for the graph's ``values``, and the program's Stats."""
        rows = self.prepare(values[self.source])
        padded = np.zeros((rows.shape[0], self.program.regions[0].shape[1]), np.int8)
        padded[:, :self.k] = rows
        outputs, stats = self.program.run({"a": padded})
        return self.finish(outputs["y"][:, :self.n]), stats


@dataclass
class SplitKernel:
    """A node run as several kernels on parts of its input: a matmul whose B has batch axes (one
    product per batch index of A broadcast to them; the results stacked), or a grouped convolution
    (one per group of channels; the results concatenated along the channels)."""

    source: str
    output: str
    shape: tuple[int, ...]
    """The input's shape (broadcast to it)."""
    parts: list[Part]
    """Where each kernel's part of the input is, and the kernel."""
    out_shape: tuple[int, ...]
    join: int | None
    """The axis the results are concatenated along; None: stacked."""

    def run(self, values: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Stats]:
        """The node's output for the graph's ``values``, and the Stats of its kernels together."""
        x = np.broadcast_to(values[self.source], self.shape)
        results = [k.run({k.source: x[where]}) for where, k in self.parts]
        ys = [y for y, _ in results]
        y = np.stack(ys) if self.join is None else np.concatenate(ys, axis=self.join)
        return y.reshape(self.out_shape), _total([s for _, s in results])


def _total(runs: list[Stats]) -> Stats:
    """The Stats of programs run one after another."""
    total = Stats(runs[0].macs_per_cycle)
    for s in runs:
        total.cycles += s.cycles
        total.busy.update(s.busy)
        total.stalls.update(s.stalls)
        total.instructions.update(s.instructions)
        total.dma_read += s.dma_read
        total.dma_written += s.dma_written
        total.macs += s.macs
    return total


@dataclass
class ConvKernel:
    """A 2-D convolution run by ``conv.conv_program`` once per image: the host only shifts uint8
    to int8, repeats the channels for multi-part weights and packs channels into BLOCK_IN tiles."""

    source: str
    output: str
    program: AccelProgram
    out_channels: int
    x_unsigned: bool
    y_unsigned: bool
    parts: int
    y_shape: tuple[int, ...]

    def run(self, values: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Stats]:
        """The node's output for the graph's ``values``, and the Stats of its images together."""
        x = _shift(self.x_unsigned, values[self.source])
        x = np.tile(x, (1, self.parts, 1, 1)) if self.parts > 1 else x
        blocks, height, width, block = self.program.regions[0].shape
        packed = np.zeros((x.shape[0], blocks * block, height, width), np.int8)
        packed[:, :x.shape[1]] = x
        packed = packed.reshape(x.shape[0], blocks, block, height, width).transpose(0, 1, 3, 4, 2)
        results = [self.program.run({"x": image}) for image in packed]
        y = np.stack([out["y"][..., :self.out_channels].transpose(2, 0, 1) for out, _ in results])
        return _unshift(self.y_unsigned, y).reshape(self.y_shape), _total([s for _, s in results])


Part = tuple[tuple[int | slice, ...], GemmKernel | ConvKernel]
"""A part of a SplitKernel: where its input is in the node's input, and its kernel."""
Built = GemmKernel | SplitKernel | ConvKernel
"""A node's kernel, its program(s) built."""


@dataclass
class DeferredKernel:
    """A node whose weights, zero points or scales are computed or fed: its program is built when
    it runs, once per distinct set of those operands."""

    node: Node
    graph: Graph
    config: Accel
    built: dict[bytes, Built] = field(default_factory=dict)

    def run(self, values: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Stats]:
        """The node's output for the graph's ``values``, and the program's Stats."""
        x = self.node.inputs[_FORMS[self.node.op].x]
        operands = {name: values[name] for name in self.node.inputs if name and name != x}
        key = b"".join(np.ascontiguousarray(v).tobytes() + str(v.dtype).encode() for v in operands.values())
        if key not in self.built:
            self.built[key] = _kernel(self.node, self.graph, self.config, operands)
        return self.built[key].run(values)

    @property
    def output(self) -> str:
        return self.node.outputs[0]


@dataclass
class AcceleratorProgram:
    """A Graph whose nodes all run on the accelerator, one program each, in order; ``stats`` holds
    each kernel's Stats of the last run."""

    graph: Graph
    kernels: list[Built | DeferredKernel]
    stats: list[Stats] = field(default_factory=list)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        values = {**self.graph.initializers, **feeds}
        self.stats = []
        for kernel in self.kernels:
            values[kernel.output], stats = kernel.run(values)
            self.stats.append(stats)
        return [values[name] for name in self.graph.outputs]


def lower(graph: Graph, config: Accel) -> AcceleratorProgram:
    """Every node of ``graph`` as an accelerator kernel; UnsupportedOperator for the first that
    cannot be."""
    kernels = []
    for node in graph.nodes:
        if node.op not in _LOWERINGS:
            raise _unsupported(node, config, f"the accelerator runs {', '.join(_LOWERINGS)} so far")
        kernels.append(_LOWERINGS[node.op](node, graph, config))
    return AcceleratorProgram(graph, kernels)


@dataclass(frozen=True)
class _Quantized:
    """Where a node's operands are: data ``x`` and weights ``w`` and their zero points, and for the
    QLinear forms the scales and the output zero point (input positions; -1: none)."""

    x: int
    w: int
    x_zp: int
    w_zp: int
    x_scale: int = -1
    w_scale: int = -1
    y_scale: int = -1
    y_zp: int = -1
    bias: int = -1


_FORMS = {"MatMulInteger": _Quantized(0, 1, 2, 3), "ConvInteger": _Quantized(0, 1, 2, 3),
          "QLinearMatMul": _Quantized(0, 3, 2, 5, 1, 4, 6, 7),
          "QLinearConv": _Quantized(0, 3, 2, 5, 1, 4, 6, 7, 8)}


def _unsupported(node: Node, config: Accel, detail: str) -> UnsupportedOperator:
    return UnsupportedOperator(node.op, node=node.label, target=config.name, detail=detail)


def _input(node: Node, values: Mapping[str, np.ndarray], index: int) -> np.ndarray | None:
    """Input ``index`` of ``node`` among ``values`` (None if omitted)."""
    if index < 0 or index >= len(node.inputs) or not node.inputs[index]:
        return None
    return values[node.inputs[index]]


def _scalar(node: Node, config: Accel, value: np.ndarray | None, what: str) -> int | float:
    if value is None:
        return 0
    if value.size != 1:
        raise _unsupported(node, config, f"{what} must be one value per tensor")
    return value.reshape(()).item()


def _shift(unsigned: bool, rows: np.ndarray) -> np.ndarray:
    """uint8 values as int8 ones, minus 128 (exact); int8 values as they are."""
    return (rows.astype(np.int16) - 128).astype(np.int8) if unsigned else rows


def _lower(node: Node, graph: Graph, config: Accel) -> Built | DeferredKernel:
    """The node's kernel, built now where its operands other than ``x`` are constants, else when
    it runs (``DeferredKernel``)."""
    x = node.inputs[_FORMS[node.op].x]
    if all(not name or name == x or name in graph.initializers for name in node.inputs):
        return _kernel(node, graph, config, graph.initializers)
    return DeferredKernel(node, graph, config)


def _kernel(node: Node, graph: Graph, config: Accel,
            values: Mapping[str, np.ndarray]) -> Built:
    """The kernel of ``node`` with its operands but ``x`` in ``values``; a matmul whose B has batch
    axes runs one product per batch index, a grouped convolution one per group (``SplitKernel``)."""
    form, name = _FORMS[node.op], node.inputs[_FORMS[node.op].w]
    w, conv, groups = values[name], "Conv" in node.op, node.attrs.get("group", 1)
    x, y = graph.types[node.inputs[form.x]].shape, graph.types[node.outputs[0]].shape
    parts: list[Part] = []
    if conv and groups > 1:
        c, o = x[1] // groups, w.shape[0] // groups
        per_channel = [n for n in node.inputs[1:] if n and n in values and values[n].ndim == 1
                       and values[n].size == w.shape[0] > 1]  # the weights' zero points, scales, bias
        for g in range(groups):
            group = {n: values[n][g * o:(g + 1) * o] for n in (name, *per_channel)}
            kernel = _product(node, graph, config, {**values, **group}, (x[0], c, *x[2:]), (y[0], o, *y[2:]))
            parts.append(((slice(None), slice(g * c, (g + 1) * c)), kernel))
        return SplitKernel(node.inputs[form.x], node.outputs[0], tuple(x), parts, tuple(y), 1)
    if conv or w.ndim == 2:
        return _product(node, graph, config, values)
    batch = y[:-2]
    ws = np.broadcast_to(w, (*batch, *w.shape[-2:]))
    for i in np.ndindex(*batch):
        parts.append((i, _product(node, graph, config, {**values, name: ws[i]}, x[-2:], y[-2:])))
    return SplitKernel(node.inputs[form.x], node.outputs[0], (*batch, *x[-2:]), parts, tuple(y), None)


def _product(node: Node, graph: Graph, config: Accel, values: Mapping[str, np.ndarray],
             x_shape: tuple[int, ...] | None = None,
             y_shape: tuple[int, ...] | None = None) -> GemmKernel | ConvKernel:
    """The kernel of a quantized product with the operands in ``values`` (all but ``x``): rows of
    ``x`` (or of its im2col) times ``w - w_zp``, with ``x``'s zero point folded into the bias,
    requantized for the QLinear forms (``x_shape``, ``y_shape``: one batch index's, else the node's)."""
    form, conv = _FORMS[node.op], "Conv" in node.op
    w = _input(node, values, form.w)
    assert w is not None
    w_zp = _input(node, values, form.w_zp)
    if w_zp is not None:
        w_zp = w_zp.reshape(-1, *[1] * (w.ndim - 1)) if conv else w_zp.reshape(-1)
    weights = w.astype(np.int32) - (0 if w_zp is None else w_zp.astype(np.int32))
    weights = weights.reshape(w.shape[0], -1) if conv else weights.T  # (N, K)
    parts = _int8_parts(weights)
    x_type, y_type = graph.types[node.inputs[form.x]], graph.types[node.outputs[0]]
    x_unsigned, y_unsigned = x_type.dtype == np.uint8, y_type.dtype == np.uint8
    x_shape, y_shape = x_shape or x_type.shape, y_shape or y_type.shape
    x_zp = int(_scalar(node, config, _input(node, values, form.x_zp), "x's zero point"))
    x_zp -= 128 * x_unsigned
    bias = _input(node, values, form.bias)
    total = (np.zeros(weights.shape[0], np.int64) if bias is None else bias.astype(np.int64)) \
        - x_zp * weights.sum(axis=1)
    scales, y_zp = None, 0
    if form.y_scale >= 0:
        x_scale, w_scale, y_scale = (_input(node, values, i)
                                     for i in (form.x_scale, form.w_scale, form.y_scale))
        assert x_scale is not None and w_scale is not None and y_scale is not None
        _scalar(node, config, x_scale, "x's scale")
        _scalar(node, config, y_scale, "y's scale")
        # the multiplier x_scale * w_scale / y_scale in the scales' dtype (onnxruntime: float32)
        multiplier = x_scale.reshape(()) * w_scale.reshape(-1) / y_scale.reshape(())
        scales = np.broadcast_to(multiplier.astype(np.float32), (weights.shape[0],))
        y_zp = int(_scalar(node, config, _input(node, values, form.y_zp), "y's zero point"))
        y_zp -= 128 * y_unsigned
    window = conv_window(dict(node.attrs), x_shape[2:], w.shape[2:]) if conv else None

    def prepare(x: np.ndarray) -> np.ndarray:
        x = _shift(x_unsigned, x)
        rows = x.reshape(-1, x.shape[-1]) if window is None else _im2col(x, window, x_zp)
        return np.tile(rows, (1, len(parts))) if len(parts) > 1 else rows

    def finish(y: np.ndarray) -> np.ndarray:
        y = _unshift(y_unsigned, y)
        if window is not None:  # (N x positions, O) -> (N, O, *positions)
            y = y.reshape(x_shape[0], -1, y.shape[1]).transpose(0, 2, 1)
        return y.reshape(y_shape)

    m = x_shape[0] * int(np.prod(window.out)) if window else int(np.prod(x_shape[:-1]))
    bias = total.astype(np.int32) if total.any() else None
    if window is not None and len(window.out) == 2:  # directly, without unfolding the input
        (kh, kw), (sh, sw), (dh, dw), (top, left), (oh, ow) = (
            window.kernel, window.strides, window.dilations, window.begin, window.out)
        geometry = Geometry(x_shape[1] * len(parts), x_shape[2], x_shape[3], (kh, kw), (sh, sw), (dh, dw),
                            (top, left), (oh, ow))
        w4 = np.concatenate([p.reshape(w.shape[0], -1, *w.shape[2:]) for p in parts], axis=1)
        direct = conv_program(config, geometry, w4, bias, scales, y_zp, x_zp)
        if direct is not None:
            return ConvKernel(node.inputs[form.x], node.outputs[0], direct, w.shape[0],
                              x_unsigned, y_unsigned, len(parts), tuple(y_shape))
    program = gemm_program(config, m, np.concatenate(parts, axis=1), bias, scales, y_zp)
    return GemmKernel(node.inputs[form.x], node.outputs[0], program,
                      weights.shape[1] * len(parts), weights.shape[0], prepare, finish)


def _int8_parts(weights: np.ndarray) -> list[np.ndarray]:
    """int8 matrices that sum to ``weights``: itself where it fits int8; two or three where the
    weights minus their zero point do not (uint8 weights with a zero point: -255 to 255). The input
    rows are then repeated as many times along the reduction."""
    parts: list[np.ndarray] = []
    rest = weights
    while not parts or rest.any():
        part = np.clip(rest, -128, 127)
        parts.append(part.astype(np.int8))
        rest = rest - part
    return parts


def _unshift(unsigned: bool, y: np.ndarray) -> np.ndarray:
    """A program's int8 output as uint8 (plus 128) where the node's output is uint8."""
    return (y.astype(np.int16) + 128).astype(np.uint8) if unsigned else y


def _im2col(x: np.ndarray, window: ConvWindow, pad: int) -> np.ndarray:
    """The convolution's input (N, C, *spatial) as rows (N x output positions, C x kernel taps),
    padded with ``pad`` (the zero point), in the order of the weights' (C, *kernel) columns."""
    padded = np.pad(x, [(0, 0), (0, 0), *zip(window.begin, window.end)], constant_values=pad)
    taps = []
    for offsets in itertools.product(*(range(k) for k in window.kernel)):
        taps.append(padded[(slice(None), slice(None), *(
            slice(o * d, o * d + (n - 1) * s + 1, s) for o, d, n, s in
            zip(offsets, window.dilations, window.out, window.strides)))])
    stacked = np.stack(taps, axis=2)  # (N, C, taps, *out)
    n, c = x.shape[:2]
    return stacked.reshape(n, c * len(taps), -1).transpose(0, 2, 1).reshape(-1, c * len(taps))


_LOWERINGS: dict[str, Callable[[Node, Graph, Accel], Built | DeferredKernel]] = \
    dict.fromkeys(_FORMS, _lower)
"""Op -> its lowering onto the accelerator."""
