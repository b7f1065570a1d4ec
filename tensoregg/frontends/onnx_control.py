"""ONNX control flow, sequences and optionals, imported as ordinary graph nodes.

Shapes are static, so most control flow is decided at import: an ``If`` whose condition folds to a
constant is its chosen branch inlined; a ``Loop`` with a known trip count (and a condition that
folds) and a ``Scan`` over a static length are their bodies unrolled, one copy per iteration, the
scan outputs stacked with Unsqueeze+Concat; ``SequenceMap`` is its body applied per element. The
result is a plain graph, so the rewrite rules optimize across iterations and branches.

An ``If`` on a run-time condition is *if-converted*: both branches are imported and each output is
``Where(cond, then, else)``, when the branches are small (``MAX_CONVERTED_NODES``), cannot fail at
run time (no indexing op, no integer division) and give tensors of equal types.

A sequence of statically known length is, during import, a :class:`Seq` of value names, an
optional a :class:`Opt`; the sequence and optional operators act on them (their positions must be
constants). Sequence/optional graph inputs and outputs are flattened into tensors named after
their place (``x[0]``, ``x[1]``, ``o?``: :func:`flatten`, :func:`leaf_name`) by the backend adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import onnx

from tensoregg.errors import InvalidModel, ShapeError, UnsupportedOperator
from tensoregg.ir import Node, TensorType

if TYPE_CHECKING:
    from tensoregg.frontends.onnx import _Importer

MAX_UNROLLED_NODES = 20_000
"""The most nodes one Loop, Scan or SequenceMap may unroll into (its body's nodes, subgraphs
included, times the iterations); past it the node is declined, naming the limit."""
MAX_CONVERTED_NODES = 1_000
"""The most nodes both branches of an if-converted ``If`` may import into."""
MAY_FAIL = frozenset({"Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND"})
"""Ops that raise at run time on some inputs (an index out of range): a branch holding one is not
if-converted, since the branch not taken would run them too (so would integer Div/Mod)."""


@dataclass(frozen=True)
class Seq:
    """A sequence value during import: the names of its elements (tensors or nested values)."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Opt:
    """An optional value during import: the name of its content, or None when empty."""

    value: str | None


Struct = Seq | Opt
Skeleton = TensorType | None | tuple
"""A sequence/optional graph input's shape: a TensorType for a tensor, None for an empty optional,
a tuple of skeletons for a sequence."""
Layout = str | None | list
"""A graph output's place in the flat graph: a tensor's name, None (empty optional), a list of
layouts (a sequence)."""

STATIC_INPUTS: dict[str, frozenset[int]] = {
    "If": frozenset({0}), "Loop": frozenset({0, 1}), "SequenceAt": frozenset({1}),
    "SequenceInsert": frozenset({2}), "SequenceErase": frozenset({1}), "SplitToSequence": frozenset({1}),
}
"""Inputs of these ops whose values the backend adapter binds as constants (as the registry's
``static_inputs``): an If's condition, a Loop's trip count and condition, sequence positions."""


def leaf_name(name: str, kind: str, index: int = 0) -> str:
    """The flat name of a sequence element (``x[i]``) or an optional's content (``x?``)."""
    return f"{name}[{index}]" if kind == "sequence_type" else f"{name}?"


def flatten(name: str, tp: onnx.TypeProto, value: Any) -> tuple[Skeleton, dict[str, np.ndarray]]:
    """A graph input's value of type ``tp`` -> its skeleton and its tensors by flat name."""
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        if isinstance(value, (list, tuple)) or value is None:
            raise InvalidModel(f"graph input {name!r}: a tensor expected, got {type(value).__name__}")
        a = np.asarray(value)
        return TensorType.of(a), {name: a}
    if kind == "optional_type":
        if value is None:
            return None, {}
        return flatten(leaf_name(name, kind), tp.optional_type.elem_type, value)
    if kind == "sequence_type":
        if not isinstance(value, (list, tuple)):
            raise InvalidModel(f"graph input {name!r}: a sequence (list) expected, got "
                               f"{type(value).__name__}")
        skeletons, leaves = [], {}
        for i, v in enumerate(value):
            s, flat = flatten(leaf_name(name, kind, i), tp.sequence_type.elem_type, v)
            skeletons.append(s)
            leaves.update(flat)
        return tuple(skeletons), leaves
    raise UnsupportedOperator(f"{kind or 'untyped'} value", detail=f"graph input {name!r}")


def unflatten(layout: Layout, values: dict[str, np.ndarray]) -> Any:
    """A graph output's value rebuilt from the flat graph's results (a list for a sequence)."""
    if layout is None or isinstance(layout, str):
        return None if layout is None else values[layout]
    return [unflatten(item, values) for item in layout]


def subgraph_nodes(g: onnx.GraphProto) -> int:
    """How many nodes ``g`` holds, its nested subgraphs' included."""
    return sum(1 + sum(subgraph_nodes(s) for s in subgraphs(n)) for n in g.node)


def outer_names(g: onnx.GraphProto) -> set[str]:
    """The names ``g`` (or a subgraph in it) uses from the scopes around it."""
    local = {vi.name for vi in g.input} | {t.name for t in g.initializer}
    local |= {o for n in g.node for o in n.output}
    used = {i for n in g.node for i in n.input if i} | {o.name for o in g.output}
    used |= {name for n in g.node for s in subgraphs(n) for name in outer_names(s)}
    return used - local


def all_nodes(g: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """The nodes of ``g`` and of the subgraphs in it."""
    for n in g.node:
        yield n
        for s in subgraphs(n):
            yield from all_nodes(s)


def subgraphs(n: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graph attributes of ``n``."""
    for a in n.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


class _Control:
    """One control/sequence/optional node being imported through the importer ``imp``."""

    def __init__(self, imp: _Importer, node: Node, opset: int) -> None:
        self.imp, self.node, self.opset = imp, node, opset

    def unsupported(self, detail: str) -> NoReturn:
        raise UnsupportedOperator(self.node.op, opset=self.opset, node=self.node.label, detail=detail)

    @property
    def where(self) -> str:
        return f"{self.node.op} node {self.node.label!r}"

    def input(self, i: int) -> str:
        return self.node.inputs[i] if i < len(self.node.inputs) else ""

    def graph(self, name: str) -> onnx.GraphProto:
        g = self.node.attrs.get(name)
        if not isinstance(g, onnx.GraphProto):
            raise InvalidModel(f"{self.where}: missing graph attribute {name!r}")
        return g

    def const_of(self, i: int, what: str) -> np.ndarray | None:
        """The import-time value of optional input ``i`` (None when omitted); declined when it is
        given but not a constant."""
        name = self.input(i)
        if not name:
            return None
        if name in self.imp.structs:
            raise InvalidModel(f"{self.where}: input {i} ({what}) must be a tensor, got a "
                               f"{type(self.imp.structs[name]).__name__.lower()}")
        if name not in self.imp.consts:
            self.unsupported(f"the {what} ({name!r}) is not a constant known at import")
        return np.asarray(self.imp.consts[name])

    def scalar(self, i: int, what: str) -> int | None:
        v = self.const_of(i, what)
        if v is None:
            return None
        if v.size != 1:
            raise ShapeError(f"{self.where}: the {what} must hold one element, got shape {list(v.shape)}")
        return int(v.reshape(()))

    def fixed(self, name: str, what: str) -> TensorType:
        """``name``'s type, declined when its shape is only an upper bound (a data-dependent op's
        output, ``tensoregg.ir.bounds``): unrolling over it would run the padding too."""
        if name in self.imp.bounded:
            self.unsupported(f"the {what} ({name!r}) has a data-dependent shape: unrolled at import, it "
                             "needs a static one")
        return self.imp.types[name]

    def seq(self, i: int) -> Seq:
        s = self.imp.structs.get(self.input(i))
        if not isinstance(s, Seq):
            raise InvalidModel(f"{self.where}: input {i} ({self.input(i)!r}) is not a sequence")
        return s

    def attr(self, name: str, default: Any) -> Any:
        return self.node.attrs.get(name, default)

    def add(self, op: str, inputs: Sequence[str], out: str = "", **attrs: Any) -> str:
        return self.imp.emit(op, list(inputs), attrs, self.node, out)

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        return self.imp.fresh_const(np.asarray(value, dtype=dtype))

    def output(self, k: int, value: str | Struct) -> None:
        """Make output ``k`` (if named) the value ``value`` (a value name, or a new Seq/Opt)."""
        if k >= len(self.node.outputs) or not self.node.outputs[k]:
            return
        self.imp.define(self.node.outputs[k], value)

    def inline(self, g: onnx.GraphProto, args: Sequence[str]) -> list[str]:
        return self.imp.inline(g, args, self.node)

    def stack(self, items: Sequence[str], axis: int, out: str = "") -> str:
        """``items`` (tensors of one shape) stacked along a new ``axis``."""
        if not items:
            self.unsupported("no iteration ran: the stacked output's shape is unknown")
        if items[0] in self.imp.structs:
            self.unsupported("a scan output that is a sequence or optional")
        rank = self.imp.types[items[0]].rank
        if not -rank - 1 <= axis <= rank:
            raise InvalidModel(f"{self.where}: axis {axis} is out of range for rank {rank + 1}")
        axis %= rank + 1
        axes = self.const([axis])
        if len(items) == 1:
            return self.add("Unsqueeze", [items[0], axes], out)
        return self.add("Concat", [self.add("Unsqueeze", [x, axes]) for x in items], out, axis=axis)

    def check_unroll(self, body: onnx.GraphProto, iterations: int) -> None:
        if max(1, subgraph_nodes(body)) * iterations > MAX_UNROLLED_NODES:
            self.unsupported(f"unrolling {iterations} iterations of a {subgraph_nodes(body)}-node body "
                             f"exceeds MAX_UNROLLED_NODES ({MAX_UNROLLED_NODES})")


def _if(c: _Control) -> None:
    cond = c.input(0)
    if not cond or cond in c.imp.structs:
        raise InvalidModel(f"{c.where}: the condition must be a tensor")
    t = c.imp.types[cond]
    if t.size != 1:
        raise ShapeError(f"{c.where}: the condition must hold one element, got {t}")
    value = c.imp.consts.get(cond)
    if value is not None:
        outs = c.inline(c.graph("then_branch" if bool(np.asarray(value).reshape(())) else "else_branch"), [])
    else:
        outs = _if_converted(c, c.add("Reshape", [cond, c.const([])]))
    if len(outs) != len(c.node.outputs):
        raise InvalidModel(f"{c.where}: its branch gives {len(outs)} outputs, the node has "
                           f"{len(c.node.outputs)}")
    for k, v in enumerate(outs):
        c.output(k, v)


def _if_converted(c: _Control, cond: str) -> list[str]:
    """Both branches imported, each output selected by ``Where`` on the run-time ``cond``."""
    start = len(c.imp.nodes)
    then, other = c.inline(c.graph("then_branch"), []), c.inline(c.graph("else_branch"), [])
    added = c.imp.nodes[start:]
    if len(added) > MAX_CONVERTED_NODES:
        c.unsupported(f"the condition is not a constant, and the branches ({len(added)} nodes) exceed "
                      f"MAX_CONVERTED_NODES ({MAX_CONVERTED_NODES}) for an if-conversion")
    for n in added:
        if n.op in MAY_FAIL or (n.op in ("Div", "Mod") and c.imp.types[n.outputs[0]].dtype.kind in "iu"):
            c.unsupported(f"the condition is not a constant, and a branch holds {n.op} node {n.label!r}, "
                          "which may fail at run time: it cannot run for the branch not taken")
    if len(then) != len(other):
        raise InvalidModel(f"{c.where}: the branches give {len(then)} and {len(other)} outputs")
    outs = []
    for a, b in zip(then, other):
        if a in c.imp.structs or b in c.imp.structs:
            c.unsupported("the condition is not a constant, and a branch gives a sequence or optional")
        ta, tb = c.imp.types[a], c.imp.types[b]
        if ta != tb:
            c.unsupported(f"the condition is not a constant, and the branches give {ta} and {tb}")
        outs.append(c.add("Where", [cond, a, b]))
    return outs


def _loop(c: _Control) -> None:
    body = c.graph("body")
    trips = c.scalar(0, "trip count")
    keep = c.const_of(1, "loop condition")
    going = True if keep is None else bool(keep.reshape(()))
    carried = list(c.node.inputs[2:])
    n_scan = len(body.output) - 1 - len(carried)
    if n_scan < 0 or len(body.input) != 2 + len(carried):
        raise InvalidModel(f"{c.where}: the body takes {len(body.input)} inputs and gives "
                           f"{len(body.output)} outputs for {len(carried)} loop-carried values")
    if trips is not None and _passes_condition(body):
        c.check_unroll(body, trips)  # a counted loop: refused before it unrolls
    scans: list[list[str]] = [[] for _ in range(n_scan)]
    i = 0
    while going and (trips is None or i < trips):
        c.check_unroll(body, i + 1)
        outs = c.inline(body, [c.const(i), c.const(True, bool), *carried])
        carried = outs[1:1 + len(carried)]
        for k in range(n_scan):
            scans[k].append(outs[1 + len(carried) + k])
        flag = c.imp.consts.get(outs[0])
        if flag is None:
            c.unsupported(f"the loop condition computed by the body at iteration {i} is not a constant "
                          "known at import")
        going = bool(np.asarray(flag).reshape(()))
        i += 1
    for k, v in enumerate(carried):
        c.output(k, v)
    for k, items in enumerate(scans):
        if len(carried) + k < len(c.node.outputs) and c.node.outputs[len(carried) + k]:
            c.stack(items, 0, c.node.outputs[len(carried) + k])


def _passes_condition(body: onnx.GraphProto) -> bool:
    """Whether a Loop body's condition output is its condition input (directly or by Identity)."""
    cond_in, cond_out = body.input[1].name, body.output[0].name
    return cond_out == cond_in or any(n.op_type == "Identity" and list(n.input) == [cond_in]
                                      and list(n.output) == [cond_out] for n in body.node)


def _scan(c: _Control) -> None:
    body = c.graph("body")
    n_in = c.attr("num_scan_inputs", None)
    if not isinstance(n_in, int) or n_in < 1:
        raise InvalidModel(f"{c.where}: attribute num_scan_inputs must be an int >= 1")
    if c.opset < 9:
        _scan8(c, body, n_in)
        return
    states, xs = list(c.node.inputs[:-n_in]), list(c.node.inputs[-n_in:])
    finals, stacked = _scan_steps(c, body, states, xs, list(c.attr("scan_input_axes", [0] * n_in)),
                                  list(c.attr("scan_input_directions", [0] * n_in)))
    for k, v in enumerate(finals):
        c.output(k, v)
    n_out = len(stacked)
    axes = list(c.attr("scan_output_axes", [0] * n_out))
    dirs = list(c.attr("scan_output_directions", [0] * n_out))
    for k, items in enumerate(stacked):
        out = len(finals) + k
        if out < len(c.node.outputs) and c.node.outputs[out]:
            c.stack(items[::-1] if dirs[k] else items, axes[k], c.node.outputs[out])


def _scan8(c: _Control, body: onnx.GraphProto, n_in: int) -> None:
    """Scan-8: a batch axis 0 in front of every state and scan input; each batch entry scanned
    alone (``sequence_lens``, if given, must be the full length), the results stacked."""
    lens = c.const_of(0, "sequence_lens")
    states, xs = list(c.node.inputs[1:-n_in]), list(c.node.inputs[-n_in:])
    batch = c.imp.types[xs[0]].shape[0]
    full = c.imp.types[xs[0]].shape[1]
    if lens is not None and not (lens == full).all():
        c.unsupported(f"sequence_lens {lens.tolist()} shorter than the scanned length {full}")
    dirs = list(c.attr("directions", [0] * n_in))
    per: list[tuple[list[str], list[list[str]]]] = []
    for b in range(batch):
        pick = [c.add("Gather", [v, c.const(b)], axis=0) for v in states + xs]
        per.append(_scan_steps(c, body, pick[:len(states)], pick[len(states):], [0] * n_in, dirs))
    for k in range(len(states)):
        c.output(k, c.stack([finals[k] for finals, _ in per], 0))
    for k in range(len(per[0][1]) if per else 0):
        c.output(len(states) + k, c.stack([c.stack(stacked[k], 0) for _, stacked in per], 0))


def _scan_steps(c: _Control, body: onnx.GraphProto, states: list[str], xs: list[str],
                axes: list[int], dirs: list[int]) -> tuple[list[str], list[list[str]]]:
    """The final states and each scan output's per-step values of ``body`` scanned over ``xs``."""
    if len(axes) != len(xs) or len(dirs) != len(xs):
        raise InvalidModel(f"{c.where}: scan_input_axes/directions do not give one entry per scan input")
    lengths = set()
    for x, a in zip(xs, axes):
        xt = c.fixed(x, "scan input")
        if not -xt.rank <= a < xt.rank:
            raise InvalidModel(f"{c.where}: scan axis {a} is out of range for {xt}")
        lengths.add(xt.shape[a])
    if len(lengths) != 1:
        raise ShapeError(f"{c.where}: the scan inputs have different lengths {sorted(lengths)}")
    length = lengths.pop()
    c.check_unroll(body, length)
    stacked: list[list[str]] = []
    for t in range(length):
        elems = [c.add("Gather", [x, c.const(length - 1 - t if d else t)], axis=a)
                 for x, a, d in zip(xs, axes, dirs)]
        outs = c.inline(body, states + elems)
        states = outs[:len(states)]
        if not stacked:
            stacked = [[] for _ in outs[len(states):]]
        for k, v in enumerate(outs[len(states):]):
            stacked[k].append(v)
    return states, stacked


def _sequence_map(c: _Control) -> None:
    body = c.graph("body")
    first = c.seq(0)
    args: list[Any] = [first] + [c.imp.structs.get(n, n) for n in c.node.inputs[1:]]
    for a in args:
        if isinstance(a, Seq) and len(a.items) != len(first.items):
            raise ShapeError(f"{c.where}: the input sequences have lengths {len(first.items)} and "
                             f"{len(a.items)}")
    c.check_unroll(body, len(first.items))
    results: list[list[str]] = [[] for _ in c.node.outputs]
    for i in range(len(first.items)):
        outs = c.inline(body, [a.items[i] if isinstance(a, Seq) else a for a in args])
        for k, v in enumerate(outs[:len(results)]):
            results[k].append(v)
    for k, items in enumerate(results):
        c.output(k, Seq(tuple(items)))


def _position(c: _Control, i: int, n: int, default: int, *, insert: bool = False) -> int:
    """Sequence position input ``i`` (``default`` when omitted) as 0 .. n-1 (n for an insert)."""
    p = c.scalar(i, "position")
    p = default if p is None else p
    top = n + 1 if insert else n
    if not -n <= p < top:
        raise InvalidModel(f"{c.where}: position {p} is out of range for a sequence of length {n}")
    return p + n if p < 0 else p


def _sequence_construct(c: _Control) -> None:
    c.output(0, Seq(tuple(c.node.inputs)))


def _sequence_empty(c: _Control) -> None:
    c.output(0, Seq(()))


def _sequence_insert(c: _Control) -> None:
    s = c.seq(0)
    p = _position(c, 2, len(s.items), len(s.items), insert=True)
    c.output(0, Seq((*s.items[:p], c.input(1), *s.items[p:])))


def _sequence_erase(c: _Control) -> None:
    s = c.seq(0)
    p = _position(c, 1, len(s.items), -1)
    c.output(0, Seq(s.items[:p] + s.items[p + 1:]))


def _sequence_at(c: _Control) -> None:
    s = c.seq(0)
    c.output(0, s.items[_position(c, 1, len(s.items), 0)])


def _sequence_length(c: _Control) -> None:
    c.output(0, c.const(len(c.seq(0).items)))


def _split_to_sequence(c: _Control) -> None:
    x = c.input(0)
    t = c.fixed(x, "input")
    axis = c.attr("axis", 0)
    if not -t.rank <= axis < t.rank:
        raise InvalidModel(f"{c.where}: axis {axis} is out of range for {t}")
    axis %= t.rank
    dim = t.shape[axis]
    split = c.const_of(1, "split")
    squeeze = split is None and not c.attr("keepdims", 1)
    if split is None:
        sizes = [1] * dim
    elif split.ndim == 0:
        step = int(split)
        if step < 1:
            raise InvalidModel(f"{c.where}: split {step} must be positive")
        sizes = [min(step, dim - s) for s in range(0, dim, step)]
    else:
        sizes = [int(s) for s in split]
        if sum(sizes) != dim or min(sizes, default=0) < 0:
            raise ShapeError(f"{c.where}: split {sizes} does not add up to dim {axis} ({dim}) of {t}")
    items, start = [], 0
    for size in sizes:
        part = c.add("Slice", [x, c.const([start]), c.const([start + size]), c.const([axis])])
        items.append(c.add("Squeeze", [part, c.const([axis])]) if squeeze else part)
        start += size
    c.output(0, Seq(tuple(items)))


def _concat_from_sequence(c: _Control) -> None:
    items = c.seq(0).items
    axis = c.attr("axis", None)
    if not isinstance(axis, int):
        raise InvalidModel(f"{c.where}: missing required attribute 'axis'")
    if not items:
        c.unsupported("an empty sequence: the result's shape is unknown")
    if c.attr("new_axis", 0):
        c.output(0, c.stack(items, axis))
    elif len(items) == 1:
        c.output(0, items[0])
    else:
        c.output(0, c.add("Concat", list(items), axis=axis))


def _optional(c: _Control) -> None:
    c.output(0, Opt(c.input(0) or None))


def _optional_has_element(c: _Control) -> None:
    v = c.imp.structs.get(c.input(0))
    c.output(0, c.const(bool(c.input(0)) and not (isinstance(v, Opt) and v.value is None), bool))


def _optional_get_element(c: _Control) -> None:
    v = c.imp.structs.get(c.input(0))
    if isinstance(v, Opt):
        if v.value is None:
            raise InvalidModel(f"{c.where}: the optional input is empty")
        c.output(0, v.value)
    else:
        c.output(0, c.input(0))


HANDLERS: dict[str, Callable[[_Control], None]] = {
    "If": _if, "Loop": _loop, "Scan": _scan, "SequenceMap": _sequence_map,
    "SequenceConstruct": _sequence_construct, "SequenceEmpty": _sequence_empty,
    "SequenceInsert": _sequence_insert, "SequenceErase": _sequence_erase, "SequenceAt": _sequence_at,
    "SequenceLength": _sequence_length, "SplitToSequence": _split_to_sequence,
    "ConcatFromSequence": _concat_from_sequence, "Optional": _optional,
    "OptionalHasElement": _optional_has_element, "OptionalGetElement": _optional_get_element,
}
"""The ONNX (default domain) operators this module imports, by name."""


def import_control(imp: _Importer, node: Node, opset: int) -> None:
    """Import ``node``, one of ``HANDLERS``' ops, through the importer ``imp``."""
    HANDLERS[node.op](_Control(imp, node, opset))
