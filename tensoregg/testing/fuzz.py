"""Random well-typed graphs for the deep differential fuzzer (``tensoregg.testing.differential``).

A graph of 3-30 nodes is grown one node at a time over the whole operator registry: an op is drawn,
its inputs are picked among the values made so far (or new constants), and the op's own shape rule
(``infer_node``) decides whether the node is well typed; a node it refuses is redrawn. Ops whose
inputs need values of a particular form (a Reshape's shape, Gather's in-range indices, a Conv's
weights) or that have a required attribute get a drafter in ``DRAFTERS``; every other op is drafted
from its signature alone. Dtypes are int32, int64, float16 and float32.

Some graphs are built around a large kernel, sized from the thresholds the compiler decides by: a
contraction above the llvm target's untiled size (``TINY_FLOPS``, so it is tiled and packed), a
3x3 Conv the Winograd rule accepts (``MIN_CHANNELS``, ``MIN_OUTPUTS``), strided and 1x1 Convs
(im2col gathers and row packing), and work above the native model's threading threshold
(``PARALLEL_MIN_WORK``; a wide feature map takes the element-wise kernels there). A bias and an
activation after the large kernel are fused into its epilogue.

Everything a graph is made of comes from one seed (``random_case``), so a case is reproduced by its
seed; ``cases`` is the same as a hypothesis strategy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from hypothesis import strategies as st

from tensoregg.errors import TensoreggError
from tensoregg.ir import Graph, Node, TensorType, run_graph
from tensoregg.ir.compute import compute_of
from tensoregg.ir.graph import infer_node
from tensoregg.ir.registry import OPS, REQUIRED, OpDef
from tensoregg.rules.winograd import MIN_CHANNELS, MIN_OUTPUTS
from tensoregg.targets.llvm.gemm_schedules import TINY_FLOPS
from tensoregg.targets.llvm.model import PARALLEL_MIN_WORK

DTYPES = tuple(np.dtype(t) for t in (np.int32, np.int64, np.float16, np.float32))
FLOATS = tuple(d for d in DTYPES if d.kind == "f")
MIN_NODES, MAX_NODES = 3, 30
TRIES = 12
"""Ops drawn per node (each drafted up to three times) before the graph is ended where it stands."""
STRUCTURAL = ("Concat", "Split", "Slice", "Gather", "MatMul", "Gemm", "Conv", "Reshape", "Transpose")
"""Drawn as often as all the other ops together: the ops that move data between layouts and the
contractions, where lowering has the most choices."""


EXACT = frozenset({"Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND",
                   "Squeeze", "Unsqueeze", "Expand", "Tile", "Pad", "Identity", "Flatten", "DepthToSpace",
                   "SpaceToDepth", "Relu", "Neg", "Abs", "Max", "Min", "Where", "ReduceMax", "ReduceMin",
                   "MaxPool", "GlobalMaxPool", "Dropout", "Trilu", "ScatterElements", "ScatterND", "Scatter"})
"""Ops that round nothing: their float outputs are exact copies of input values (or zeros)."""
SENSITIVE = frozenset("""Reciprocal Div Mod Floor Ceil Round Sign Equal Greater GreaterOrEqual Less
LessOrEqual ArgMax ArgMin TopK Hardmax Cast CastLike Log Sqrt Pow Acos Asin Atanh Acosh Tan QuantizeLinear
DynamicQuantizeLinear ReduceLogSum ReduceL2 Shrink ThresholdedRelu LpNormalization MeanVarianceNormalization
InstanceNormalization LayerNormalization GroupNormalization RMSNormalization BatchNormalization IsNaN IsInf
Resize GridSample Det LpPool GlobalLpPool ReduceProd CumProd""".split())
"""Ops that turn a last-place rounding difference of a float input into a large one (a division by
a value near zero, a step, a comparison, a tie, a domain edge, a product of many values: soak seeds
101495 and 101573, a ReduceProd of MatMul sums, where float64 put the reference and the compiled
code equally far off): they only read exact float values (graph inputs, constants and what ``EXACT``
ops make of them), so that two correct compilers agree."""


@dataclass
class Case:
    """A random graph with its inputs, and the seed that made it."""

    seed: int
    graph: Graph
    feeds: dict[str, np.ndarray]
    large: str = ""
    """The large kernel the graph was built around ("" for none)."""

    @property
    def ops(self) -> set[str]:
        return {n.op for n in self.graph.nodes}


Draft = tuple[list[str], dict[str, Any], int]
"""A node's input names, attributes and number of outputs, before the shape rule checks it."""


@dataclass
class Builder:
    """The graph being grown: values (name -> type), constants, nodes; ``rng`` draws everything."""

    rng: np.random.Generator
    inputs: dict[str, TensorType] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    types: dict[str, TensorType] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    inexact: set[str] = field(default_factory=set)
    """Float values computed with rounding (see ``EXACT`` and ``SENSITIVE``)."""

    def integer(self, low: int, high: int) -> int:
        """An int in [low, high]."""
        return int(self.rng.integers(low, high + 1))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def choice(self, seq: Any) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def array(self, dtype: np.dtype, shape: tuple[int, ...], scale: float = 2.0) -> np.ndarray:
        """Small values: floats uniform in [-scale, scale], integers in [-4, 4], booleans."""
        if dtype.kind == "b":
            return self.rng.random(shape) < 0.5
        if dtype.kind in "iu":
            return self.rng.integers(-4, 5, shape).astype(dtype)
        return self.rng.uniform(-scale, scale, shape).astype(dtype)

    def const(self, value: np.ndarray) -> str:
        name = f"c{len(self.consts)}"
        self.consts[name] = np.asarray(value)
        self.types[name] = TensorType.of(self.consts[name])
        return name

    def input(self, dtype: np.dtype, shape: tuple[int, ...]) -> str:
        name = f"x{len(self.inputs)}"
        self.inputs[name] = self.types[name] = TensorType(dtype, shape)
        self.feeds[name] = self.array(dtype, shape)
        return name

    def values(self, pred: Callable[[TensorType], bool] = lambda t: True) -> list[str]:
        """Computed values (graph inputs and node outputs, not constants) whose type passes ``pred``."""
        return [n for n, t in self.types.items() if n not in self.consts and pred(t)]

    def pick(self, pred: Callable[[TensorType], bool] = lambda t: True) -> str | None:
        """A computed value passing ``pred``, the recent ones likelier (graphs grow deep, not wide)."""
        found = self.values(pred)
        if not found:
            return None
        weights = np.arange(1, len(found) + 1, dtype=np.float64) ** 2
        return found[int(self.rng.choice(len(found), p=weights / weights.sum()))]

    def like(self, name: str) -> str:
        """Another value of ``name``'s type: an existing one, or a constant of a shape that broadcasts."""
        t = self.types[name]
        same = [v for v in self.values(lambda u: u == t) if v != name]
        if same and self.chance(0.5):
            return self.choice(same)
        shape = tuple(d if self.chance(0.7) else 1 for d in t.shape[self.integer(0, t.rank):])
        return self.const(self.array(t.dtype, shape))

    def add(self, opdef: OpDef, draft: Draft) -> bool:
        """Add the drafted node if its shape rule accepts it."""
        inputs, attrs, n_out = draft
        rounded = [n for n in inputs if n in self.inexact]
        if rounded and opdef.name in SENSITIVE:
            return False
        k = len(self.nodes)
        outs = tuple(f"v{k}" if n_out == 1 else f"v{k}_{j}" for j in range(n_out))
        node = Node(opdef.name, tuple(inputs), outs, opdef.check_attrs(attrs, outs[0]))
        try:
            types = infer_node(opdef, node, self.types, self.consts)
        except TensoreggError:
            return False
        if any(t.size > MAX_ELEMENTS or t.size == 0 for t in types[:n_out]):
            return False
        self.nodes.append(node)
        self.types.update(zip(outs, types))
        if rounded or opdef.name not in EXACT:
            self.inexact.update(o for o, t in zip(outs, types) if t.dtype.kind == "f")
        return True


MAX_ELEMENTS = 1 << 21
"""No value larger than this (8 MiB of float32): the reference interpreter runs every graph."""


def _rank(low: int, high: int = 8) -> Callable[[TensorType], bool]:
    return lambda t: low <= t.rank <= high


def _floats(low: int = 0) -> Callable[[TensorType], bool]:
    return lambda t: t.dtype.kind == "f" and t.rank >= low


def _axes(b: Builder, rank: int) -> list[int]:
    """A non-empty random subset of a rank's axes, some negative."""
    axes = [a for a in range(rank) if b.chance(0.5)] or [b.integer(0, rank - 1)]
    return [a - rank if b.chance(0.3) else a for a in axes]


@functools.cache
def _first_input_types(domain: str, op: str) -> frozenset[str] | None:
    """The types (``tensor(float)``, ...) ONNX's newest schema of ``op`` allows its first input; None
    where it has no schema (tensoregg's own ops) or no first input."""
    try:
        schema = onnx.defs.get_schema(op, domain=domain)
    except onnx.defs.SchemaError:
        return None
    if not schema.inputs:
        return None
    param = schema.inputs[0].type_str
    allowed = [c.allowed_type_strs for c in schema.type_constraints if c.type_param_str == param]
    return frozenset(allowed[0] if allowed else [param])


def onnx_allows(opdef: OpDef, dtype: np.dtype) -> bool:
    """Whether ONNX's schema lets ``opdef``'s first input be of ``dtype``: a graph that breaks it is
    invalid ONNX, which onnxruntime refuses, so that it would not be compared there (int Sum, int
    ReduceLogSum, int Dropout, bool reductions: about a quarter of its refusals in a soak)."""
    allowed = _first_input_types(opdef.domain, opdef.name)
    name = onnx.TensorProto.DataType.Name(onnx.helper.np_dtype_to_tensor_dtype(dtype)).lower()
    return allowed is None or f"tensor({name})" in allowed


def _generic(b: Builder, opdef: OpDef) -> Draft | None:
    """A draft from the signature alone: the first input any value, the others of its type (or a
    constant that broadcasts with it), optional inputs left out, ``axis`` drawn in range."""
    required = [p for p in opdef.inputs if not p.optional and not p.variadic]
    variadic = bool(opdef.inputs) and opdef.inputs[-1].variadic
    fixed = opdef.static_inputs | opdef.bounded_inputs  # constants, or a data-dependent shape
    if any(i in fixed for i, p in enumerate(opdef.inputs) if not p.optional) \
            or any(a.default is REQUIRED for a in opdef.attrs.values()) or not (required or variadic):
        return None
    first = b.pick()
    if first is None:
        return None
    count = len(required) if not variadic else max(len(required), b.integer(1, 3))
    inputs = [first, *(b.like(first) if b.chance(0.85) else (b.pick() or first) for _ in range(count - 1))]
    attrs: dict[str, Any] = {}
    rank = b.types[first].rank
    if "axis" in opdef.attrs and opdef.attrs["axis"].kind == "int" and rank:
        attrs["axis"] = b.integer(-rank, rank - 1)
    return inputs, attrs, _outputs(opdef)


def _outputs(opdef: OpDef) -> int:
    return max(1, sum(1 for p in opdef.outputs if not p.optional))


# ---- drafters: ops whose inputs need a form the signature does not say -----------------------------

def _matmul(b: Builder, opdef: OpDef) -> Draft | None:
    floats = b.chance(0.85)
    a = b.pick(lambda t: t.rank >= 1 and t.dtype in (FLOATS if floats else DTYPES))
    if a is None:
        return None
    t = b.types[a]
    k, n = t.shape[-1], b.integer(1, 12)
    if t.rank == 1 or b.chance(0.8):
        w = b.array(t.dtype, (k, n), 1.0 / math.sqrt(k) if t.dtype.kind == "f" else 1)
        return [a, b.const(w)], {}, 1
    other = b.pick(lambda u: u.dtype == t.dtype and u.rank >= 2 and u.shape[-2] == k and u.shape != t.shape)
    return [a, other or b.const(b.array(t.dtype, (k, n)))], {}, 1


def _gemm(b: Builder, opdef: OpDef) -> Draft | None:
    floats = b.chance(0.95)  # onnxruntime has no integer Gemm: such graphs are not compared there
    a = b.pick(lambda t: t.rank == 2 and t.dtype in (FLOATS if floats else DTYPES))
    if a is None:
        return None
    trans_a, trans_b, n = b.integer(0, 1), b.integer(0, 1), b.integer(1, 12)
    m, k = b.types[a].shape[::-1] if trans_a else b.types[a].shape
    dtype = b.types[a].dtype
    w = b.const(b.array(dtype, (n, k) if trans_b else (k, n), 1.0 / math.sqrt(k) if dtype.kind == "f" else 1))
    inputs = [a, w] + ([b.const(b.array(dtype, b.choice([(n,), (m, n), (1, n)])))] if b.chance(0.6) else [])
    scaled = dtype.kind == "f"  # a scaled integer Gemm is refused (the reference scales in float64)
    return inputs, {"transA": trans_a, "transB": trans_b, "alpha": b.choice([1.0, 0.5] if scaled else [1.0]),
                    "beta": b.choice([1.0, 2.0] if scaled else [1.0, 0.0])}, 1


def _conv(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(lambda t: t.rank in (3, 4) and t.dtype in FLOATS)
    if x is None:
        return None
    t = b.types[x]
    c, spatial = t.shape[1], t.rank - 2
    group = b.choice([g for g in (1, 2, c) if c % g == 0])
    kernel = [b.integer(1, min(3, d)) for d in t.shape[2:]]
    m = group * b.integer(1, 3)
    w = b.const(b.array(t.dtype, (m, c // group, *kernel), 1.0 / math.sqrt(c // group * math.prod(kernel))))
    pads = [b.integer(0, k // 2) for k in kernel] * 2
    attrs = {"group": group, "pads": pads, "strides": [b.choice([1, 1, 2]) for _ in range(spatial)],
             "dilations": [b.choice([1, 1, 2]) if d > 4 else 1 for d in t.shape[2:]]}
    return [x, w] + ([b.const(b.array(t.dtype, (m,)))] if b.chance(0.6) else []), attrs, 1


def _concat(b: Builder, opdef: OpDef) -> Draft | None:
    first = b.pick(_rank(1))
    if first is None:
        return None
    t = b.types[first]
    axis = b.integer(0, t.rank - 1)
    parts = [first]
    for _ in range(b.integer(1, 3)):
        fits = [v for v in b.values(lambda u: u.dtype == t.dtype and u.rank == t.rank and all(
            x == y for i, (x, y) in enumerate(zip(u.shape, t.shape)) if i != axis))]
        side = list(t.shape)
        side[axis] = b.integer(1, 4)
        parts.append(b.choice(fits) if fits and b.chance(0.6) else b.const(b.array(t.dtype, tuple(side))))
    return parts, {"axis": axis - t.rank if b.chance(0.3) else axis}, 1


def _split(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(lambda t: t.rank >= 1 and max(t.shape) >= 2)
    if x is None:
        return None
    t = b.types[x]
    axis = b.choice([a for a, d in enumerate(t.shape) if d >= 2])
    cuts = sorted(set(b.rng.integers(1, t.shape[axis], b.integer(1, 2)).tolist()))
    sizes = np.diff([0, *cuts, t.shape[axis]]).astype(np.int64)
    return [x, b.const(sizes)], {"axis": axis}, len(sizes)


def _slice(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(_rank(1))
    if x is None:
        return None
    shape = b.types[x].shape
    axes = sorted({a % len(shape) for a in _axes(b, len(shape))})
    starts, ends, steps = [], [], []
    for a in axes:
        d = shape[a]
        step = b.choice([1, 1, 2, -1])
        lo, hi = sorted((b.integer(0, d - 1), b.integer(0, d)))
        lo, hi = (lo, max(hi, lo + 1)) if step > 0 else (min(hi, d - 1), lo - 1)
        starts.append(lo - d if b.chance(0.2) else lo)
        ends.append(hi if hi >= 0 else -d - 1)
        steps.append(step)
    inputs = [x, *(b.const(np.array(v, np.int64)) for v in (starts, ends, axes, steps))]
    return inputs, {}, 1


def _gather(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(_rank(1))
    if x is None:
        return None
    shape = b.types[x].shape
    axis = b.integer(0, len(shape) - 1)
    d = shape[axis]
    if opdef.name == "GatherElements":
        index_shape = tuple(b.integer(1, s) if i == axis else s for i, s in enumerate(shape))
    else:
        index_shape = tuple(b.integer(1, 3) for _ in range(b.integer(0, 2)))
    indices = b.rng.integers(-d, d, index_shape).astype(b.choice([np.int64, np.int32]))
    return [x, b.const(indices)], {"axis": axis}, 1


def _reshape(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick()
    if x is None:
        return None
    size = b.types[x].size
    dims = []
    rest = size
    for _ in range(b.integer(0, 3)):
        divisors = [f for f in range(1, min(rest, 16) + 1) if rest % f == 0]
        f = b.choice(divisors)
        dims.append(f)
        rest //= f
    dims.append(rest)
    b.rng.shuffle(dims)
    if b.chance(0.4):
        dims[b.integer(0, len(dims) - 1)] = -1
    return [x, b.const(np.array(dims, np.int64))], {}, 1


def _transpose(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(_rank(2))
    if x is None:
        return None
    return [x], {"perm": [int(p) for p in b.rng.permutation(b.types[x].rank)]}, 1


def _reduce(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(_rank(1))
    if x is None:
        return None
    inputs = [x] + ([b.const(np.array(_axes(b, b.types[x].rank), np.int64))] if b.chance(0.8) else [])
    return inputs, {"keepdims": b.integer(0, 1)}, 1


def _unsqueeze(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(_rank(0, 3))
    if x is None:
        return None
    rank = b.types[x].rank + 1
    return [x, b.const(np.array([b.integer(-rank, rank - 1)], np.int64))], {}, 1


def _squeeze(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(lambda t: 1 in t.shape)
    if x is None:
        return None
    ones = [a for a, d in enumerate(b.types[x].shape) if d == 1]
    return [x, b.const(np.array([b.choice(ones)], np.int64))], {}, 1


def _expand_tile(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(_rank(1, 3))
    if x is None:
        return None
    shape = b.types[x].shape
    if opdef.name == "Tile":
        return [x, b.const(np.array([b.integer(1, 3) for _ in shape], np.int64))], {}, 1
    target = [b.integer(2, 3) if d == 1 else d for d in shape]
    return [x, b.const(np.array([b.integer(1, 2)] * b.integer(0, 1) + target, np.int64))], {}, 1


def _pad(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(_rank(1, 4))
    if x is None:
        return None
    t = b.types[x]
    mode = b.choice(["constant", "reflect", "edge"])
    limit = (lambda d: d - 1) if mode == "reflect" else (lambda d: 3)
    pads = [b.integer(0, min(2, limit(d))) for d in t.shape] * 2
    return [x, b.const(np.array(pads, np.int64))], {"mode": mode}, 1


def _cast(b: Builder, opdef: OpDef) -> Draft | None:
    from onnx.helper import np_dtype_to_tensor_dtype

    x = b.pick()
    if x is None:
        return None
    if opdef.name == "CastLike":
        return [x, b.const(np.zeros((1,), b.choice(DTYPES)))], {}, 1
    return [x], {"to": int(np_dtype_to_tensor_dtype(b.choice(DTYPES)))}, 1


def _pool(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(lambda t: t.rank == 4 and t.dtype in FLOATS and min(t.shape[2:]) >= 2)
    if x is None:
        return None
    kernel = [b.integer(1, min(3, d)) for d in b.types[x].shape[2:]]
    return [x], {"kernel_shape": kernel, "strides": [b.integer(1, 2) for _ in kernel],
                 "pads": [b.integer(0, k // 2) for k in kernel] * 2}, 1


def _topk(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(lambda t: t.rank >= 1 and t.dtype in DTYPES)
    if x is None:
        return None
    shape = b.types[x].shape
    axis = b.integer(0, len(shape) - 1)
    return [x, b.const(np.array([b.integer(1, shape[axis])], np.int64))], {"axis": axis}, 2


def _where(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(lambda t: t.dtype in DTYPES)
    if x is None:
        return None
    cond = b.pick(lambda t: t.dtype.kind == "b")
    if cond is None:
        cond = b.const(b.array(np.dtype(bool), b.types[x].shape))
    return [cond, x, b.like(x)], {}, 1


def _normalization(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(lambda t: t.rank >= 2 and t.dtype in FLOATS)
    if x is None:
        return None
    t = b.types[x]
    if opdef.name == "BatchNormalization":
        c = (t.shape[1],)
        return [x, *(b.const(b.array(t.dtype, c)) for _ in range(3)),
                b.const(b.rng.uniform(0.5, 1.5, c).astype(t.dtype))], {}, 1
    if opdef.name == "InstanceNormalization":
        return [x, *(b.const(b.array(t.dtype, (t.shape[1],))) for _ in range(2))], {}, 1
    return [x, *(b.const(b.array(t.dtype, t.shape[-1:])) for _ in range(2))], {"axis": -1}, 1


def _conv_transpose(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(lambda t: t.rank == 4 and t.dtype in FLOATS)
    if x is None:
        return None
    t = b.types[x]
    c, kernel = t.shape[1], [b.integer(1, 3), b.integer(1, 3)]
    m = b.integer(1, 4)
    w = b.const(b.array(t.dtype, (c, m, *kernel), 1.0 / math.sqrt(c * math.prod(kernel))))
    strides = [b.integer(1, 2), b.integer(1, 2)]
    return [x, w], {"strides": strides, "pads": [b.integer(0, k - 1) for k in kernel] * 2}, 1


def _pow(b: Builder, opdef: OpDef) -> Draft | None:
    """Pow; an integer base gets a constant exponent in [0, 3]: 0 to a negative power is a division by
    zero the spec leaves undefined (tensoregg gives 0, onnxruntime INT_MIN; seed 1084)."""
    x = b.pick()
    if x is None:
        return None
    t = b.types[x]
    if t.dtype.kind == "f":
        return [x, b.like(x)], {}, 1
    return [x, b.const(b.rng.integers(0, 4, t.shape[b.integer(0, t.rank):]).astype(t.dtype))], {}, 1


EQUATIONS = ("ij,jk->ik", "bij,bjk->bik", "ij->ji", "ij->i", "i,i->", "ij,j->i", "bij->bj")


def _einsum(b: Builder, opdef: OpDef) -> Draft | None:
    equation = b.choice(EQUATIONS)
    terms = equation.split("->")[0].split(",")
    x = b.pick(lambda t: t.rank == len(terms[0]) and t.dtype in FLOATS)
    if x is None:
        return None
    sizes = dict(zip(terms[0], b.types[x].shape))
    others = [b.const(b.array(b.types[x].dtype, tuple(sizes.setdefault(c, b.integer(1, 8)) for c in term)))
              for term in terms[1:]]
    return [x, *others], {"equation": equation}, 1


def _cumulative(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(_rank(1))
    if x is None:
        return None
    axis = b.integer(-b.types[x].rank, b.types[x].rank - 1)
    attrs = {"reverse": b.integer(0, 1), "exclusive": b.integer(0, 1)}
    return [x, b.const(np.array(axis, np.int64))], attrs, 1


def _blocks(b: Builder, opdef: OpDef) -> Draft | None:
    if opdef.name == "DepthToSpace":
        x = b.pick(lambda t: t.rank == 4 and t.shape[1] % 4 == 0)
    else:
        x = b.pick(lambda t: t.rank == 4 and t.shape[2] % 2 == 0 and t.shape[3] % 2 == 0)
    if x is None:
        return None
    attrs: dict[str, Any] = {"blocksize": 2}
    if opdef.name == "DepthToSpace":
        attrs["mode"] = b.choice(["DCR", "CRD"])
    return [x], attrs, 1


def _one_hot(b: Builder, opdef: OpDef) -> Draft | None:
    depth = b.integer(2, 6)
    shape = tuple(b.integer(1, 4) for _ in range(b.integer(1, 2)))
    values = b.pick(lambda t: t.rank == 1 and t.shape == (2,))
    return [b.const(b.rng.integers(-depth, depth, shape)), b.const(np.array(depth, np.int64)),
            values or b.const(b.array(b.choice(DTYPES), (2,)))], {"axis": b.integer(-1, len(shape))}, 1


def _resize(b: Builder, opdef: OpDef) -> Draft | None:
    x = b.pick(lambda t: t.rank == 4 and t.dtype in FLOATS)
    if x is None:
        return None
    scales = np.array([1, 1, b.choice([0.5, 1.5, 2.0]), b.choice([1.0, 2.0, 3.0])], np.float32)
    mode = b.choice(["nearest", "linear", "cubic"])
    return [x, "", b.const(scales)], {"mode": mode}, 1


def _attributed(b: Builder, opdef: OpDef) -> Draft | None:
    """GroupNormalization and LRN: a required attribute over the channels of a float tensor."""
    x = b.pick(lambda t: t.rank >= 3 and t.dtype in FLOATS)
    if x is None:
        return None
    t = b.types[x]
    c = t.shape[1]
    if opdef.name == "LRN":
        return [x], {"size": b.choice([1, 3, 5])}, 1
    groups = b.choice([g for g in range(1, c + 1) if c % g == 0])
    return [x, b.const(b.array(t.dtype, (c,))), b.const(b.array(t.dtype, (c,)))], {"num_groups": groups}, 1


DRAFTERS: dict[str, Callable[[Builder, OpDef], Draft | None]] = {
    "MatMul": _matmul, "Gemm": _gemm, "Conv": _conv, "Concat": _concat, "Split": _split, "Slice": _slice,
    "Gather": _gather, "GatherElements": _gather, "Reshape": _reshape, "Transpose": _transpose,
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Expand": _expand_tile, "Tile": _expand_tile,
    "Pad": _pad, "Cast": _cast, "CastLike": _cast, "MaxPool": _pool, "AveragePool": _pool, "LpPool": _pool,
    "TopK": _topk, "Where": _where, "BatchNormalization": _normalization,
    "InstanceNormalization": _normalization, "LayerNormalization": _normalization,
    "ConvTranspose": _conv_transpose, "Einsum": _einsum, "CumSum": _cumulative, "CumProd": _cumulative,
    "DepthToSpace": _blocks, "SpaceToDepth": _blocks, "OneHot": _one_hot, "Resize": _resize,
    "GroupNormalization": _attributed, "LRN": _attributed, "Pow": _pow,
    **{op.name: _reduce for op in OPS.values() if op.name.startswith("Reduce")},
}


def drawable() -> list[OpDef]:
    """The ops a graph may hold: ONNX ops with a compute definition whose outputs depend on their
    input values (not the shape queries import folds)."""
    return [o for (domain, _), o in sorted(OPS.items()) if not domain and o.deterministic
            and not o.folds_on_types and compute_of(o) is not None]


def _draft(b: Builder, opdef: OpDef) -> Draft | None:
    """A draft of ``opdef``'s node, None where its drafter found no inputs or ONNX would not take
    the type of its first input."""
    draft = DRAFTERS.get(opdef.name, _generic)(b, opdef)
    if draft is None or not draft[0] or not draft[0][0]:
        return draft
    return draft if onnx_allows(opdef, b.types[draft[0][0]].dtype) else None


# ---- large kernels ----------------------------------------------------------------------------------

def _large_matmul(b: Builder) -> None:
    """A MatMul above the untiled size, sometimes above the threading threshold, A computed or not."""
    side = round((TINY_FLOPS / 2) ** (1 / 3))
    m, n, k = (b.integer(side, 4 * side) for _ in range(3))
    if b.chance(0.4):  # enough work for the thread team
        m = max(m, PARALLEL_MIN_WORK // (n * k) + 1)
    x = b.input(np.dtype(np.float32), (m, k))
    b.add(OPS[("", "MatMul")], ([x, b.const(b.array(np.dtype(np.float32), (k, n), 1 / math.sqrt(k)))], {}, 1))


def _large_conv(b: Builder) -> None:
    """A Conv of at least ``MIN_CHANNELS`` channels over at least ``MIN_OUTPUTS`` pixels: 3x3 stride 1
    (Winograd's), 1x1 (rows packing) or strided (im2col gathers)."""
    c, m = b.integer(MIN_CHANNELS, 2 * MIN_CHANNELS), b.integer(MIN_CHANNELS, 2 * MIN_CHANNELS)
    side = b.integer(math.isqrt(MIN_OUTPUTS), 2 * math.isqrt(MIN_OUTPUTS))
    kernel, stride = b.choice([(3, 1), (3, 1), (1, 1), (3, 2)])
    x = b.input(np.dtype(np.float32), (b.integer(1, 2), c, side, side + b.integer(0, 3)))
    w = b.const(b.array(np.dtype(np.float32), (m, c, kernel, kernel), 1 / math.sqrt(c * kernel * kernel)))
    inputs = [x, w] + ([b.const(b.array(np.dtype(np.float32), (m,)))] if b.chance(0.7) else [])
    b.add(OPS[("", "Conv")], (inputs, {"pads": [kernel // 2] * 4, "strides": [stride, stride]}, 1))


def _large_wide(b: Builder) -> None:
    """A feature map of about a quarter of ``PARALLEL_MIN_WORK`` elements scaled per channel: the
    element-wise, reduction and layout kernels after it reach the threading threshold together."""
    n, c = b.integer(1, 4), b.choice([8, 16, 32])
    side = math.isqrt(PARALLEL_MIN_WORK // 4 // (n * c))
    dtype = b.choice(FLOATS)
    x = b.input(dtype, (n, c, side, side + b.integer(0, 5)))
    b.add(OPS[("", "Mul")], ([x, b.const(b.array(dtype, (c, 1, 1)))], {}, 1))


def _int8(b: Builder) -> None:
    """A chain of three to five int8 matrix products (QLinearMatMul) or 2-D convolutions (QLinearConv),
    a MatMulInteger or ConvInteger (int32 out) last sometimes: all the accel targets lower, so the
    graph ends there. Weights int8 about the zero point 0, the output scale sized so that few values
    saturate."""
    dtype = np.dtype(b.choice([np.int8, np.uint8]))
    info = np.iinfo(dtype)
    conv = b.chance(0.5)
    shape = (b.integer(1, 2), b.integer(2, 20), b.integer(3, 9), b.integer(3, 9)) if conv \
        else (b.integer(1, 24), b.integer(4, 72))
    x = b.input(dtype, shape)
    b.feeds[x] = b.rng.integers(info.min, info.max + 1, shape).astype(dtype)

    def zero_point() -> str:
        return b.const(np.array(b.integer(-8, 8) + info.min + 128, dtype))  # about the middle

    for k in range(b.integer(3, 5)):
        c = b.types[x].shape[1 if conv else -1]
        last = k >= 2 and b.chance(0.25)
        attrs: dict[str, Any] = {}
        if conv:
            kernel, group = b.choice([1, 3]), b.choice([g for g in (1, 1, c) if c % g == 0])
            m = group * b.integer(1, 2) if group > 1 else b.integer(1, 24)
            w = b.rng.integers(-127, 128, (m, c // group, kernel, kernel)).astype(np.int8)
            attrs = {"group": group, "pads": [b.integer(0, kernel // 2) for _ in range(4)],
                     "strides": [b.choice([1, 1, 2])] * 2}
        else:
            w = b.rng.integers(-127, 128, (c, b.integer(4, 72))).astype(np.int8)
        out = w.shape[0 if conv else 1]
        if last:
            op, inputs = "ConvInteger" if conv else "MatMulInteger", [x, b.const(w), zero_point(),
                                                                     b.const(np.zeros((), np.int8))]
        else:
            x_scale, w_scale = b.rng.uniform(0.01, 0.05), b.rng.uniform(0.002, 0.01, b.choice([(), (out,)]))
            y_scale = x_scale * np.mean(w_scale) * 128 * math.sqrt(w[0].size if conv else c)  # y about +-40
            scales = [b.const(np.asarray(v, np.float32)) for v in (x_scale, w_scale, y_scale)]
            op, inputs = "QLinearConv" if conv else "QLinearMatMul", [
                x, scales[0], zero_point(), b.const(w), scales[1], b.const(np.zeros(w_scale.shape, np.int8)),
                scales[2], zero_point()]
            if conv and b.chance(0.5):
                inputs.append(b.const(b.rng.integers(-3000, 3000, (out,)).astype(np.int32)))
        if not b.add(OPS[("", op)], (inputs, attrs, 1)) or last:
            return
        x = b.nodes[-1].outputs[0]


LARGE: dict[str, Callable[[Builder], None]] = {"matmul": _large_matmul, "conv": _large_conv,
                                               "wide": _large_wide, "int8": _int8}
CLOSED = frozenset({"int8"})
"""Kinds whose graph is the large kernel alone (no epilogue, no random ops after it)."""
EPILOGUE_ACTIVATIONS = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "HardSigmoid")


def _epilogue(b: Builder) -> None:
    """A bias and an activation after the large kernel, sometimes: what the fusion rules fold into
    it, so the tiled kernel runs them as its epilogue."""
    out = b.nodes[-1].outputs[0]
    t = b.types[out]
    if b.chance(0.6):
        bias = (t.shape[1], 1, 1) if t.rank == 4 else t.shape[-1:]
        b.add(OPS[("", "Add")], ([out, b.const(b.array(t.dtype, bias))], {}, 1))
        out = b.nodes[-1].outputs[0]
    if b.chance(0.6):
        b.add(OPS[("", b.choice(EPILOGUE_ACTIVATIONS))], ([out], {}, 1))


# ---- whole cases ------------------------------------------------------------------------------------

def random_case(seed: int, *, large: float = 0.2, min_nodes: int = MIN_NODES,
                max_nodes: int = MAX_NODES) -> Case:
    """The graph of ``seed``: ``min_nodes``..``max_nodes`` nodes (fewer only where no op fits), built
    around a large kernel with probability ``large``; its outputs are the values no node reads
    (at most four, the last node's always), and its inputs random small values. A graph whose
    reference run raises a tensoregg error (a value an op refuses) is drawn again (the seed's
    random stream goes on)."""
    rng = np.random.default_rng(seed)
    ops = drawable()
    structural = [o for o in ops if o.name in STRUCTURAL]
    for _ in range(20):
        b = Builder(rng)
        kind = ""
        if b.chance(large):
            kind = b.choice(sorted(LARGE))
            LARGE[kind](b)
            if kind not in CLOSED:
                _epilogue(b)
        for _ in range((b.integer(1, 2) if not b.inputs else b.integer(0, 1)) * (kind not in CLOSED)):
            b.input(b.choice(DTYPES), tuple(b.integer(1, 6) for _ in range(b.integer(1, 4))))
        target = b.integer(min_nodes, max_nodes) if kind not in CLOSED else 0
        while len(b.nodes) < target:
            for _ in range(TRIES):
                opdef = b.choice(structural if b.chance(0.5) else ops)
                drafts = (_draft(b, opdef) for _ in range(3))
                if any(draft is not None and b.add(opdef, draft) for draft in drafts):
                    break
            else:
                break
        if len(b.nodes) < min_nodes:
            continue
        read = {n for node in b.nodes for n in node.inputs}
        last = [o for o in b.nodes[-1].outputs if o]
        sinks = [n for node in b.nodes[:-1] for n in node.outputs if n and n not in read]
        outputs = list(dict.fromkeys([*sinks[-3:], *last]))
        used = {k: v for k, v in b.consts.items() if k in read}  # drafts the shape rules refused made more
        graph = Graph(b.inputs, used, b.nodes, outputs, name=f"fuzz{seed}")
        try:
            run_graph(graph, b.feeds)
        except TensoreggError:
            continue
        return Case(seed, graph, b.feeds, kind)
    raise RuntimeError(f"seed {seed}: no graph of {min_nodes}+ nodes in 20 tries")


def cases(*, large: float = 0.2, min_nodes: int = MIN_NODES, max_nodes: int = MAX_NODES
          ) -> st.SearchStrategy[Case]:
    """``random_case`` as a hypothesis strategy (the seed is what it draws)."""
    return st.integers(0, 2**32 - 1).map(lambda seed: random_case(seed, large=large, min_nodes=min_nodes,
                                                                   max_nodes=max_nodes))
