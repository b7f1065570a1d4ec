"""Compute definitions: each op as an index expression over its inputs, as TVM's ``te.compute``.

An op's compute definition (registered in ``COMPUTE`` with :func:`define`) is a function
of a :class:`ComputeCtx` that returns, per output, an :class:`Expr` giving the output element at the
index variables ``ctx.index(k)``. Expressions read buffers (``Buffer[...]``), combine values with
:class:`Call` (arithmetic, comparisons, math functions, ``select``, ``cast``, ``bitcast``) and reduce with
:class:`Reduce` (an identity and a combiner over extra index variables). A definition may compute
intermediate tensors first (``ctx.stage``), e.g. a padded copy of a convolution's input.

Values keep their dtype exactly: both operands of an arithmetic call have one dtype (the op's
dtype rule already made them agree), integers wrap, comparisons give bool. Index arithmetic is i64.
Every load's index must be in range for every index the loops visit: definitions clamp data-dependent
indices themselves, so that generated code never reads outside a buffer; an index that ONNX
requires to be in range (Gather's) is clamped by ``bound``, which also records the fault for the
run to raise (``IndexOutOfRange``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

from tensoregg.errors import UnsupportedOperator
from tensoregg.ir.registry import OPS, OpDef
from tensoregg.ir.types import TensorType

INDEX = np.dtype(np.int64)
BOOL = np.dtype(np.bool_)

ARITH = {"add", "sub", "mul", "div", "rem", "max", "min", "pow", "and", "or", "xor", "shl", "shr"}
"""Binary calls whose result has the operands' dtype. ``div`` truncates integers toward zero and
``rem`` takes the dividend's sign (C); floors are built from them where an op needs one."""
COMPARE = {"lt", "le", "gt", "ge", "eq", "ne"}
"""Binary calls giving bool (ordered: false when a float operand is NaN, except ``ne``)."""
UNARY = {"neg", "abs", "exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "erf", "floor", "ceil",
         "round", "not", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "expm1",
         "log1p"}
"""Unary calls whose result has the operand's dtype (``round`` rounds half to even; ``not`` is
logical for bool and bitwise for integers)."""
PREDICATES = {"isnan", "isinf", "signbit"}
"""Unary float calls giving bool."""
BOUND = "bound"
"""``bound(i, n)`` (i64): ``i`` clamped into [0, n); an ``i`` outside it is a fault that the
target records and the run reports (see :func:`bounded`)."""


class Expr:
    """A scalar expression; ``dtype`` is the numpy dtype of its value."""

    dtype: np.dtype

    def __add__(self, other: Any) -> Expr:
        return call("add", self, other)

    def __radd__(self, other: Any) -> Expr:
        return call("add", other, self)

    def __sub__(self, other: Any) -> Expr:
        return call("sub", self, other)

    def __rsub__(self, other: Any) -> Expr:
        return call("sub", other, self)

    def __mul__(self, other: Any) -> Expr:
        return call("mul", self, other)

    def __rmul__(self, other: Any) -> Expr:
        return call("mul", other, self)

    def __truediv__(self, other: Any) -> Expr:
        return call("div", self, other)

    def __neg__(self) -> Expr:
        return call("neg", self)


@dataclass(frozen=True, eq=False)
class Const(Expr):
    value: Any
    dtype: np.dtype

    def __repr__(self) -> str:
        return repr(self.value) if self.dtype == INDEX else f"{self.value!r}:{self.dtype}"


@dataclass(frozen=True, eq=False)
class Var(Expr):
    """A loop index (i64)."""

    name: str
    dtype: np.dtype = INDEX

    def __repr__(self) -> str:
        return self.name


@dataclass(eq=False)
class Buffer:
    """A dense row-major tensor in memory: a kernel's input, output or intermediate stage."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __getitem__(self, index: Any) -> Load:
        items = index if isinstance(index, tuple) else (index,)
        if len(items) != len(self.shape):
            raise ValueError(f"buffer {self.name} of rank {len(self.shape)}: {len(items)} indices")
        return Load(self, tuple(as_expr(i, INDEX) for i in items))

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class Load(Expr):
    buffer: Buffer
    index: tuple[Expr, ...]

    @property
    def dtype(self) -> np.dtype:  # type: ignore[override]
        return self.buffer.dtype

    def __repr__(self) -> str:
        return f"{self.buffer.name}[{', '.join(map(repr, self.index))}]"


@dataclass(frozen=True, eq=False)
class Call(Expr):
    fn: str
    args: tuple[Expr, ...]
    dtype: np.dtype

    def __repr__(self) -> str:
        if self.fn in ("cast", "bitcast"):
            return f"{self.fn}<{self.dtype}>({self.args[0]!r})"
        return f"{self.fn}({', '.join(map(repr, self.args))})"


@dataclass(frozen=True, eq=False)
class Reduce(Expr):
    """``combiner`` (add, mul, max, min) of ``body`` over ``axes`` (each from 0 to its extent),
    starting from ``init``."""

    combiner: str
    axes: tuple[Var, ...]
    extents: tuple[int, ...]
    body: Expr
    init: Expr

    @property
    def dtype(self) -> np.dtype:  # type: ignore[override]
        return self.body.dtype

    def __repr__(self) -> str:
        loops = ", ".join(f"{v.name}<{n}" for v, n in zip(self.axes, self.extents))
        return f"reduce_{self.combiner}[{loops}]({self.body!r}, init={self.init!r})"


def as_expr(value: Any, dtype: np.dtype | None = None) -> Expr:
    """``value`` as an Expr: Exprs pass through, Python/numpy scalars become Consts of ``dtype``."""
    if isinstance(value, Expr):
        return value
    if dtype is None:
        raise TypeError(f"a constant {value!r} needs a dtype here")
    return Const(np.asarray(value).astype(dtype).item(), np.dtype(dtype))


def const(value: Any, dtype: Any) -> Const:
    return Const(np.asarray(value).astype(dtype).item(), np.dtype(dtype))


def call(fn: str, *args: Any, dtype: Any = None) -> Expr:
    """A call of ``fn``; constants among ``args`` take the dtype of the first Expr argument."""
    known = next((a.dtype for a in args if isinstance(a, Expr)), None)
    if fn == "select":
        c, a, b = args
        branch = next((x.dtype for x in (a, b) if isinstance(x, Expr)), dtype)
        picked = (as_expr(c, BOOL), as_expr(a, branch), as_expr(b, branch))
        _same(fn, picked[1:])
        return Call(fn, picked, picked[1].dtype)
    exprs = tuple(as_expr(a, known) for a in args)
    if fn == "cast":
        return exprs[0] if exprs[0].dtype == np.dtype(dtype) else Call(fn, exprs, np.dtype(dtype))
    if fn == "bitcast":
        if exprs[0].dtype.itemsize != np.dtype(dtype).itemsize:
            raise TypeError(f"bitcast: {exprs[0].dtype} and {np.dtype(dtype)} differ in size")
        return exprs[0] if exprs[0].dtype == np.dtype(dtype) else Call(fn, exprs, np.dtype(dtype))
    if fn in ARITH:
        _same(fn, exprs)
        return _index_identity(fn, exprs) or Call(fn, exprs, exprs[0].dtype)
    if fn in COMPARE:
        _same(fn, exprs)
        return Call(fn, exprs, BOOL)
    if fn in UNARY:
        return Call(fn, exprs, exprs[0].dtype)
    if fn in PREDICATES:
        return Call(fn, exprs, BOOL)
    if fn == BOUND:
        if [e.dtype for e in exprs] != [INDEX, INDEX]:
            raise TypeError(f"bound: takes two i64, got {[str(e.dtype) for e in exprs]}")
        return Call(fn, exprs, INDEX)
    raise ValueError(f"unknown call {fn!r}")


def _index_identity(fn: str, exprs: tuple[Expr, ...]) -> Expr | None:
    """Index arithmetic's trivial cases (x + 0, x - 0, x * 1, constants), to keep loop IR readable."""
    if exprs[0].dtype != INDEX or len(exprs) != 2:
        return None
    a, b = exprs
    ka, kb = (x.value if isinstance(x, Const) else None for x in (a, b))
    if ka is not None and kb is not None and fn in ("add", "sub", "mul"):
        return const({"add": ka + kb, "sub": ka - kb, "mul": ka * kb}[fn], INDEX)
    if (fn == "add" and ka == 0) or (fn == "mul" and ka == 1):
        return b
    if (fn in ("add", "sub") and kb == 0) or (fn in ("mul", "div") and kb == 1):
        return a
    return None


def _same(fn: str, exprs: Sequence[Expr]) -> None:
    if len({e.dtype for e in exprs}) != 1:
        raise TypeError(f"{fn}: operand dtypes differ: {[str(e.dtype) for e in exprs]}")


def select(cond: Any, a: Any, b: Any) -> Expr:
    return call("select", cond, a, b)


def cast(x: Expr, dtype: Any) -> Expr:
    """``x`` converted to ``dtype`` (rounded as numpy/ml_dtypes' ``astype``)."""
    return call("cast", x, dtype=dtype)


def bitcast(x: Expr, dtype: Any) -> Expr:
    """``x``'s bits (as numpy stores them) read as a value of ``dtype``, of the same size."""
    return call("bitcast", x, dtype=dtype)


_names = itertools.count()


def fresh(prefix: str) -> Var:
    return Var(f"{prefix}{next(_names)}")


def reduce(combiner: str, extents: Sequence[int], body: Callable[..., Expr], init: Any) -> Expr:
    """``combiner`` of ``body(*axes)`` over fresh axes of ``extents`` (an empty range gives ``init``)."""
    axes = tuple(fresh("r") for _ in extents)
    value = body(*axes)
    return Reduce(combiner, axes, tuple(int(n) for n in extents), value, as_expr(init, value.dtype))


IDENTITY = {"add": 0, "mul": 1}


def is_float(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a float type: numpy's or ml_dtypes' (bfloat16, float8...)."""
    return dtype.kind == "f" or (dtype.kind == "V" and dtype.name.startswith(("bfloat", "float")))


def identity_of(combiner: str, dtype: np.dtype) -> Any:
    """The identity of ``combiner`` on ``dtype`` (max/min: the lowest/highest value or -/+inf)."""
    if combiner in IDENTITY:
        return IDENTITY[combiner]
    if dtype == BOOL:
        return combiner == "min"
    if is_float(dtype):
        if np.isinf(np.asarray(np.inf).astype(dtype).astype(np.float64)):
            return -np.inf if combiner == "max" else np.inf
        finfo = ml_dtypes.finfo(dtype)  # no infinity (float8 fn/fnuz/e8m0, the MX types)
        return float(finfo.min if combiner == "max" else finfo.max)
    info = ml_dtypes.iinfo(dtype)
    return info.min if combiner == "max" else info.max


# ---- traversal ------------------------------------------------------------------------------------

def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Load):
        return e.index
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Reduce):
        return (e.body, e.init)
    return ()


def walk(e: Expr) -> Iterator[Expr]:
    """Every sub-expression of ``e`` (``e`` first), each once."""
    seen: set[int] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        stack.extend(children(x))


def substitute(e: Expr, mapping: Mapping[int, Expr]) -> Expr:
    """``e`` with each sub-expression whose ``id`` is in ``mapping`` replaced (shared nodes stay shared)."""
    memo: dict[int, Expr] = {}

    def go(x: Expr) -> Expr:
        if id(x) in mapping:
            return mapping[id(x)]
        if id(x) in memo:
            return memo[id(x)]
        out: Expr = x
        if isinstance(x, Load):
            index = tuple(go(i) for i in x.index)
            out = x if all(a is b for a, b in zip(index, x.index)) else Load(x.buffer, index)
        elif isinstance(x, Call):
            args = tuple(go(a) for a in x.args)
            out = x if all(a is b for a, b in zip(args, x.args)) else Call(x.fn, args, x.dtype)
        elif isinstance(x, Reduce):
            body, init = go(x.body), go(x.init)
            same = body is x.body and init is x.init
            out = x if same else Reduce(x.combiner, x.axes, x.extents, body, init)
        memo[id(x)] = out
        return out

    return go(e)


# ---- definitions ----------------------------------------------------------------------------------

@dataclass
class Stage:
    """An intermediate tensor a definition computes before its outputs."""

    buffer: Buffer
    index: tuple[Var, ...]
    value: Expr


@dataclass
class ComputeCtx:
    """What a compute definition sees: input buffers (``None`` for an omitted optional input), the
    output types, attributes, compile-time constant inputs, and the output index variables."""

    op: str
    node: str
    inputs: list[Buffer | None]
    outputs: list[TensorType]
    attrs: Mapping[str, Any]
    values: list[np.ndarray | None]
    stages: list[Stage] = field(default_factory=list)
    constants: list[tuple[Buffer, np.ndarray]] = field(default_factory=list)
    _index: dict[int, tuple[Var, ...]] = field(default_factory=dict)

    def index(self, k: int = 0) -> tuple[Var, ...]:
        """The index variables of output ``k`` (one per axis)."""
        if k not in self._index:
            self._index[k] = tuple(Var(f"i{a}") if k == 0 else Var(f"o{k}_{a}")
                                   for a in range(len(self.outputs[k].shape)))
        return self._index[k]

    def input(self, i: int) -> Buffer:
        buf = self.inputs[i] if i < len(self.inputs) else None
        if buf is None:
            raise ValueError(f"{self.op} node {self.node!r}: input {i} is not given")
        return buf

    def has(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def value(self, i: int) -> np.ndarray | None:
        """The compile-time value of input ``i``, when it is a constant."""
        return self.values[i] if i < len(self.values) else None

    def unsupported(self, detail: str) -> UnsupportedOperator:
        return UnsupportedOperator(self.op, node=self.node, detail=detail)

    def constant(self, name: str, value: np.ndarray) -> Buffer:
        """A buffer holding ``value``, computed now from constant inputs (e.g. a weight transposed
        into the layout the kernel reads best): the target stores it with the model's weights."""
        value = np.ascontiguousarray(value)
        buf = Buffer(f"{self.node}.{name}", value.dtype, tuple(value.shape))
        self.constants.append((buf, value))
        return buf

    def stage(self, name: str, shape: Sequence[int], fn: Callable[..., Expr]) -> Buffer:
        """A tensor of ``shape`` whose element at ``index`` is ``fn(*index)``, computed first."""
        index = tuple(Var(f"{name}_{a}") for a in range(len(shape)))
        value = fn(*index)
        buf = Buffer(f"{self.node}.{name}", value.dtype, tuple(int(d) for d in shape))
        self.stages.append(Stage(buf, index, value))
        return buf

    def broadcast(self, i: int, k: int = 0) -> Expr:
        """Input ``i`` read at output ``k``'s index under numpy broadcasting."""
        return broadcast_load(self.input(i), self.index(k))


def broadcast_load(buf: Buffer, index: Sequence[Expr]) -> Load:
    """``buf`` read at an ``index`` of a shape it broadcasts to (numpy rules: trailing axes align,
    axes of size 1 are read at 0)."""
    lead = len(index) - len(buf.shape)
    if lead < 0:
        raise ValueError(f"buffer {buf.name} of shape {buf.shape} does not broadcast to rank {len(index)}")
    return buf[tuple(const(0, INDEX) if d == 1 else index[lead + a] for a, d in enumerate(buf.shape))]


ComputeFn = Callable[[ComputeCtx], Sequence[Expr]]


COMPUTE: dict[tuple[str, str], ComputeFn] = {}
"""The compute definition of each op that has one, by its registry key (domain, name)."""


def define(*ops: str, domain: str = "") -> Callable[[ComputeFn], ComputeFn]:
    """Register the decorated function as the compute definition of each op in ``ops``."""
    def attach(fn: ComputeFn) -> ComputeFn:
        for op in ops:
            if (domain, op) not in OPS:
                raise ValueError(f"compute definition for unknown op {op!r} (domain {domain!r})")
            COMPUTE[(domain, op)] = fn
        return fn
    return attach


def compute_of(opdef: OpDef) -> ComputeFn | None:
    return COMPUTE.get(opdef.key)


# ---- index helpers ------------------------------------------------------------------------------

def idx(value: int) -> Expr:
    """An i64 index constant."""
    return const(value, INDEX)


def clamp(i: Expr, low: int, high: int) -> Expr:
    """``i`` clamped into [low, high]."""
    return call("min", call("max", i, idx(low)), idx(high))


def clamp_index(i: Expr, size: int) -> Expr:
    """``i`` clamped into [0, size): a load that is always in bounds (callers select around it)."""
    return clamp(i, 0, max(size, 1) - 1)


def bounded(i: Expr, size: int) -> Expr:
    """``i`` clamped into [0, size), an ``i`` outside it reported as an error by the run (an index
    that ONNX requires in range, as onnxruntime checks it)."""
    return call(BOUND, i, idx(max(size, 1)))


def in_range(i: Expr, low: int, high: int) -> Expr:
    """low <= i < high."""
    return call("and", call("ge", i, idx(low)), call("lt", i, idx(high)))


def all_of(conditions: Sequence[Expr]) -> Expr | None:
    """The conjunction of ``conditions``; None when there are none (nothing to check)."""
    out: Expr | None = None
    for c in conditions:
        out = c if out is None else call("and", out, c)
    return out


def all_true(conditions: Sequence[Expr]) -> Expr:
    """The conjunction of ``conditions``, true when there are none."""
    return all_of(conditions) or const(True, BOOL)
