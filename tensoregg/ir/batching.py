"""Rows of a batch computed apart: which axis of each value carries the batch (``batch_axes``), and
whether two graphs imported at different batch sizes compute the same function of each row
(``same_rows``).

A model compiled for a symbolic batch dimension runs a batch of any size as chunks of the sizes it
was compiled for (``tensoregg.batching``). That is exact only if every output row depends on the
same input row alone, by a function that does not depend on the row's position or on the batch
size. ``batch_axes`` proves the first on one graph, op by op, from the op's semantics (an op it does
not know, or one that mixes rows, such as a reduction over the batch axis or a batch-wide
normalization, is refused with a ShapeError naming the node). ``same_rows`` checks the second by
comparing the graphs imported at two sizes: the same nodes, attributes and constants, and types
that differ only in the batch axis's size (a constant that depends on the batch size, e.g. a
division by it, makes them differ).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any, NoReturn

import numpy as np

from tensoregg.errors import ShapeError
from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.registry import get_op

Axis = int | None
"""The axis of a value that carries the batch rows; None for a value that does not depend on them."""


@dataclass(frozen=True)
class Site:
    """One node as a rule sees it: its graph, and the batch axis of each input (None: none)."""

    graph: Graph
    node: Node
    axes: tuple[Axis, ...]

    def shape(self, value: str) -> tuple[int, ...]:
        return self.graph.types[value].shape

    def rank(self, i: int) -> int:
        return len(self.shape(self.node.inputs[i]))

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape(self.node.outputs[0])

    def attr(self, name: str) -> Any:
        return self.node.attrs.get(name)

    def axis_attr(self, name: str, rank: int, default: int = 0) -> int:
        value = self.attr(name)
        value = default if value is None else int(value)
        return value + rank if value < 0 else value

    def constant(self, i: int) -> np.ndarray | None:
        """Input ``i``'s value when it is a constant (None if omitted or not constant)."""
        if i >= len(self.node.inputs) or not self.node.inputs[i]:
            return None
        return self.graph.initializers.get(self.node.inputs[i])

    def only(self, i: int) -> int:
        """The batch axis of input ``i``, which must be the only input that has one."""
        for k, a in enumerate(self.axes):
            if k != i and a is not None:
                self.fail(f"inputs {i} and {k} both carry batch rows")
        a = self.axes[i]
        if a is None:
            self.fail(f"input {i} does not carry the batch rows")
        return a

    def fail(self, why: str) -> NoReturn:
        raise ShapeError(f"{self.node.op} node {self.node.label!r}: {why}; its batch rows are not computed "
                         f"apart, so the batch dimension cannot stay symbolic (fix it with input_shapes)")


Rule = Callable[[Site], Sequence[Axis]]


def batch_axes(graph: Graph, batched: Mapping[str, int]) -> dict[str, Axis]:
    """The batch axis of every value of ``graph`` whose inputs ``batched`` carry the batch rows on the
    given axes; ShapeError naming the first node that does not keep rows apart."""
    axes: dict[str, Axis] = {name: batched.get(name) for name in graph.inputs}
    axes.update(dict.fromkeys(graph.initializers))
    for node in graph.nodes:
        site = Site(graph, node, tuple(axes.get(i) if i else None for i in node.inputs))
        if all(a is None for a in site.axes):
            outs: Sequence[Axis] = [None] * len(node.outputs)  # computed from constants alone
        else:
            rule = RULES.get(node.op if not node.domain else f"{node.domain}::{node.op}")
            if rule is None:
                site.fail(f"tensoregg does not know whether {node.op} keeps batch rows apart")
            outs = rule(site)
        for out, a in zip(node.outputs, outs):
            if out:
                axes[out] = a
    for out in graph.outputs:
        if axes[out] not in (0, None):
            raise ShapeError(f"graph output {out!r} carries the batch on axis {axes[out]}, not axis 0: the "
                             f"batch dimension cannot stay symbolic (fix it with input_shapes)")
    return axes


def same_rows(reference: Graph, size: int, other: Graph, other_size: int, axes: Mapping[str, Axis]) -> None:
    """Check that ``other`` (imported at batch ``other_size``) is ``reference`` (at batch ``size``,
    with ``axes`` from ``batch_axes``) but for the batch axis's size; ShapeError naming the first
    difference. Integer constants read as shapes, slice bounds and the like (an op's static inputs)
    may differ where ``reference`` has ``size`` and ``other`` has ``other_size``."""
    def differ(what: str) -> NoReturn:
        raise ShapeError(f"the model at batch {other_size} is not the model at batch {size} but for its "
                         f"batch size: {what}; the batch dimension cannot stay symbolic (fix it with "
                         f"input_shapes)")

    if list(reference.inputs) != list(other.inputs) or reference.outputs != other.outputs:
        differ("the inputs or outputs differ")
    if len(reference.nodes) != len(other.nodes):
        differ(f"{len(reference.nodes)} nodes against {len(other.nodes)}")
    static = _static_constants(reference)
    for name, value in reference.initializers.items():
        theirs = other.initializers.get(name)
        if theirs is None or theirs.dtype != value.dtype or theirs.shape != value.shape:
            differ(f"constant {name!r} differs in name, type or shape")
        if value.dtype.kind in "iu":
            allowed = (value == size) & (theirs == other_size) if name in static else False
            same = bool(np.all((value == theirs) | allowed))
        else:  # bit for bit: NaN, -0.0
            same = (np.array_equal(value, theirs) if value.dtype.kind == "O"
                    else value.tobytes() == theirs.tobytes())
        if not same:
            differ(f"constant {name!r} depends on the batch size")
    for node, counterpart in zip(reference.nodes, other.nodes):
        if (node.op, node.domain, node.inputs, node.outputs) != (counterpart.op, counterpart.domain,
                                                                 counterpart.inputs, counterpart.outputs) \
                or not _same_attrs(node.attrs, counterpart.attrs):
            differ(f"node {node.label!r} differs")
    for name, t in reference.types.items():
        want = list(t.shape)
        if axes.get(name) is not None:
            want[axes[name]] = other_size  # type: ignore[index]
        if other.types[name].dtype != t.dtype or list(other.types[name].shape) != want:
            differ(f"value {name!r} has type {other.types[name]}, expected {t.dtype}{want}")


def _static_constants(graph: Graph) -> set[str]:
    """Constants read only as static inputs (shapes, bounds: ``OpDef.static_inputs``)."""
    static: set[str] = set()
    other: set[str] = set()
    for node in graph.nodes:
        slots = get_op(node.op, node.domain).static_inputs
        for i, name in enumerate(node.inputs):
            if name in graph.initializers:
                (static if i in slots else other).add(name)
    return static - other


def _same_attrs(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) or isinstance(b[k], np.ndarray)
               else a[k] == b[k] for k in a)


# -- the rules, by op --------------------------------------------------------------------------------

def elementwise(site: Site) -> list[Axis]:
    """Inputs broadcast together (numpy's rule): the batch axes must align, and an input without
    rows must not vary along the batch axis (size 1 there, or too low a rank to reach it)."""
    rank = len(site.out_shape)
    aligned = {a + rank - site.rank(i) for i, a in enumerate(site.axes) if a is not None}
    if len(aligned) != 1:
        site.fail("its inputs carry the batch on different axes")
    axis = aligned.pop()
    for i, a in enumerate(site.axes):
        if a is None and site.node.inputs[i]:
            k = axis - (rank - site.rank(i))
            if k >= 0 and site.shape(site.node.inputs[i])[k] != 1:
                site.fail(f"input {i} varies along the batch axis")
    return [axis] * len(site.node.outputs)


def rows_first(site: Site) -> list[Axis]:
    """Per sample ops (convolutions, pooling, inference-mode normalizations): input 0 has the
    rows on axis 0, the other inputs (weights) none; every used output keeps them on axis 0."""
    if site.only(0) != 0:
        site.fail("the batch is not on axis 0 of its data")
    if site.out_shape[0] != site.shape(site.node.inputs[0])[0]:
        site.fail("its output's first axis is not the batch")
    return [0] * len(site.node.outputs)


def first_output_only(rule: Rule) -> Rule:
    """``rule`` for ops whose other outputs mix rows (MaxPool's flat indices, a training-mode
    BatchNormalization's statistics): refused if one of those is used."""
    def checked(site: Site) -> Sequence[Axis]:
        if any(site.node.outputs[1:]):
            site.fail("an output other than the first is used")
        if site.attr("training_mode"):
            site.fail("it normalizes in training mode, over the batch")
        return rule(site)
    return checked


def along(attr: str, default: int = -1, *, through: bool = False) -> Rule:
    """Ops along one axis (``attr``): it must not be the batch axis; ``through``: the op works on the
    axes from ``attr`` to the last (LayerNormalization), so the batch axis must come before it."""
    def rule(site: Site) -> list[Axis]:
        a = site.only(0)
        k = site.axis_attr(attr, site.rank(0), default)
        if a == k or (through and a > k):
            site.fail(f"it works along axis {k}, the batch axis")
        return [a] * len(site.node.outputs)
    return rule


def reduction(site: Site) -> list[Axis]:
    """Reductions over ``axes`` (attribute or input 1; empty: all, or none with
    ``noop_with_empty_axes``), ArgMax/ArgMin over ``axis``; ``keepdims`` decides the output's rank."""
    a, rank = site.only(0), site.rank(0)
    if site.node.op in ("ArgMax", "ArgMin"):
        axes = [site.axis_attr("axis", rank)]
    else:
        given = site.constant(1) if len(site.node.inputs) > 1 and site.node.inputs[1] else site.attr("axes")
        axes = [int(x) % rank for x in np.ravel(given)] if given is not None and np.size(given) else []
        if not axes and not site.attr("noop_with_empty_axes"):
            axes = list(range(rank))
    if a in axes:
        site.fail("it reduces over the batch axis")
    keep = site.attr("keepdims")
    return [a if keep is None or keep else a - sum(1 for k in axes if k < a)]


def reshaped(site: Site) -> list[Axis]:
    """Reshape, Flatten, Squeeze, Unsqueeze: row-major order is kept, so the rows stay apart when the
    output has an axis ``k`` of the batch's size whose leading axes hold as many elements as the
    input's before the batch axis (element (p, row, rest) keeps its place)."""
    a = site.only(0)
    shape, out = site.shape(site.node.inputs[0]), site.out_shape
    before = prod(shape[:a])
    for k, n in enumerate(out):
        if n == shape[a] and prod(out[:k]) == before:
            return [k]
    site.fail(f"it reshapes {list(shape)} to {list(out)} across the batch axis {a}")


def transpose(site: Site) -> list[Axis]:
    a = site.only(0)
    perm = site.attr("perm")
    perm = list(range(site.rank(0)))[::-1] if perm is None else [int(p) for p in perm]
    return [perm.index(a)]


def same_size(site: Site) -> list[Axis]:
    """Expand, Tile, Resize: each axis on its own; the batch axis keeps its size, so the op is the
    identity along it (Resize's crop mode excepted)."""
    a = site.only(0)
    k = a + len(site.out_shape) - site.rank(0)
    if site.out_shape[k] != site.shape(site.node.inputs[0])[a]:
        site.fail("it changes the batch axis's size")
    if site.attr("coordinate_transformation_mode") == "tf_crop_and_resize":
        site.fail("it crops along every axis")
    return [k]


def sliced(site: Site) -> list[Axis]:
    """Slice: identity along the batch axis: from row 0, the whole axis (so with step 1, the batch
    being at least 2 rows)."""
    a, rank = site.only(0), site.rank(0)
    starts, axes = site.constant(1), site.constant(3)
    if starts is None:
        site.fail("its starts are not constant")
    listed = list(range(len(np.ravel(starts)))) if axes is None else [int(x) % rank for x in np.ravel(axes)]
    if a in listed:
        n, start = site.shape(site.node.inputs[0])[a], int(np.ravel(starts)[listed.index(a)])
        if min(max(start + n if start < 0 else start, 0), n) != 0 or site.out_shape[a] != n:
            site.fail("it slices the batch axis")
    return [a]


def padded(site: Site) -> list[Axis]:
    """Pad: no padding on the batch axis."""
    a, rank = site.only(0), site.rank(0)
    pads, axes = site.constant(1), site.constant(3)
    listed = list(range(rank)) if axes is None else [int(x) % rank for x in np.ravel(axes)]
    if pads is None:
        site.fail("its pads are not constant")
    if a in listed:
        j, flat = listed.index(a), np.ravel(pads)
        if flat[j] != 0 or flat[j + len(listed)] != 0:
            site.fail("it pads the batch axis")
    return [a]


def joined(site: Site) -> list[Axis]:
    """Concat and Split along an axis other than the batch's, every input carrying the rows."""
    if any(a is None for a in site.axes[:1 if site.node.op == "Split" else None]):
        site.fail("an input without batch rows is joined to ones with")
    a = site.axes[0]
    if site.node.op == "Concat" and len(set(site.axes)) != 1:
        site.fail("its inputs carry the batch on different axes")
    if site.node.op == "Split" and any(x is not None for x in site.axes[1:]):
        site.fail("its split sizes depend on the batch")
    if a == site.axis_attr("axis", site.rank(0)):
        site.fail("it joins or splits the batch axis")
    return [a] * len(site.node.outputs)


def gather(site: Site) -> list[Axis]:
    """Gather: rows of the data (indices constant), or a table looked up by batched indices."""
    data, indices = site.axes[0], site.axes[1]
    g = site.axis_attr("axis", site.rank(0))
    if data is not None and indices is None:
        if data == g:
            site.fail("it gathers along the batch axis")
        return [data if data < g else data + site.rank(1) - 1]
    if data is None and indices is not None:
        return [g + indices]
    site.fail("both its data and its indices carry batch rows")


def gather_elements(site: Site) -> list[Axis]:
    """GatherElements: data and indices carry the rows on the same axis, gathered along another."""
    if site.axes[0] is None or site.axes[0] != site.axes[1]:
        site.fail("its data and indices do not carry the batch on the same axis")
    if site.axes[0] == site.axis_attr("axis", site.rank(0)):
        site.fail("it gathers along the batch axis")
    return [site.axes[0]]


def matmul(site: Site) -> list[Axis]:
    """MatMul and its integer forms (A and B at inputs 0 and 1, or 0 and 3 for QLinearMatMul): the
    rows may be any axis of A but its last, or a stacked axis of B; never a contracted one."""
    b_slot = 3 if site.node.op == "QLinearMatMul" else 1
    rank = len(site.out_shape)
    a, b = site.axes[0], site.axes[b_slot]
    if any(x is not None for k, x in enumerate(site.axes) if k not in (0, b_slot)):
        site.fail("its scales or zero points carry batch rows")
    ra, rb = site.rank(0), site.rank(b_slot)
    if (a is not None and a == ra - 1) or (b is not None and (rb == 1 or b == rb - 2)):
        site.fail("it contracts over the batch axis")
    spots = {x + rank - r for x, r in ((a, ra), (b, rb)) if x is not None}
    if len(spots) != 1 or (a is not None and b is not None and a >= ra - 2):
        site.fail("its operands carry the batch on different axes")
    spot = spots.pop()
    for x, r, slot in ((a, ra, 0), (b, rb, b_slot)):
        k = spot - (rank - r)
        if x is None and 0 <= k < r - 2 and site.shape(site.node.inputs[slot])[k] != 1:
            site.fail("an operand without batch rows varies along the batch axis")
    return [spot]


def gemm(site: Site) -> list[Axis]:
    """Gemm: A's rows (axis 0, or 1 when transposed) are the batch; B and C carry none, and C does
    not vary along the rows."""
    a = site.only(0)
    if a != (1 if site.attr("transA") else 0):
        site.fail("it contracts over the batch axis")
    if len(site.node.inputs) > 2 and site.node.inputs[2]:
        shape = site.shape(site.node.inputs[2])
        if len(shape) == 2 and shape[0] != 1:
            site.fail("its C varies along the batch rows")
    return [0]


def quantized(site: Site) -> list[Axis]:
    """QuantizeLinear/DequantizeLinear: element-wise with a scale (and zero point) per tensor, per
    axis (1-D along ``axis``, which must not be the batch axis) or per block (of the input's rank: of
    size 1 along the batch axis)."""
    a = site.only(0)
    scale = site.shape(site.node.inputs[1])
    if prod(scale) > 1 and ((len(scale) == 1 and site.axis_attr("axis", site.rank(0), 1) == a)
                            or (len(scale) > 1 and scale[a] != 1)):
        site.fail("its scale varies along the batch axis")
    return [a] * len(site.node.outputs)


_ELEMENTWISE = (
    "Abs Acos Acosh Add And Asin Asinh Atan Atanh BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Ceil "
    "Cos Cosh Div Equal Erf Exp Floor Greater GreaterOrEqual Identity IsInf IsNaN Less LessOrEqual Log Max "
    "Mean Min Mod Mul Neg Not Or Pow Reciprocal Round Sign Sin Sinh Sqrt Sub Sum Tan Where Xor "
    "Celu Clip Elu Gelu HardSigmoid HardSwish LeakyRelu Mish PRelu Relu Selu Shrink Sigmoid Softplus "
    "Softsign Swish Tanh ThresholdedRelu BitCast Cast CastLike Dropout").split()
_ROWS_FIRST = ("AveragePool Conv ConvInteger ConvTranspose GlobalAveragePool GlobalLpPool GlobalMaxPool LRN "
               "LpPool QLinearConv InstanceNormalization GroupNormalization DepthToSpace "
               "SpaceToDepth").split()

RULES: dict[str, Rule] = {
    **dict.fromkeys(_ELEMENTWISE, elementwise),
    **dict.fromkeys(_ROWS_FIRST, rows_first),
    "MaxPool": first_output_only(rows_first),
    "BatchNormalization": first_output_only(rows_first),
    **dict.fromkeys(("Softmax", "LogSoftmax", "Hardmax", "LpNormalization", "TopK"), along("axis")),
    **dict.fromkeys(("LayerNormalization", "RMSNormalization"), along("axis", through=True)),
    "SwiGLU": along("axis"),
    **dict.fromkeys(("ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
                     "ReduceProd ReduceSum ReduceSumSquare ArgMax ArgMin").split(), reduction),
    **dict.fromkeys(("Reshape", "Flatten", "Squeeze", "Unsqueeze"), reshaped),
    "Transpose": transpose,
    **dict.fromkeys(("Expand", "Tile", "Resize", "Upsample"), same_size),
    "Slice": sliced,
    "Pad": padded,
    "Concat": joined,
    "Split": joined,
    "Gather": gather,
    "GatherElements": gather_elements,
    **dict.fromkeys(("MatMul", "MatMulInteger", "QLinearMatMul"), matmul),
    "Gemm": gemm,
    **dict.fromkeys(("QuantizeLinear", "DequantizeLinear"), quantized),
}
"""How each op carries the batch axis, by op name; an op not here is refused."""
