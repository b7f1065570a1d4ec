"""The optimized Graph as accelerator programs: each int8 matrix product (MatMulInteger,
QLinearMatMul) becomes one program (``tensorize.gemm_program``) with its constant weights packed at
compile time and its zero points folded into an int32 bias. The host converts uint8 tensors to int8
(x - 128, exact) and pads the reduction to whole blocks on the way in, and crops and converts back on
the way out. Any other node raises ``UnsupportedOperator`` (a CPU fallback is a later step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tensoregg.errors import UnsupportedOperator
from tensoregg.ir import Graph
from tensoregg.ir.graph import Node
from tensoregg.targets.accel.machines import Accel
from tensoregg.targets.accel.program import AccelProgram
from tensoregg.targets.accel.simulator import Stats
from tensoregg.targets.accel.tensorize import gemm_program


@dataclass
class GemmKernel:
    """One node as a program: the graph value it reads (``a``), the value it writes, and the host's
    conversions around the program."""

    node: str
    op: str
    a: str
    output: str
    program: AccelProgram
    k: int
    n: int
    a_unsigned: bool
    """uint8 ``a``: the host subtracts 128 (the zero point was shifted to match)."""
    out_dtype: str
    """``int32``, ``int8`` or ``uint8`` (whose zero point the program saw shifted by -128)."""

    def run(self, a: np.ndarray) -> tuple[np.ndarray, Stats]:
        """The node's output for ``a``, and the program's Stats."""
        rows = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(1, -1)
        if self.a_unsigned:
            rows = (rows.astype(np.int16) - 128).astype(np.int8)
        padded = np.zeros(self.program.regions[0].shape, np.int8)
        padded[:, :self.k] = rows
        outputs, stats = self.program.run({"a": padded})
        y = outputs["y"][:, :self.n]
        if self.out_dtype == "uint8":
            y = (y.astype(np.int16) + 128).astype(np.uint8)
        return y.reshape(*a.shape[:-1], self.n), stats


@dataclass
class AcceleratorProgram:
    """A Graph whose nodes all run on the accelerator, one program each, in order; ``stats`` holds
    each kernel's Stats of the last run."""

    graph: Graph
    kernels: list[GemmKernel]
    stats: list[Stats] = field(default_factory=list)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        values = {**self.graph.initializers, **feeds}
        self.stats = []
        for kernel in self.kernels:
            values[kernel.output], stats = kernel.run(values[kernel.a])
            self.stats.append(stats)
        return [values[name] for name in self.graph.outputs]


def lower(graph: Graph, config: Accel) -> AcceleratorProgram:
    """Every node of ``graph`` as an accelerator kernel; UnsupportedOperator for the first that
    cannot be."""
    kernels = []
    for node in graph.nodes:
        lowering = _LOWERINGS.get(node.op)
        if lowering is None:
            raise UnsupportedOperator(node.op, node=node.label, target=config.name,
                                      detail="the accelerator runs MatMulInteger and QLinearMatMul so far")
        kernels.append(lowering(node, graph, config))
    return AcceleratorProgram(graph, kernels)


def _unsupported(node: Node, detail: str) -> UnsupportedOperator:
    return UnsupportedOperator(node.op, node=node.label, target="accel", detail=detail)


def _const(node: Node, graph: Graph, index: int, what: str) -> np.ndarray | None:
    """Input ``index`` of ``node`` as a constant (None if omitted); UnsupportedOperator if computed."""
    if index >= len(node.inputs) or not node.inputs[index]:
        return None
    if node.inputs[index] not in graph.initializers:
        raise _unsupported(node, f"{what} must be a constant")
    return graph.initializers[node.inputs[index]]


def _scalar(node: Node, value: np.ndarray | None, what: str) -> int | float:
    if value is None:
        return 0
    if value.size != 1:
        raise _unsupported(node, f"{what} must be one value per tensor")
    return value.reshape(()).item()


def _gemm(node: Node, graph: Graph, config: Accel, scales: np.ndarray | None, y_zero: int,
          out_dtype: str) -> GemmKernel:
    """The kernel of ``a @ (b - b_zp)`` with ``a``'s zero point folded in; inputs at the positions
    of MatMulInteger (``a``, ``b``, ``a_zp``, ``b_zp``) or QLinearMatMul (0, 3, 2, 5)."""
    qlinear = node.op == "QLinearMatMul"
    a_name, b_at, a_zp_at, b_zp_at = (node.inputs[0], 3, 2, 5) if qlinear else (node.inputs[0], 1, 2, 3)
    b = _const(node, graph, b_at, "B")
    assert b is not None
    if b.ndim != 2:
        raise _unsupported(node, f"B must be 2-D, not {list(b.shape)}")
    b_zp = _const(node, graph, b_zp_at, "B's zero point")
    w = b.astype(np.int32) - (0 if b_zp is None else b_zp.astype(np.int32))
    if w.min(initial=0) < -128 or w.max(initial=0) > 127:
        raise _unsupported(node, "B minus its zero point must fit int8")
    a_unsigned = graph.types[a_name].dtype == np.uint8
    a_zp = int(_scalar(node, _const(node, graph, a_zp_at, "A's zero point"), "A's zero point"))
    a_zp -= 128 * a_unsigned
    bias = -a_zp * w.sum(axis=0) if a_zp else None
    m = int(np.prod(graph.types[a_name].shape[:-1], dtype=np.int64))
    program = gemm_program(config, m, w.T.astype(np.int8), bias, scales, y_zero)
    return GemmKernel(node.label, node.op, a_name, node.outputs[0], program, w.shape[0], w.shape[1],
                      a_unsigned, out_dtype)


def _matmul_integer(node: Node, graph: Graph, config: Accel) -> GemmKernel:
    return _gemm(node, graph, config, None, 0, "int32")


def _qlinear_matmul(node: Node, graph: Graph, config: Accel) -> GemmKernel:
    a_scale, b_scale, y_scale = (_const(node, graph, i, name) for i, name in ((1, "a_scale"), (4, "b_scale"),
                                                                              (6, "y_scale")))
    assert a_scale is not None and b_scale is not None and y_scale is not None
    _scalar(node, a_scale, "a_scale")
    n = graph.types[node.inputs[3]].shape[-1]
    f32 = np.float32  # onnxruntime's multiplier a_scale * b_scale / y_scale, in float32
    scales = np.broadcast_to(a_scale.astype(f32).reshape(()) * b_scale.astype(f32)
                             / y_scale.astype(f32).reshape(()), (n,))
    out_dtype = str(graph.types[node.outputs[0]].dtype)
    y_zero = int(_scalar(node, _const(node, graph, 7, "y_zero_point"), "y_zero_point"))
    return _gemm(node, graph, config, scales, y_zero - 128 * (out_dtype == "uint8"), out_dtype)


_LOWERINGS: dict[str, Callable[[Node, Graph, Accel], GemmKernel]] = {
    "MatMulInteger": _matmul_integer,
    "QLinearMatMul": _qlinear_matmul,
}
"""Op -> its lowering onto the accelerator."""
