"""Import-time expansions: ONNX operators the registry does not hold, imported as a few ops it does.

An :class:`Expansion` states an operator's attributes, the inputs whose values must be known at
import, and a function that emits the replacement nodes through an :class:`Expanding` context (the
expansions themselves live one module per family: ``onnx_rnn``, ``onnx_dft``). The emitted nodes
are imported like any other at the newest opset (typed, folded when their inputs are constants), so
every target compiles them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from tensoregg.errors import InvalidModel, UnsupportedOperator
from tensoregg.ir import REQUIRED, Attr, Node, TensorType

_PYTHON_KINDS: dict[str, type | tuple[type, ...]] = {
    "int": int, "float": (float, int), "string": str, "ints": tuple, "floats": tuple, "strings": tuple}


@dataclass(frozen=True)
class Expansion:
    """How one operator is imported as others: its attributes, inputs that must be constants
    (``static_inputs``, bound by the backend adapter like the registry's), the oldest opset whose
    form it states, and the function that emits the replacement."""

    expand: Callable[[Expanding], None]
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    static_inputs: frozenset[int] = frozenset()
    since: int = 1


class Expanding:
    """One node being expanded: its inputs' types and known values, its attributes (checked, with
    defaults), and ``add``/``const`` to emit the nodes that replace it."""

    def __init__(self, node: Node, opset: int, expansion: Expansion, types: Mapping[str, TensorType],
                 values: Mapping[str, np.ndarray], emit: Callable[[Node, str | None], str],
                 const: Callable[[np.ndarray], str]) -> None:
        self.node, self.opset = node, opset
        self.types, self.values = types, values
        self._emit, self._const = emit, const
        self._consts: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        if opset < expansion.since:
            self.unsupported(f"the opset {opset} form (expanded from opset {expansion.since} on)")
        self.attrs = self._checked_attrs(expansion.attrs)

    def _checked_attrs(self, spec: Mapping[str, Attr]) -> dict[str, Any]:
        out = {}
        for name, value in self.node.attrs.items():
            if name not in spec:
                raise InvalidModel(f"{self.where}: unknown attribute {name!r} "
                                   f"(known: {', '.join(sorted(spec))})")
            if not isinstance(value, _PYTHON_KINDS[spec[name].kind]) or isinstance(value, bool):
                raise InvalidModel(f"{self.where}: attribute {name!r} must be {spec[name].kind}, "
                                   f"got {value!r:.60}")
            out[name] = value
        for name, a in spec.items():
            if name not in out:
                if a.default is REQUIRED:
                    raise InvalidModel(f"{self.where}: missing required attribute {name!r}")
                out[name] = a.default
        return out

    @property
    def where(self) -> str:
        return f"{self.node.op} node {self.node.label!r}"

    def unsupported(self, detail: str) -> NoReturn:
        raise UnsupportedOperator(self.node.op, opset=self.opset, node=self.node.label, detail=detail)

    def has(self, i: int) -> bool:
        """Whether optional input ``i`` was given."""
        return i < len(self.node.inputs) and bool(self.node.inputs[i])

    def input(self, i: int) -> str:
        if not self.has(i):
            raise InvalidModel(f"{self.where}: required input {i} is missing")
        return self.node.inputs[i]

    def type(self, i: int) -> TensorType:
        return self.types[self.input(i)]

    def value(self, i: int, what: str) -> np.ndarray:
        """The import-time value of input ``i`` (``what`` names it in the error when it is not known)."""
        v = self.values.get(self.input(i))
        if v is None:
            self.unsupported(f"input {i} ({what}) must be a constant known at import")
        return np.asarray(v)

    def wants(self, k: int) -> bool:
        """Whether output ``k`` is used (named)."""
        return k < len(self.node.outputs) and bool(self.node.outputs[k])

    def const(self, value: Any, dtype: Any = None) -> str:
        """A constant input (one value name per distinct constant of this node)."""
        a = np.asarray(value, dtype=dtype)
        key = (a.dtype.str, a.shape, a.tobytes())
        if key not in self._consts:
            self._consts[key] = self._const(a)
        return self._consts[key]

    def add(self, op: str, inputs: list[str], out: int | None = None, **attrs: Any) -> str:
        """Emit ``op`` on ``inputs`` and return its output; ``out`` = k makes it the expanded node's
        output k."""
        node = Node(op, tuple(inputs), ("",), attrs, self.node.label, self.node.domain)
        return self._emit(node, None if out is None else self.node.outputs[out])
