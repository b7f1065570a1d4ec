"""ONNX frontend: a ModelProto, a path or serialized bytes -> a typed, static-shape ``ir.Graph``.

Older opset forms are upgraded node by node through each op's ``adapt`` hook; nodes whose inputs
are all known at import (initializers, Constant, Shape of a typed value...) are folded into
constants with the reference semantics, so shape-computing subgraphs such as
Shape->Gather->Concat->Reshape disappear and every shape in the Graph is static. Control flow
(If, Loop, Scan), sequences and optionals are decided, unrolled or if-converted at import
(``onnx_control``), so the Graph holds none of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
import onnx
import onnx.defs
from google.protobuf.message import DecodeError
from onnx import external_data_helper, helper, numpy_helper

from tensoregg.errors import InvalidModel, ParameterError, ShapeError, UnsupportedOperator
from tensoregg.frontends import onnx_control, onnx_dft, onnx_rnn, onnx_roialign
from tensoregg.frontends.onnx_control import Layout, Opt, Seq, Skeleton, Struct, leaf_name
from tensoregg.frontends.onnx_expand import Expanding, Expansion
from tensoregg.frontends.onnx_functions import expand_functions
from tensoregg.ir import Graph, Node, TensorType, Upgrade, get_op, run_node
from tensoregg.ir.bounds import reads_bounded
from tensoregg.ir.fold import fold_args, live_nodes
from tensoregg.ir.graph import infer_node, toposort

ModelLike = "str | os.PathLike[str] | bytes | onnx.ModelProto"

EXPANSIONS: dict[tuple[str, str], Expansion] = {("", op): e for family in (onnx_rnn, onnx_dft, onnx_roialign)
                                                for op, e in family.EXPANSIONS.items()}
"""ONNX operators imported as a few registered ones (``onnx_expand``), by ``(domain, name)``."""
NEWEST_OPSET = onnx.defs.onnx_opset_version()
"""The opset an expansion's nodes are imported at: they are written in the registry's current form."""


def load_model(model: Any) -> onnx.ModelProto:
    """Read a model from a path, bytes or a ModelProto. External data is read only for a path, and
    only from files inside the model's directory (``load_external``); a model given as bytes or a
    ModelProto that keeps tensors in external files is refused when such a tensor is read."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(model))
        except (DecodeError, RuntimeError, ValueError) as e:
            raise InvalidModel(f"cannot parse ONNX model bytes: {e}") from e
        return proto
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise InvalidModel(f"no such model file: {path}")
        try:
            proto = onnx.load(path, load_external_data=False)
        except (DecodeError, RuntimeError, ValueError, OSError) as e:
            raise InvalidModel(f"cannot read ONNX model {path}: {type(e).__name__}: {e}") from e
        load_external(proto, os.path.dirname(os.path.abspath(path)))
        return proto
    raise InvalidModel(f"expected a path, bytes or onnx.ModelProto, got {type(model).__name__}")


def load_external(proto: onnx.ModelProto, base_dir: str) -> None:
    """Read the external data of ``proto``'s tensors (initializers, attributes, subgraphs') from
    files inside ``base_dir``; InvalidModel naming the tensor for a location that is absolute,
    climbs out with ``..``, or resolves (through symlinks) outside ``base_dir``."""
    base = os.path.realpath(base_dir)
    for t in _tensors(proto.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = _location(t)
        target = os.path.realpath(os.path.join(base, location))
        if (not location or os.path.isabs(location) or ".." in PurePath(location).parts
                or os.path.commonpath([base, target]) != base):
            raise InvalidModel(f"tensor {t.name!r}: external data location {location!r} is not a file "
                               f"inside the model's directory {base_dir}")
        try:
            external_data_helper.load_external_data_for_tensor(t, base)
        except Exception as e:  # onnx's checks (ValidationError), a missing or short file
            raise InvalidModel(f"tensor {t.name!r}: cannot read its external data {location!r}: "
                               f"{type(e).__name__}: {e}") from e


def _location(t: onnx.TensorProto) -> str:
    return {e.key: e.value for e in t.external_data}.get("location", "")


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """The tensors of ``graph``: initializers and attribute values, subgraphs' included."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(g)


def onnx_dtype(elem_type: int, where: str) -> np.dtype:
    if elem_type == onnx.TensorProto.STRING:
        return np.dtype(object)
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError) as e:
        raise InvalidModel(f"{where}: unknown or undefined element type {elem_type}") from e


def value_type(vi: onnx.ValueInfoProto, shape_override: Sequence[int] | None) -> TensorType:
    """The static type of a graph input; symbolic dims must be given in ``input_shapes``."""
    where = f"graph input {vi.name!r}"
    kind = vi.type.WhichOneof("value")
    if kind != "tensor_type":
        raise UnsupportedOperator(f"{kind or 'untyped'} value", detail=f"{where} is not a tensor")
    tt = vi.type.tensor_type
    dtype = onnx_dtype(tt.elem_type, where)
    if shape_override is not None:
        declared = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if tt.HasField("shape") and (len(declared) != len(shape_override) or any(
                d is not None and d != o for d, o in zip(declared, shape_override))):
            raise ShapeError(f"{where}: input_shapes gives {list(shape_override)}, the model declares "
                             f"{[d if d is not None else '?' for d in declared]}")
        return TensorType(dtype, tuple(shape_override))
    if not tt.HasField("shape"):
        raise ShapeError(f"{where} has no shape; pass input_shapes={{{vi.name!r}: [...]}}")
    dims = []
    for k, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(d.dim_value)
        else:
            label = d.dim_param or "?"
            raise ShapeError(f"{where} dim {k} is symbolic ({label!r}); shapes are static: pass "
                             f"input_shapes={{{vi.name!r}: [...]}}")
    return TensorType(dtype, tuple(dims))


def attribute_value(attr: onnx.AttributeProto, where: str) -> Any:
    if attr.ref_attr_name:
        raise UnsupportedOperator("function attribute reference", detail=where)
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        raise UnsupportedOperator("control flow (graph attribute)", detail=where)
    if attr.type == onnx.AttributeProto.UNDEFINED:
        raise InvalidModel(f"{where}: attribute {attr.name!r} has no type")
    try:
        value = helper.get_attribute_value(attr)
    except Exception as e:
        raise InvalidModel(f"{where}: attribute {attr.name!r} is malformed: {e}") from e
    if isinstance(value, onnx.TensorProto):
        return tensor_value(value, where)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list):
        if value and isinstance(value[0], onnx.TensorProto):
            raise UnsupportedOperator("tensor-list attribute", detail=where)
        return tuple(v.decode(errors="replace") if isinstance(v, bytes) else v for v in value)
    if isinstance(value, (onnx.SparseTensorProto, onnx.TypeProto)):
        raise UnsupportedOperator(f"{type(value).__name__} attribute", detail=where)
    return value


def tensor_value(t: onnx.TensorProto, where: str) -> np.ndarray:
    """``t``'s value; one still in an external file (a model not given as a path) is refused: onnx
    would read it relative to the process's current directory."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        location = _location(t)
        raise InvalidModel(f"{where}: tensor {t.name!r} keeps its data in an external file "
                           f"({location!r}), read only for a model given as a path")
    try:
        return np.asarray(numpy_helper.to_array(t))
    except Exception as e:
        raise InvalidModel(f"{where}: tensor {t.name!r} cannot be read: {type(e).__name__}: {e}") from e


def import_onnx(model: Any, input_shapes: Mapping[str, Sequence[Any]] | None = None,
                bind: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Import an ONNX model as a static-shape Graph.

    ``input_shapes`` fixes symbolic input dims; ``bind`` turns graph inputs into constants
    (for inputs that decide shapes, e.g. a Reshape target fed as an input).
    """
    proto = load_model(model)
    graph, layouts = import_onnx_values(proto, input_shapes, bind)
    for name, layout in zip((o.name for o in proto.graph.output), layouts):
        if layout != name:
            raise UnsupportedOperator("sequence or optional value", detail=f"graph output {name!r} "
                                      "(returned as a list by tensoregg.frontends.onnx_backend)")
    return graph


def import_onnx_values(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None,
                       bind: Mapping[str, np.ndarray] | None = None,
                       structured: Mapping[str, Skeleton] | None = None) -> tuple[Graph, list[Layout]]:
    """``import_onnx`` for models with sequence/optional graph inputs or outputs: ``structured``
    gives each such input's skeleton (``onnx_control.flatten``; its tensors become graph inputs
    named by ``onnx_control.leaf_name``), and each graph output's layout is returned with the Graph."""
    shapes = checked_input_shapes(input_shapes)
    proto = expand_functions(load_model(model))
    return _Importer(proto, shapes, dict(bind or {}), dict(structured or {})).run()


def declared_input_dims(model: Any) -> dict[str, list[int | str]]:
    """The dims the model declares for each graph input that is not an initializer: an int, the
    ``dim_param`` name of a symbolic dim, or ``"?"`` for one with neither (an untyped or shapeless
    input gets no entry: ``import_onnx`` names it)."""
    graph = load_model(model).graph
    weights = {t.name for t in graph.initializer}
    dims: dict[str, list[int | str]] = {}
    for vi in graph.input:
        tt = vi.type.tensor_type
        if vi.name in weights or vi.type.WhichOneof("value") != "tensor_type" or not tt.HasField("shape"):
            continue
        dims[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or "?")
                         for d in tt.shape.dim]
    return dims


def checked_input_shapes(input_shapes: object) -> dict[str, tuple[int, ...]]:
    """``input_shapes`` checked: None or a mapping from input name to a sequence (not a str) of
    ints >= 0; ParameterError naming the input otherwise."""
    if input_shapes is None:
        return {}
    if not isinstance(input_shapes, Mapping):
        raise ParameterError("input_shapes must map input names to shapes, got "
                             f"{type(input_shapes).__name__}")
    shapes = {}
    for name, dims in input_shapes.items():
        if isinstance(dims, (str, bytes)) or not isinstance(dims, (Sequence, np.ndarray)):
            raise ParameterError(f"input_shapes[{name!r}] must be a sequence of dims, got "
                                 f"{type(dims).__name__} {dims!r}")
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims):
            raise ParameterError(f"input_shapes[{name!r}]: every dim must be an int >= 0, got {list(dims)!r}")
        shapes[name] = tuple(int(d) for d in dims)
    return shapes


def check_opsets(opsets: Mapping[str, int]) -> None:
    """Refuse an opset version below 1, or newer than the installed onnx defines for its domain
    (no operator of it has a known meaning): UnsupportedOperator naming the domain and version."""
    known = onnx.defs.C.schema_version_map()
    for domain, version in opsets.items():
        if version < 1:
            raise InvalidModel(f"opset_import: domain {domain or 'ai.onnx'!r} has version {version}")
        newest = known.get(domain, (1, version))[1]
        if version > newest:
            raise UnsupportedOperator(f"opset_import {domain or 'ai.onnx'}", opset=version,
                                      detail=f"newer than onnx {onnx.__version__} defines ({newest})")


class _Importer:
    def __init__(self, proto: onnx.ModelProto, input_shapes: dict, bind: dict, structured: dict) -> None:
        self.proto = proto
        self.input_shapes = input_shapes
        self.bind = bind
        self.structured = structured
        self.structs: dict[str, Struct] = {}
        """The sequence and optional values, by name (``onnx_control``)."""
        self.scopes: list[dict[str, str]] = []
        """The names of the subgraphs being inlined, innermost last: ONNX name -> imported name."""
        self.opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
        self.consts: dict[str, np.ndarray] = {}
        self.types: dict[str, TensorType] = {}
        self.bounded: set[str] = set()
        """Values typed at an upper bound of their shape (``tensoregg.ir.bounds``)."""
        self.n_fresh = 0
        self.nodes: list[Node] = []

    def fresh_const(self, value: np.ndarray) -> str:
        self.n_fresh += 1
        name = f"__const{self.n_fresh}"
        self.consts[name] = value
        self.types[name] = TensorType.of(value)
        return name

    def run(self) -> tuple[Graph, list[Layout]]:
        if not self.opsets:
            raise InvalidModel("model has no opset_import")
        check_opsets(self.opsets)
        g = self.proto.graph
        if not g.output:
            raise InvalidModel("model graph has no outputs")
        self.read_initializers(g)
        inputs = self.read_inputs(g)
        raw = [self.raw_node(n, i) for i, n in enumerate(g.node)]
        for node in self.ordered(raw, g):
            self.import_node(node)
        layouts = []
        for o in g.output:
            if o.name not in self.types and o.name not in self.structs:
                raise InvalidModel(f"graph output {o.name!r} is not defined by any node, input or "
                                   "initializer")
            self.check_declared(o)
            layouts.append(self.layout(o.name, o.name))
        outputs = [leaf for layout in layouts for leaf in _leaves(layout)]
        nodes = live_nodes(self.nodes, outputs)
        used = {n for node in nodes for n in node.inputs} | set(outputs)
        consts = {k: v for k, v in self.consts.items() if k in used and k not in inputs}
        return Graph(inputs, consts, nodes, outputs, name=g.name or "graph"), layouts

    def ordered(self, raw: list[Node], g: onnx.GraphProto) -> list[Node]:
        """``raw`` in topological order, a control node after what its subgraphs use from outside."""
        defined = self.definitions(raw)
        implicit = {k: sorted(n for s in onnx_control.subgraphs(g.node[k])
                              for n in onnx_control.outer_names(s) if n in defined)
                    for k in range(len(raw))}
        keyed = [Node(n.op, n.inputs + tuple(implicit[k]), (*n.outputs, f"\x00{k}"), {}, n.name, n.domain)
                 for k, n in enumerate(raw)]
        return [raw[int(n.outputs[-1][1:])] for n in toposort(keyed, defined)]

    def layout(self, value: str, name: str) -> Layout:
        """Graph output ``name`` (the value ``value``) flattened: a sequence's elements and an
        optional's content become tensor outputs named by ``onnx_control.leaf_name``."""
        s = self.structs.get(value)
        if s is None:
            if value == name:
                return name
            self.emit("Identity", [value], {}, Node("Identity", (value,), (name,)), name)
            return name
        if isinstance(s, Opt):
            return None if s.value is None else self.layout(s.value, leaf_name(name, "optional_type"))
        return [self.layout(v, leaf_name(name, "sequence_type", i)) for i, v in enumerate(s.items)]

    def read_initializers(self, g: onnx.GraphProto) -> None:
        if g.sparse_initializer:
            raise UnsupportedOperator("sparse initializer", detail=g.sparse_initializer[0].values.name)
        for t in g.initializer:
            if not t.name:
                raise InvalidModel("an initializer has no name")
            self.consts[t.name] = tensor_value(t, f"initializer {t.name!r}")
            self.types[t.name] = TensorType.of(self.consts[t.name])

    def read_inputs(self, g: onnx.GraphProto) -> dict[str, TensorType]:
        """Type the graph inputs; those named in ``bind`` become constants."""
        inputs: dict[str, TensorType] = {}
        for vi in g.input:
            if vi.name in self.consts:
                continue  # an initializer also listed as input (IR < 4): a weight
            if vi.name in inputs or vi.name in self.structs:
                raise InvalidModel(f"graph input {vi.name!r} is listed twice")
            if vi.name in self.structured:
                self.declare(vi.name, vi.type, self.structured[vi.name], inputs)
                continue
            bound = self.bind.get(vi.name)
            t = value_type(vi, self.input_shapes.get(vi.name, None if bound is None else np.shape(bound)))
            if bound is not None:
                self.consts[vi.name] = np.asarray(bound, dtype=t.dtype)
                self.types[vi.name] = TensorType.of(self.consts[vi.name])
            else:
                inputs[vi.name] = self.types[vi.name] = t
        unknown = (set(self.input_shapes) | set(self.bind)) - {vi.name for vi in g.input} - set(inputs)
        if unknown:
            raise InvalidModel(f"input_shapes/bind name unknown graph inputs: {sorted(unknown)}; "
                               f"inputs are {[vi.name for vi in g.input]}")
        return inputs

    def declare(self, name: str, tp: onnx.TypeProto, skeleton: Skeleton,
                inputs: dict[str, TensorType]) -> None:
        """Sequence/optional graph input ``name`` of type ``tp``, shaped as ``skeleton``: its
        tensors become graph inputs."""
        kind = tp.WhichOneof("value")
        if kind == "tensor_type":
            if not isinstance(skeleton, TensorType):
                raise InvalidModel(f"graph input {name!r}: a tensor expected, got {skeleton!r:.60}")
            inputs[name] = self.types[name] = skeleton
        elif kind == "optional_type":
            inner = leaf_name(name, kind)
            if skeleton is not None:
                self.declare(inner, tp.optional_type.elem_type, skeleton, inputs)
            self.structs[name] = Opt(None if skeleton is None else inner)
        elif kind == "sequence_type" and isinstance(skeleton, tuple):
            items = tuple(leaf_name(name, kind, i) for i in range(len(skeleton)))
            for item, s in zip(items, skeleton):
                self.declare(item, tp.sequence_type.elem_type, s, inputs)
            self.structs[name] = Seq(items)
        else:
            raise InvalidModel(f"graph input {name!r} of {kind or 'no type'}: cannot be given as "
                               f"{skeleton!r:.60}")

    def definitions(self, raw: list[Node]) -> dict[str, str]:
        """What defines each value name, failing on a name defined twice."""
        defined = {n: "graph input or initializer" for n in [*self.types, *self.structs]}
        for node in raw:
            for out in node.outputs:
                if out:
                    if out in defined:
                        raise InvalidModel(f"value {out!r} is defined twice (again by {node.op} "
                                           f"node {node.label!r})")
                    defined[out] = node.op
        return defined

    def raw_node(self, n: onnx.NodeProto, index: int) -> Node:
        label = n.name or (n.output[0] if n.output else f"#{index}")
        where = f"{n.op_type} node {label!r}"
        control = n.domain in ("", "ai.onnx") and n.op_type in onnx_control.HANDLERS
        attrs: dict[str, Any] = {}
        for a in n.attribute:
            if a.name in attrs:
                raise InvalidModel(f"{where}: attribute {a.name!r} given twice")
            if control and a.type == onnx.AttributeProto.GRAPH:
                attrs[a.name] = a.g
            elif control and a.type == onnx.AttributeProto.TYPE_PROTO:
                attrs[a.name] = a.tp
            else:
                attrs[a.name] = attribute_value(a, where)
        inputs = list(n.input)
        while inputs and not inputs[-1]:
            inputs.pop()
        return Node(n.op_type, tuple(inputs), tuple(n.output), attrs, n.name or label, n.domain)

    def emit(self, op: str, inputs: list[str], attrs: dict[str, Any], like: Node, out: str = "") -> str:
        """Import ``op`` on ``inputs`` (at the newest opset) for ``like``; its output is ``out``, or a
        fresh name."""
        self.n_fresh += 1
        name = out or f"__t{self.n_fresh}"
        self.import_node(Node(op, tuple(inputs), (name,), attrs, f"{like.label}/{op}{self.n_fresh}"),
                         NEWEST_OPSET)
        return name

    def define(self, out: str, value: str | Struct) -> None:
        """Define ``out`` as ``value``: a tensor's name (through an Identity node), a sequence's or
        an optional's name, or a new Seq/Opt."""
        if not isinstance(value, str):
            self.structs[out] = value
        elif value in self.structs:
            self.structs[out] = self.structs[value]
        else:
            self.emit("Identity", [value], {}, Node("Identity", (value,), (out,)), out)

    def resolve(self, name: str) -> str:
        """The imported name of ``name`` as the innermost subgraph being inlined sees it."""
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return name

    def inline(self, g: onnx.GraphProto, args: Sequence[str], like: Node) -> list[str]:
        """Import subgraph ``g`` of ``like`` on the values ``args`` (its inputs); its names from
        the scopes around it are resolved there. Returns the names of its outputs."""
        if len(g.input) != len(args):
            raise InvalidModel(f"{like.op} node {like.label!r}: subgraph {g.name!r} takes {len(g.input)} "
                               f"inputs, given {len(args)}")
        scope = {vi.name: a for vi, a in zip(g.input, args)}
        self.scopes.append(scope)
        try:
            for t in g.initializer:
                scope[t.name] = self.fresh_const(tensor_value(t, f"{like.op} node {like.label!r}"))
            for i, n in enumerate(g.node):
                raw = self.raw_node(n, i)
                inputs = tuple(self.defined(self.resolve(x), raw) if x else "" for x in raw.inputs)
                outputs = []
                for o in raw.outputs:
                    self.n_fresh += 1
                    outputs.append(f"{o}~{self.n_fresh}" if o else "")
                self.import_node(Node(raw.op, inputs, tuple(outputs), raw.attrs,
                                      f"{like.label}/{raw.label}", raw.domain))
                scope.update((o, new) for o, new in zip(raw.outputs, outputs) if o)
            return [self.defined(self.resolve(o.name), like) for o in g.output]
        finally:
            self.scopes.pop()

    def defined(self, name: str, user: Node) -> str:
        if name not in self.types and name not in self.structs:
            raise InvalidModel(f"{user.op} node {user.label!r} uses {name!r}, which nothing defines")
        return name

    def emitter(self, like: Node) -> Callable[[str, list[str], dict[str, Any]], str]:
        """Lets an op's ``adapt`` add helper nodes ahead of ``like`` (``Upgrade.add``)."""

        def emit(op: str, inputs: list[str], attrs: dict[str, Any]) -> str:
            self.n_fresh += 1
            out = f"__t{self.n_fresh}"
            self.import_node(Node(op, tuple(inputs), (out,), attrs, f"{like.label}/{op}{self.n_fresh}",
                                  like.domain))
            return out

        return emit

    def expand(self, node: Node, expansion: Expansion, opset: int) -> None:
        """Import ``node`` as the registered ops its expansion emits."""

        def emit(part: Node, out: str | None) -> str:
            self.n_fresh += 1
            name = out or f"__t{self.n_fresh}"
            self.import_node(Node(part.op, part.inputs, (name,), part.attrs,
                                  f"{part.name}/{part.op}{self.n_fresh}", part.domain), NEWEST_OPSET)
            return name

        expansion.expand(Expanding(node, opset, expansion, self.types, self.consts, emit, self.fresh_const))

    def import_node(self, node: Node, opset: int | None = None) -> None:
        """Upgrade (from the model's opset, or ``opset``), type and fold one node; nodes that stay
        are appended to ``self.nodes``."""
        domain = "" if node.domain == "ai.onnx" else node.domain
        opset = opset or self.opsets.get(domain)
        if opset is None:
            raise InvalidModel(f"{node.op} node {node.label!r}: domain {domain!r} is not in the "
                               f"model's opset_import")
        if domain == "" and node.op in onnx_control.HANDLERS:
            onnx_control.import_control(self, node, opset)
            return
        held = [i for i, n in enumerate(node.inputs) if n in self.structs]
        if held and node.op == "Identity" and domain == "":
            self.define(node.outputs[0], node.inputs[0])
            return
        if held:
            raise UnsupportedOperator(node.op, opset=opset, node=node.label,
                                      detail=f"input {held[0]} is a sequence or optional value")
        expansion = EXPANSIONS.get((domain, node.op))
        if expansion is not None:
            self.expand(node, expansion, opset)
            return
        opdef = get_op(node.op, domain, opset=opset, node=node.label)
        if opdef.adapt is not None:
            up = Upgrade(node.op, opset, node.label, list(node.inputs), dict(node.attrs), self.fresh_const,
                         [self.types.get(n) if n else None for n in node.inputs], list(node.outputs),
                         self.emitter(node))
            opdef.adapt(up)
            if up.op != node.op:
                opdef = get_op(up.op, domain, opset=opset, node=node.label)
            node = Node(up.op, tuple(up.inputs), node.outputs, up.attrs, node.name, node.domain)
        node = Node(node.op, node.inputs, node.outputs, opdef.check_attrs(node.attrs, node.label),
                    node.name, node.domain)
        types = infer_node(opdef, node, self.types, self.consts)
        for out, t in zip(node.outputs, types):
            if out:
                self.types[out] = t
        fold = opdef.folds_at_import and not reads_bounded(opdef, node, self.consts, self.bounded)
        args = fold_args(opdef, node, self.types, self.consts) if fold else None
        if args is None:
            self.nodes.append(node)
            return
        for out, value in zip(node.outputs, run_node(opdef, node, args, types)):
            if out:
                self.consts[out] = value

    def check_declared(self, vi: onnx.ValueInfoProto) -> None:
        if vi.type.WhichOneof("value") != "tensor_type" or vi.name in self.structs:
            return
        tt, got = vi.type.tensor_type, self.types[vi.name]
        if tt.elem_type and onnx_dtype(tt.elem_type, f"graph output {vi.name!r}") != got.dtype:
            raise InvalidModel(f"graph output {vi.name!r} is declared "
                               f"{helper.tensor_dtype_to_string(tt.elem_type)} but computes {got}")
        if tt.HasField("shape"):
            dims = tt.shape.dim
            static = [d.dim_value if d.HasField("dim_value") else None for d in dims]
            bound = vi.name in self.bounded  # typed at an upper bound: the declared shape is within it
            if len(static) != got.rank or any(s is not None and (s > g if bound else s != g)
                                              for s, g in zip(static, got.shape)):
                raise ShapeError(f"graph output {vi.name!r} is declared with shape "
                                 f"{[s if s is not None else '?' for s in static]} but computes {got}")


def _leaves(layout: Layout) -> Iterator[str]:
    if isinstance(layout, str):
        yield layout
    elif layout is not None:
        for item in layout:
            yield from _leaves(item)
