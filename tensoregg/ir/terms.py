"""The egglog term language, generated from the operator registry: one constructor per op (ONNX's
and tensoregg's own fused ops).

Sorts: ``Tensor`` (a value) and ``Outputs`` (a node with several outputs; ``Outputs.get(k)`` is a
Tensor). Leaves are ``Tensor.input(name)``, ``Tensor.const(name)`` (a constant held in a side
table) and ``Tensor.none()`` (an omitted optional input). An op's constructor is named like the op
and takes its inputs in order (a variadic slot as one ``Vec[Tensor]``), then its attributes in
sorted name order: int -> i64, float -> f64, string -> String, ints/floats/strings -> Vec, tensor ->
String (a constant's name). An attribute whose default is ``None`` is wrapped in a Vec of length 0
(unset) or 1. Ops with more than one output slot return ``Outputs``.

``encode`` puts a Graph into an e-graph; ``decode`` turns one chosen node per e-class of the
serialized e-graph (see ``serialize``) back into a Graph. Importing this module imports egglog.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from egglog import EGraph, Expr, Ruleset, String, StringLike, Vec, f64, function, i64, i64Like, set_, union

from tensoregg.errors import CompileError
from tensoregg.ir.graph import Graph, Node
from tensoregg.ir.ops.fused import DOMAIN
from tensoregg.ir.registry import OPS, OpDef
from tensoregg.ir.schedules import Schedule
from tensoregg.ir.types import TensorType


class Tensor(Expr):
    """A tensor value in the e-graph."""

    @classmethod
    def input(cls, name: StringLike) -> Tensor: ...

    @classmethod
    def const(cls, name: StringLike) -> Tensor: ...

    @classmethod
    def none(cls) -> Tensor: ...


class Outputs(Expr):
    """The outputs of a node with several output slots."""

    def get(self, index: i64Like) -> Tensor: ...


@function
def value(k: i64Like) -> Tensor:
    """Handle of the ``k``-th value ``encode`` added: later terms refer to it (see ``encode``)."""


@function
def output(i: i64Like) -> Tensor:
    """Handle of graph output ``i``: names the root e-classes in the serialized e-graph."""


@function(merge=lambda old, new: old)
def shape_of(t: Tensor) -> Vec[i64]:
    """The static shape of a tensor e-class: a fact rule premises can test."""


@function(merge=lambda old, new: old)
def dtype_of(t: Tensor) -> String:
    """The dtype name (numpy's: ``float32``...) of a tensor e-class."""


SORTS: dict[str, Any] = {"int": i64, "float": f64, "string": String, "ints": Vec[i64],
                         "floats": Vec[f64], "strings": Vec[String], "tensor": String}


def _vec_of(sort: Any) -> Any:
    """``Vec[sort]`` for a sort chosen at run time."""
    return Vec[sort]  # type: ignore[valid-type]


@dataclass(frozen=True)
class Constructor:
    """An op's egglog constructor and how its arguments are laid out."""

    opdef: OpDef
    fn: Callable[..., Any]
    attrs: tuple[str, ...]
    multi: bool

    @property
    def variadic(self) -> bool:
        return bool(self.opdef.inputs) and self.opdef.inputs[-1].variadic

    def optional_attr(self, name: str) -> bool:
        return self.opdef.attrs[name].default is None


def _constructor(opdef: OpDef) -> Constructor:
    attrs = tuple(sorted(opdef.attrs))
    multi = len(opdef.outputs) > 1 or (bool(opdef.outputs) and opdef.outputs[-1].variadic)
    params = [f"in{i}" for i in range(len(opdef.inputs))] + [f"attr_{a}" for a in attrs]
    namespace: dict[str, Any] = {}
    exec(f"def {opdef.name}({', '.join(params)}): ...", namespace)
    fn = namespace[opdef.name]
    annotations: dict[str, Any] = {}
    for i, param in enumerate(opdef.inputs):
        annotations[f"in{i}"] = Vec[Tensor] if param.variadic else Tensor
    for a in attrs:
        sort = SORTS[opdef.attrs[a].kind]
        annotations[f"attr_{a}"] = _vec_of(sort) if opdef.attrs[a].default is None else sort
    annotations["return"] = Outputs if multi else Tensor
    fn.__annotations__ = annotations
    fn.__doc__ = opdef.doc
    return Constructor(opdef, function(fn), attrs, multi)


TERM_DOMAINS = ("", DOMAIN)
"""The domains whose ops have constructors: ONNX's default one and tensoregg's internal ops."""


def _constructors() -> dict[str, Constructor]:
    """One constructor per op of ``TERM_DOMAINS``, named like the op (so op names must not clash)."""
    ctors: dict[str, Constructor] = {}
    for (dom, name), opdef in OPS.items():
        if dom in TERM_DOMAINS:
            if name in ctors:
                raise ValueError(f"op {name!r} is registered in two term domains")
            ctors[name] = _constructor(opdef)
    return ctors


CONSTRUCTORS: dict[str, Constructor] = _constructors()
"""The constructor of every op in ``TERM_DOMAINS``, by op name."""


def term(op: str, *inputs: Any, **attrs: Any) -> Any:
    """``op``'s term over ``inputs`` (a variadic slot as one ``Vec[Tensor]``) with its attributes
    given by name (terms or pattern variables of their sorts); rules build terms this way, so no
    rule depends on the constructors' argument order. Every attribute must be given."""
    ctor = CONSTRUCTORS[op]
    missing, unknown = set(ctor.attrs) - set(attrs), set(attrs) - set(ctor.attrs)
    if missing or unknown:
        raise ValueError(f"{op} term: attributes {sorted(missing)} missing, {sorted(unknown)} unknown")
    return ctor.fn(*inputs, *[attrs[a] for a in ctor.attrs])


def attr_vars(op: str, prefix: str = "") -> dict[str, Any]:
    """One pattern variable per attribute of ``op``, by name, of its constructor argument's sort."""
    from egglog import var

    ctor = CONSTRUCTORS[op]
    sorts = {a: SORTS[ctor.opdef.attrs[a].kind] for a in ctor.attrs}
    return {a: var(f"{prefix or op}_{a}", _vec_of(sort) if ctor.optional_attr(a) else sort)
            for a, sort in sorts.items()}


def _literal(kind: str, value: Any, consts: dict[str, np.ndarray]) -> Any:
    if kind == "int":
        return i64(int(value))
    if kind == "float":
        return f64(float(value))
    if kind == "string":
        return String(value)
    if kind == "tensor":
        name = f"__attr{len(consts)}"
        consts[name] = value
        return String(name)
    item = {"ints": "int", "floats": "float", "strings": "string"}[kind]
    return SORTS[kind](*[_literal(item, v, consts) for v in value])


@dataclass
class Encoding:
    """A Graph in an e-graph: the root of each output and the constants behind ``Tensor.const``."""

    egraph: EGraph
    roots: list[Tensor]
    consts: dict[str, np.ndarray]
    inputs: dict[str, TensorType]
    output_names: list[str]
    terms: dict[str, Tensor] = field(default_factory=dict)


_SCRATCH: dict[str, Any] = {}
"""The main thread's scratch e-graph and the rulesets registered in it; ``forked`` once this process
is a child forked after egglog was imported."""
os.register_at_fork(after_in_child=lambda: _SCRATCH.update(forked=True))
SCRATCH_RULESETS = 64
"""Rulesets the scratch e-graph keeps registered; one more starts a new one (rule checks and
translation validation make rulesets of their own, which would otherwise pile up)."""


@contextmanager
def scratch_egraph(rulesets: Iterable[Ruleset] = ()) -> Iterator[EGraph]:
    """An empty e-graph to optimize in, with ``rulesets`` registered (egglog registers a ruleset's
    rules into an e-graph on its first run, ~0.05 s a family). The main thread reuses one: its
    rulesets are run once on the empty e-graph, then everything added inside the ``with`` is dropped
    at its end (egglog's push/pop); if the pop fails, the next use starts a new one. Other threads
    get a new e-graph each time (egglog's e-graph must be dropped on the thread that made it), and so
    does a forked child: egglog's pop drops an e-graph, which waits for egglog's thread pool, which a
    forked child does not have (``tensoregg.testing.modelfuzz`` keeps its children's e-graphs)."""
    if threading.current_thread() is not threading.main_thread() or _SCRATCH.get("forked"):
        yield EGraph()
        return
    new = {r.__egg_ident__ for r in rulesets} - _SCRATCH.get("registered", set())
    if "egraph" not in _SCRATCH or len(_SCRATCH["registered"]) + len(new) > SCRATCH_RULESETS:
        _SCRATCH.update(egraph=EGraph(), registered=set())
    egraph = _SCRATCH["egraph"]
    for ruleset in rulesets:
        if ruleset.__egg_ident__ not in _SCRATCH["registered"]:
            egraph.run(ruleset)  # nothing to match: registers the rules
            _SCRATCH["registered"].add(ruleset.__egg_ident__)
    egraph.push()
    try:
        yield egraph
    finally:
        try:
            egraph.pop()
        except Exception:  # egglog's errors have no common class; a new e-graph is safe
            _SCRATCH.pop("egraph")


def encode(graph: Graph, egraph: EGraph | None = None) -> Encoding:
    """Add ``graph`` to an e-graph; output ``i``'s class holds the handle ``output(i)``.

    Each node's term is unioned with a handle ``value(k)`` and later terms refer to that handle,
    so each action egglog receives is one constructor over handles: encoding is linear in the
    graph. Global ``let`` bindings are avoided on purpose: egglog 13.2 resolves some of them to
    another binding's value (a chain of 40 lets ``v1..v39`` read ``$v33`` as ``$v3``), which
    egglog-python's own sharing lets can also hit. Each value also gets its ``shape_of`` and
    ``dtype_of`` facts.
    """
    egraph = egraph or EGraph()
    consts = dict(graph.initializers)
    actions: list[Any] = []

    def handle(term: Any) -> Any:
        ref = value(len(actions))
        actions.append(union(ref).with_(term))
        return ref

    terms: dict[str, Any] = {n: Tensor.input(n) for n in graph.inputs}
    terms.update({n: Tensor.const(n) for n in graph.initializers})
    for node in graph.nodes:
        ctor = CONSTRUCTORS.get(node.op)
        if ctor is None or ctor.opdef.domain != ("" if node.domain == "ai.onnx" else node.domain):
            raise CompileError(f"{node.op} node {node.label!r}: no term constructor (domain {node.domain!r})")
        ins = [terms[n] if n else Tensor.none() for n in node.inputs]
        n_fixed = len(ctor.opdef.inputs) - 1 if ctor.variadic else len(ctor.opdef.inputs)
        args: list[Any] = ins[:n_fixed] + [Tensor.none()] * (n_fixed - len(ins[:n_fixed]))
        if ctor.variadic:
            args.append(Vec[Tensor](*ins[n_fixed:]))
        for a in ctor.attrs:
            kind, given = ctor.opdef.attrs[a].kind, node.attrs[a]
            if ctor.optional_attr(a):
                args.append(_vec_of(SORTS[kind])(*([] if given is None else [_literal(kind, given, consts)])))
            else:
                args.append(_literal(kind, given, consts))
        term = ctor.fn(*args)
        if ctor.multi:
            for k, out in enumerate(node.outputs):
                if out:
                    terms[out] = handle(term.get(k))
        else:
            terms[node.outputs[0]] = handle(term)
    actions += [fact for name, term in terms.items() for fact in type_facts(term, graph.types[name])]
    roots = [terms[name] for name in graph.outputs]
    actions += [union(output(i)).with_(root) for i, root in enumerate(roots)]
    egraph.register(*actions)
    return Encoding(egraph, roots, consts, dict(graph.inputs), list(graph.outputs), terms)


def type_facts(term: Tensor, t: TensorType) -> list[Any]:
    """The ``shape_of``/``dtype_of`` facts of a term of type ``t``; rules that build new
    intermediate terms add these for them (the root of a right-hand side shares its class's)."""
    return [set_(shape_of(term)).to(_shape_term(t.shape)), set_(dtype_of(term)).to(_dtype_term(t.dtype.name))]


@functools.lru_cache(maxsize=4096)
def _shape_term(shape: tuple[int, ...]) -> Vec[i64]:
    """A shape as an egglog term, built once (each egglog-python constructor call costs ~0.3 ms, and a
    model's values share a few dozen shapes)."""
    return Vec[i64](*[i64(d) for d in shape])


@functools.lru_cache(maxsize=64)
def _dtype_term(name: str) -> String:
    return String(name)


def serialize(egraph: EGraph) -> dict[str, Any]:
    """The e-graph as JSON (nodes, classes, let-bound roots); the one place that calls egglog's
    private ``_serialize``."""
    return json.loads(egraph._serialize(split_primitive_outputs=False).to_json())


def root_classes(js: Mapping[str, Any], n_outputs: int) -> list[str]:
    """The e-class of each graph output (the class holding ``output(i)``)."""
    roots = {read_literal(js, node["children"][0]): node["eclass"]
             for node in js["nodes"].values() if node["op"] == "output"}
    missing = [i for i in range(n_outputs) if i not in roots]
    if missing:
        raise CompileError(f"serialized e-graph lacks roots for outputs {missing}")
    return [roots[i] for i in range(n_outputs)]


LEAVES = ("Tensor.input", "Tensor.const", "Tensor.none")
GET = "·.get"
"""The serialized op names of the leaves and of ``Outputs.get``."""


@dataclass
class ENode:
    """One e-node of a tensor or Outputs e-class, with its arguments decoded."""

    id: str
    op: str
    eclass: str
    inputs: list[str]
    """E-classes of the tensor inputs (a variadic slot flattened; ``""`` for an omitted one)."""
    attrs: dict[str, Any] = field(default_factory=dict)
    """Operator attributes (a tensor attribute as its constant's name); ``name`` for a leaf."""
    index: int = 0
    """For ``Outputs.get``: which output."""
    schedule: Schedule | None = None
    """For a contraction e-node's schedule alternatives (``tensoregg.extraction.alternatives``): the
    schedule this alternative stands for."""


def read_literal(js: Mapping[str, Any], node_id: str) -> Any:
    """A primitive (i64, f64, String, Bool) or Vec node of the serialized e-graph as a Python value."""
    node = js["nodes"][node_id]
    op = node["op"]
    if op == "Vec":
        return tuple(read_literal(js, c) for c in node["children"])
    if op.startswith('"'):
        return json.loads(op)
    if op in ("true", "false"):
        return op == "true"
    try:
        return int(op)
    except ValueError:
        return float(op) if op.lower() not in ("nan", "-nan") else math.nan


def _parse_node(js: Mapping[str, Any], node_id: str) -> ENode:
    node = js["nodes"][node_id]
    op, kids = node["op"], node["children"]

    def eclass(kid: str) -> str:
        return "" if js["nodes"][kid]["op"] == "Tensor.none" else js["nodes"][kid]["eclass"]

    if op in LEAVES:
        return ENode(node_id, op, node["eclass"], [], {"name": read_literal(js, kids[0])} if kids else {})
    if op == GET:
        return ENode(node_id, op, node["eclass"], [eclass(kids[0])], index=read_literal(js, kids[1]))
    ctor = CONSTRUCTORS[op]
    n_in = len(ctor.opdef.inputs)
    inputs: list[str] = []
    for i, kid in enumerate(kids[:n_in]):
        if ctor.variadic and i == n_in - 1:
            inputs += [eclass(k) for k in js["nodes"][kid]["children"]]
        else:
            inputs.append(eclass(kid))
    attrs = {}
    for a, kid in zip(ctor.attrs, kids[n_in:]):
        raw = read_literal(js, kid)
        attrs[a] = (raw[0] if raw else None) if ctor.optional_attr(a) else raw
    return ENode(node_id, op, node["eclass"], inputs, attrs)


def parse(js: Mapping[str, Any]) -> dict[str, list[ENode]]:
    """The candidate e-nodes of every tensor and Outputs e-class (primitives and Vecs left out)."""
    classes: dict[str, list[ENode]] = {}
    for node_id, node in js["nodes"].items():
        op = node["op"]
        if op in LEAVES or op == GET or op in CONSTRUCTORS:
            classes.setdefault(node["eclass"], []).append(_parse_node(js, node_id))
    return classes


class _Decoder:
    """Rebuilds a Graph from one chosen e-node per e-class."""

    def __init__(self, classes: Mapping[str, list[ENode]], choice: Mapping[str, str], enc: Encoding) -> None:
        self.by_id = {n.id: n for ns in classes.values() for n in ns}
        self.choice = choice
        self.enc = enc
        self.n_outputs: dict[str, int] = {}  # Outputs e-class -> outputs referenced by any get
        for n in self.by_id.values():
            if n.op == GET:
                self.n_outputs[n.inputs[0]] = max(self.n_outputs.get(n.inputs[0], 0), n.index + 1)
        self.values: dict[str, str] = {}  # tensor e-class -> value name
        self.multi: dict[str, list[str]] = {}  # Outputs e-class -> output names
        self.nodes: list[Node] = []
        self.consts: dict[str, np.ndarray] = {}
        self.active: set[str] = set()
        self.n_values = 0

    def fresh(self) -> str:
        """A new value name, clear of the graph's input and constant names (which may be ``__v``
        names of an earlier optimization)."""
        while True:
            self.n_values += 1
            name = f"__v{self.n_values}"
            if name not in self.enc.consts and name not in self.enc.inputs:
                return name

    def node(self, cid: str) -> ENode:
        node_id = self.choice.get(cid)
        if node_id is None:
            raise CompileError(f"extraction chose no node for e-class {cid}")
        return self.by_id[node_id]

    def value(self, cid: str) -> str:
        """The value name of a tensor e-class, building its producer (and theirs) first."""
        return _trampoline(self._value(cid))

    def outputs(self, cid: str) -> list[str]:
        """The value names of a multi-output e-class, building its node first."""
        return _trampoline(self._outputs(cid))

    # The builders below are generators that yield the builder of each e-class they need and are sent
    # its result (``_trampoline``), so a program's depth is not bounded by Python's recursion limit.

    def _value(self, cid: str) -> Build[str]:
        if not cid:
            return ""
        if cid in self.values:
            return self.values[cid]
        if cid in self.active:
            raise CompileError(f"extracted program is cyclic at e-class {cid}")
        self.active.add(cid)
        node = self.node(cid)
        if node.op == "Tensor.input":
            name = node.attrs["name"]
        elif node.op == "Tensor.const":
            name = node.attrs["name"]
            self.consts[name] = self.enc.consts[name]
        elif node.op == "Tensor.none":
            name = ""
        elif node.op == GET:
            name = (yield self._outputs(node.inputs[0]))[node.index]
        else:
            name = self.fresh()
            yield self._emit(node, [name])
        self.active.discard(cid)
        self.values[cid] = name
        return name

    def _outputs(self, cid: str) -> Build[list[str]]:
        if cid not in self.multi:
            if cid in self.active:
                raise CompileError(f"extracted program is cyclic at e-class {cid}")
            self.active.add(cid)
            base = self.fresh()
            self.multi[cid] = [f"{base}_{k}" for k in range(self.n_outputs.get(cid, 1))]
            yield self._emit(self.node(cid), self.multi[cid])
            self.active.discard(cid)
        return self.multi[cid]

    def _emit(self, node: ENode, outputs: list[str]) -> Build[None]:
        ctor = CONSTRUCTORS[node.op]
        inputs = []
        for c in node.inputs:
            inputs.append((yield self._value(c)))
        while inputs and not inputs[-1]:
            inputs.pop()
        attrs = {a: (self.enc.consts[v] if ctor.opdef.attrs[a].kind == "tensor" and v else v)
                 for a, v in node.attrs.items()}
        self.nodes.append(Node(node.op, tuple(inputs), tuple(outputs), attrs, outputs[0], ctor.opdef.domain,
                               node.schedule))


T = TypeVar("T")
Build = Generator[Any, Any, T]
"""A decoder step: yields the steps whose results it needs, is sent each result, returns its own."""


def _trampoline(step: Build[T]) -> T:
    """Run ``step`` and the steps it yields with an explicit stack (depth-first, in order)."""
    stack: list[Build[Any]] = [step]
    result: Any = None
    while True:
        try:
            stack.append(stack[-1].send(result))
            result = None
        except StopIteration as done:
            stack.pop()
            result = done.value
            if not stack:
                return result


def first_choice(js: Mapping[str, Any]) -> dict[str, str]:
    """The first e-node of every tensor e-class: the program as encoded, before any rewrite."""
    return {cid: nodes[0].id for cid, nodes in parse(js).items()}


def decode(js: Mapping[str, Any], choice: Mapping[str, str], enc: Encoding,
           classes: Mapping[str, list[ENode]] | None = None,
           names: dict[str, str] | None = None) -> Graph:
    """Rebuild a Graph from ``choice`` (e-class id -> chosen e-node id) over serialized ``js``;
    ``classes`` is ``parse(js)`` when the caller already has it. ``names``, if given, receives the
    value name each decoded tensor e-class became."""
    dec = _Decoder(parse(js) if classes is None else classes, choice, enc)
    outputs: list[str] = []
    for name, cid in zip(enc.output_names, root_classes(js, len(enc.output_names))):
        value = dec.value(cid)
        if value != name and name not in outputs:  # a repeated output name is already produced
            if value in enc.inputs or value in dec.consts or value in outputs:
                dec.nodes.append(Node("Identity", (value,), (name,), {}, name))
            else:
                _rename(dec.nodes, value, name)
                dec.values = {c: (name if v == value else v) for c, v in dec.values.items()}
        outputs.append(name)
    if names is not None:
        names.update(dec.values)
    return Graph(enc.inputs, dec.consts, dec.nodes, outputs)


def _rename(nodes: list[Node], old: str, new: str) -> None:
    """Give the producer of ``old`` the graph output name ``new`` (and its users)."""
    for k, node in enumerate(nodes):
        if old in node.inputs or old in node.outputs:
            nodes[k] = Node(node.op, tuple(new if n == old else n for n in node.inputs),
                            tuple(new if n == old else n for n in node.outputs), node.attrs,
                            new if node.name == old else node.name, node.domain, node.schedule)
