"""Cost models: the cost of one e-node given its input and output types and the target.

A cost model must be non-negative, so a term costs at least as much as its subterms. Leaves and
``Outputs.get`` are free; so is a node whose inputs are all compile-time constants, because it is
folded into a constant before anything runs.
"""

from __future__ import annotations

import math
from typing import Protocol

from tensoregg.ir.ops.fused import FUSED
from tensoregg.ir.target import Target
from tensoregg.ir.terms import CONSTRUCTORS, ENode
from tensoregg.ir.types import TensorType


class CostModel(Protocol):
    def __call__(self, node: ENode, inputs: list[TensorType | None], outputs: list[TensorType],
                 target: Target) -> float:
        """Seconds (or any additive unit) that ``node`` costs on ``target``."""
        ...


def _bytes(t: TensorType | None) -> int:
    return 0 if t is None else t.size * t.dtype.itemsize


def flops(node: ENode, inputs: list[TensorType | None], outputs: list[TensorType]) -> float:
    """Arithmetic work of a node: 2 per multiply-accumulate for the linear ops (integer ones too),
    else per output element the operations its op's registry entry states (``OpDef.ops_per_element``);
    a fused op counts as its base op plus one operation per output element for each epilogue step
    (residual add, activation)."""
    out = outputs[0] if outputs else None
    if out is None:
        return 0.0
    fused = FUSED.get(node.op)
    if fused is None:
        return _base_flops(node.op, node, inputs, out)
    return _base_flops(fused.base, node, inputs, out) + out.size * fused.epilogue_steps(node.attrs, inputs)


INTEGER_CONTRACTIONS = {"QLinearConv": ("Conv", 3), "ConvInteger": ("Conv", 1),
                        "QLinearMatMul": ("MatMul", 3), "MatMulInteger": ("MatMul", 1)}
"""The integer forms of the linear ops: the op whose work they do, and the position of their weights."""


def _base_flops(op: str, node: ENode, inputs: list[TensorType | None], out: TensorType) -> float:
    """``flops`` of ``node`` computed as ``op`` (a fused op's base op; an integer contraction's
    float form, one operation per multiply and per add as there)."""
    if op in INTEGER_CONTRACTIONS:
        base, w = INTEGER_CONTRACTIONS[op]
        return _base_flops(base, node, [inputs[0], inputs[w] if w < len(inputs) else None], out)
    a, b = [*inputs, None, None][:2]
    if op in ("MatMul", "Gemm") and a is not None and a.rank >= 1:
        k = a.shape[-2] if op == "Gemm" and node.attrs.get("transA") else a.shape[-1]
        return 2.0 * out.size * k
    if op in ("Conv", "ConvTranspose") and a is not None and b is not None:
        window = math.prod(b.shape[2:])
        if op == "Conv":
            return 2.0 * out.size * b.shape[1] * window
        return 2.0 * a.size * b.shape[1] * window
    if op == "Einsum":
        return 2.0 * out.size * _summed(str(node.attrs.get("equation", "")), inputs)
    ctor = CONSTRUCTORS.get(op)
    return float(out.size * (ctor.opdef.ops_per_element if ctor is not None else 1))


def _summed(equation: str, inputs: list[TensorType | None]) -> int:
    """The number of products an Einsum sums per output element: the extents of the labels its
    output lacks (implicit output: the labels that occur once)."""
    terms, arrow, output = equation.replace(" ", "").partition("->")
    extents: dict[str, int] = {}
    counts: dict[str, int] = {}
    for term, t in zip(terms.split(","), inputs):
        before, _, after = term.partition("...")
        dims = [] if t is None else list(t.shape)
        for label, dim in [*zip(before, dims), *zip(after, dims[len(dims) - len(after):] if after else [])]:
            extents[label] = max(extents.get(label, 1), dim)
            counts[label] = counts.get(label, 0) + 1
    kept = set(output) if arrow else {label for label, n in counts.items() if n == 1}
    return math.prod(d for label, d in extents.items() if label not in kept)


def analytic_cost(node: ENode, inputs: list[TensorType | None], outputs: list[TensorType],
                  target: Target) -> float:
    """max(compute time, memory time) + one kernel launch: the roofline of a single kernel."""
    moved = sum(_bytes(t) for t in inputs) + sum(_bytes(t) for t in outputs)
    return max(flops(node, inputs, outputs) / target.peak_flops,
               moved / target.mem_bandwidth) + target.kernel_overhead_s
