"""The operator registry: each operator is defined once, here or in ``ir/ops/<family>.py``.

An entry (:class:`OpDef`) holds the operator's signature (inputs, outputs, typed attributes with
defaults), its shape/dtype rule, its reference semantics in numpy and the upgrade of older ONNX
opset forms to the current one. Later layers add to the same entry (egglog constructor, compute
definition, lowering) rather than defining the operator again.

The IR follows the current ONNX opset's semantics; inputs whose *values* decide an output shape
(Reshape's ``shape``, Slice's ``starts``...) are listed in ``static_inputs`` and must be
compile-time constants, which keeps every shape in a Graph static. The data-dependent ops
(NonZero, Unique, Compress, NonMaxSuppression: ``bounded_inputs``) are the exception: where an input
deciding their output shape is only known at run time, their shape rule gives an upper bound, the
shape planned at compile time, and ``tensoregg.staging`` runs them on the host at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from tensoregg.errors import InvalidModel, ShapeError, UnsupportedOperator
from tensoregg.ir.types import TensorType

REQUIRED: Any = object()
"""Default of an attribute that a node must set."""

ATTR_KINDS = ("int", "float", "string", "ints", "floats", "strings", "tensor")


@dataclass(frozen=True)
class Attr:
    """An attribute's kind (one of ``ATTR_KINDS``) and its default (``REQUIRED`` if none)."""

    kind: str
    default: Any = REQUIRED

    def __post_init__(self) -> None:
        if self.kind not in ATTR_KINDS:
            raise ValueError(f"unknown attribute kind {self.kind!r}")


@dataclass(frozen=True)
class Param:
    """One input or output slot: optional slots may be omitted, a variadic slot is last."""

    name: str
    optional: bool = False
    variadic: bool = False


def parse_params(spec: str) -> tuple[Param, ...]:
    """``"X W B?"`` -> params; ``?`` marks an optional slot and ``*`` a variadic last slot."""
    params = []
    for word in spec.split():
        params.append(Param(word.rstrip("?*"), optional=word.endswith("?"),
                            variadic=word.endswith("*")))
    if any(p.variadic for p in params[:-1]):
        raise ValueError(f"only the last slot may be variadic: {spec!r}")
    return tuple(params)


class InferCtx:
    """What a shape rule sees: the node's input types, known constant values and attributes."""

    def __init__(self, op: str, node: str, types: Sequence[TensorType | None],
                 values: Sequence[np.ndarray | None], attrs: Mapping[str, Any],
                 n_outputs: int) -> None:
        self.op, self.node = op, node
        self.types = list(types)
        self.values = list(values)
        self.attrs = dict(attrs)
        self.n_outputs = n_outputs

    def fail(self, message: str) -> NoReturn:
        raise ShapeError(f"{self.op} node {self.node!r}: {message}")

    def has(self, i: int) -> bool:
        """Whether optional input ``i`` was given."""
        return i < len(self.types) and self.types[i] is not None

    def type(self, i: int) -> TensorType:
        t = self.types[i] if i < len(self.types) else None
        if t is None:
            self.fail(f"input {i} is required")
        return t

    def shape(self, i: int) -> tuple[int, ...]:
        return self.type(i).shape

    def dtype(self, i: int) -> np.dtype:
        return self.type(i).dtype

    def value(self, i: int) -> np.ndarray:
        """The compile-time value of input ``i`` (it must be listed in ``static_inputs``)."""
        v = self.values[i] if i < len(self.values) else None
        if v is None:
            self.fail(f"input {i} must be a compile-time constant (shapes are static)")
        return v

    def known(self, i: int) -> np.ndarray | None:
        """The compile-time value of input ``i``, or None where it is only known at run time."""
        return self.values[i] if i < len(self.values) else None

    def ints(self, i: int) -> list[int]:
        """The compile-time value of input ``i`` as a list of Python ints."""
        return [int(x) for x in np.asarray(self.value(i)).reshape(-1)]

    def axis(self, axis: int, rank: int) -> int:
        """Normalize a possibly negative axis, failing with a clear message when out of range."""
        if not -rank <= axis < max(rank, 1):
            self.fail(f"axis {axis} out of range for rank {rank}")
        return axis + rank if axis < 0 else axis


ShapeRule = Callable[[InferCtx], "TensorType | Sequence[TensorType]"]
Reference = Callable[..., Any]


@dataclass
class Upgrade:
    """A node in an older opset's form, upgraded in place by an op's ``adapt`` hook."""

    op: str
    opset: int
    node: str
    inputs: list[str]
    attrs: dict[str, Any]
    const: Callable[[np.ndarray], str]
    """Adds a constant to the graph and returns its value name (for attributes that became inputs)."""
    types: list[TensorType | None] = field(default_factory=list)
    """The input types, as far as known at import (``None`` for an omitted input)."""
    outputs: list[str] = field(default_factory=list)
    """The node's output names (Split before opset 18 cuts one equal part per output)."""
    emit: Callable[[str, list[str], dict[str, Any]], str] | None = None
    """Imports a helper node ahead of this one and returns its output (see ``add``)."""

    def add(self, op: str, inputs: list[str], **attrs: Any) -> str:
        """Add a one-output node computed before this one and return its output name.

        The node is imported like any other (at this model's opset, so it is upgraded too):
        older forms whose meaning the current op cannot state become a few current ops.
        """
        if self.emit is None:
            raise RuntimeError("this Upgrade cannot add nodes")
        return self.emit(op, inputs, attrs)

    def move_attr_to_input(self, attr: str, index: int, dtype: Any = np.int64) -> None:
        """Older opsets held some inputs as attributes: turn ``attr`` into input ``index``."""
        if attr in self.attrs:
            value = self.attrs.pop(attr)
            while len(self.inputs) < index:
                self.inputs.append("")
            name = self.const(np.asarray(value, dtype=dtype))
            if len(self.inputs) == index:
                self.inputs.append(name)
            else:
                self.inputs[index] = name

    def unsupported(self, detail: str) -> NoReturn:
        raise UnsupportedOperator(self.op, opset=self.opset, node=self.node, detail=detail)


@dataclass(frozen=True)
class OpDef:
    """One operator, defined once."""

    name: str
    inputs: tuple[Param, ...]
    outputs: tuple[Param, ...]
    attrs: Mapping[str, Attr]
    infer: ShapeRule
    reference: Reference
    static_inputs: frozenset[int] = frozenset()
    bounded_inputs: frozenset[int] = frozenset()
    """Inputs whose values decide the output shapes: where one is not a compile-time constant, the
    shape rule gives an upper bound of each output shape (``tensoregg.ir.bounds``)."""
    domain: str = ""
    deterministic: bool = True
    folds_on_types: bool = False
    """The outputs depend only on input types (Shape, Size): folded to constants at import."""
    folds_at_import: bool = True
    """False: a node over constants stays through import, for rules to match (DequantizeLinear of
    quantized weights becomes part of an integer kernel); ``fold_constants`` folds what is left."""
    adapt: Callable[[Upgrade], None] | None = None
    doc: str = ""
    ops_per_element: float = 1.0
    """Arithmetic per output element, for the cost model (linear ops count their products instead)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.name)

    def arity_ok(self, n: int) -> bool:
        required = sum(1 for p in self.inputs if not p.optional and not p.variadic)
        if self.inputs and self.inputs[-1].variadic:
            return n >= max(required, 1)
        return required <= n <= len(self.inputs)

    def check_attrs(self, attrs: Mapping[str, Any], node: str) -> dict[str, Any]:
        """Check attribute names and kinds and fill in defaults; raise InvalidModel if wrong."""
        out: dict[str, Any] = {}
        for name, value in attrs.items():
            if name not in self.attrs:
                raise InvalidModel(f"{self.name} node {node!r}: unknown attribute {name!r} "
                                   f"(known: {', '.join(sorted(self.attrs)) or 'none'})")
            if value is None and self.attrs[name].default is None:
                out[name] = None  # an optional attribute left unset (its default is None)
                continue
            out[name] = _coerce_attr(self.name, node, name, self.attrs[name].kind, value)
        for name, spec in self.attrs.items():
            if name not in out:
                if spec.default is REQUIRED:
                    raise InvalidModel(f"{self.name} node {node!r}: missing required attribute {name!r}")
                out[name] = spec.default
        return out

    def infer_types(self, ctx: InferCtx) -> list[TensorType]:
        result = self.infer(ctx)
        types = [result] if isinstance(result, TensorType) else list(result)
        if len(types) < ctx.n_outputs:
            ctx.fail(f"shape rule gave {len(types)} outputs, node has {ctx.n_outputs}")
        return types


def _coerce_attr(op: str, node: str, name: str, kind: str, value: Any) -> Any:
    def bad() -> NoReturn:
        raise InvalidModel(f"{op} node {node!r}: attribute {name!r} must be {kind}, "
                           f"got {type(value).__name__} {value!r:.60}")

    try:
        if kind == "int":
            if isinstance(value, (bool, float, str, bytes, list, tuple, np.ndarray)):
                bad()
            return int(value)
        if kind == "float":
            if isinstance(value, (str, bytes, list, tuple, np.ndarray)):
                bad()
            return float(value)
        if kind == "string":
            if isinstance(value, bytes):
                return value.decode()
            if not isinstance(value, str):
                bad()
            return value
        if kind in ("ints", "floats", "strings"):
            if not isinstance(value, (list, tuple)):
                bad()
            item = kind[:-1]
            return tuple(_coerce_attr(op, node, name, item, v) for v in value)
        if kind == "tensor":
            if not isinstance(value, np.ndarray):
                bad()
            return value
    except (TypeError, ValueError, OverflowError):
        bad()
    bad()


OPS: dict[tuple[str, str], OpDef] = {}
"""Every registered operator by ``(domain, name)``; filled when ``tensoregg.ir.ops`` is imported."""


def op(name: str, inputs: str, outputs: str, *, shape: ShapeRule,
       attrs: Mapping[str, Attr] | None = None, static: Iterable[int] = (),
       adapt: Callable[[Upgrade], None] | None = None, domain: str = "",
       deterministic: bool = True, folds_on_types: bool = False, folds_at_import: bool = True,
       ops_per_element: float = 1.0, bounded: Iterable[int] = ()) -> Callable[[Reference], Reference]:
    """Register an operator whose reference semantics is the decorated function.

    The function is called as ``fn(attrs, *inputs)`` with ``attrs`` a dict holding every
    attribute (defaults filled) and an omitted optional input passed as ``None``; it returns one
    array or a tuple of arrays, one per output.
    """

    def register(fn: Reference) -> Reference:
        key = (domain, name)
        if key in OPS:
            raise ValueError(f"operator {name!r} registered twice")
        OPS[key] = OpDef(name=name, inputs=parse_params(inputs), outputs=parse_params(outputs),
                         attrs=dict(attrs or {}), infer=shape, reference=fn,
                         static_inputs=frozenset(static), bounded_inputs=frozenset(bounded),
                         domain=domain,
                         deterministic=deterministic, folds_on_types=folds_on_types,
                         folds_at_import=folds_at_import, adapt=adapt,
                         doc=(fn.__doc__ or "").strip(), ops_per_element=ops_per_element)
        return fn

    return register


def get_op(name: str, domain: str = "", *, opset: int | None = None,
           node: str | None = None) -> OpDef:
    """Look up an operator, raising UnsupportedOperator (naming op, opset, node) if unknown."""
    found = OPS.get(("" if domain == "ai.onnx" else domain, name))
    if found is None:
        label = f"{domain}::{name}" if domain not in ("", "ai.onnx") else name
        raise UnsupportedOperator(label, opset=opset, node=node)
    return found
