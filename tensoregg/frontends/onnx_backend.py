"""``onnx.backend.base.Backend`` adapter, so the official ONNX backend tests run against tensoregg.

Module-level ``prepare``, ``run_model``, ``run_node`` and ``supports_device``, like
``onnxruntime.backend``. Shapes in tensoregg are static, so a prepared model is compiled at its
first ``run`` for the shapes of the arrays given, and graph inputs whose *values* decide shapes
(a Reshape target or Slice bounds fed as inputs) are bound as constants; compiled modules are
cached per input signature. Sequence and optional inputs are given as lists and None/arrays, and
sequence outputs returned as lists (``onnx_control``): their tensors are the compiled module's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from tensoregg.api import compile as compile_model
from tensoregg.errors import InputError, UnsupportedOperator
from tensoregg.frontends import onnx_control
from tensoregg.frontends.onnx import EXPANSIONS, load_model
from tensoregg.ir import OPS
from tensoregg.runtime import Module


def shape_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs whose values reach an input slot that must be a compile-time constant."""
    nodes = list(onnx_control.all_nodes(model.graph))
    producer = {o: n for n in nodes for o in n.output if o}
    needed: set[str] = set()
    stack = []
    for n in nodes:
        key = ("" if n.domain == "ai.onnx" else n.domain, n.op_type)
        op = OPS.get(key) or EXPANSIONS.get(key)
        static = op.static_inputs if op is not None else onnx_control.STATIC_INPUTS.get(n.op_type, ())
        stack += [n.input[i] for i in static if i < len(n.input) and n.input[i]]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is None:
            continue
        opdef = OPS.get(("" if node.domain == "ai.onnx" else node.domain, node.op_type))
        if opdef is None or not opdef.folds_on_types:
            stack += [i for i in node.input if i]
            stack += [i for g in onnx_control.subgraphs(node) for i in onnx_control.outer_names(g)]
    inits = {t.name for t in model.graph.initializer}
    return {i.name for i in model.graph.input if i.name in needed and i.name not in inits
            and i.type.WhichOneof("value") == "tensor_type"}


_Compiled = tuple[Module, list[str], list[onnx_control.Layout]]
"""A compiled module, its flat outputs' names and the graph outputs' layouts."""


class TensoreggRep(BackendRep):
    """A prepared model: compiles per input signature on first use."""

    def __init__(self, model: onnx.ModelProto, target: str | None) -> None:
        self.model = model
        self.target = target
        inits = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in inits]
        self.structured = {vi.name: vi.type for vi in model.graph.input
                           if vi.name not in inits and vi.type.WhichOneof("value") != "tensor_type"}
        for name, tp in self.structured.items():
            kind = tp.WhichOneof("value")
            if kind not in ("sequence_type", "optional_type"):
                raise UnsupportedOperator(f"{kind or 'untyped'} value", detail=f"graph input {name!r}")
        self.bound = shape_inputs(model)
        self.cache: dict[tuple, _Compiled] = {}

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        if isinstance(inputs, Mapping):
            given = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            if len(inputs) > len(self.input_names):
                raise InputError(f"model takes {len(self.input_names)} inputs, got {len(inputs)}")
            given = dict(zip(self.input_names, inputs))
        feeds, skeletons = {}, {}
        for n, v in given.items():
            if n in self.structured:
                skeletons[n], flat = onnx_control.flatten(n, self.structured[n], v)
                feeds.update(flat)
            else:
                feeds[n] = np.asarray(v)
        bind = {n: feeds.pop(n) for n in list(feeds) if n in self.bound}
        key = (tuple((n, a.shape) for n, a in sorted(feeds.items())),
               tuple((n, a.dtype.str, a.shape, a.tobytes()) for n, a in sorted(bind.items())),
               tuple(sorted(skeletons.items())))
        if key not in self.cache:
            self.cache[key] = self.compile(feeds, bind, skeletons)
        module, names, layouts = self.cache[key]
        results = dict(zip(names, module.run(**feeds)))
        return tuple(onnx_control.unflatten(layout, results) for layout in layouts)

    def compile(self, feeds: dict[str, np.ndarray], bind: dict[str, np.ndarray],
                skeletons: dict[str, onnx_control.Skeleton]) -> _Compiled:
        from tensoregg.frontends.onnx import import_onnx_values

        graph, layouts = import_onnx_values(self.model, input_shapes={n: a.shape for n, a in feeds.items()},
                                            bind=bind, structured=skeletons)
        return compile_model(graph, target=self.target), list(graph.outputs), layouts


def prepare(model: Any, device: str = "CPU", target: str | None = None, **kwargs: Any) -> TensoreggRep:
    if not supports_device(device):
        raise UnsupportedOperator("device", detail=f"tensoregg runs on CPU, not {device!r}")
    return TensoreggRep(load_model(model), target)


def run_model(model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[np.ndarray, ...]:
    return prepare(model, device, **kwargs).run(inputs)


def run_node(node: onnx.NodeProto, inputs: Sequence[Any], device: str = "CPU",
             outputs_info: Any = None, **kwargs: Any) -> tuple[np.ndarray, ...]:
    """Run one NodeProto on arrays, as a one-node model at the current opset."""
    arrays = [np.asarray(a) for a in inputs]
    ins = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for name, a in zip(node.input, arrays) if name]
    outs = [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None) for name in node.output]
    graph = helper.make_graph([node], "run_node", ins, outs)
    domain = node.domain or ""
    opsets = [helper.make_opsetid("", onnx.defs.onnx_opset_version())]
    if domain not in ("", "ai.onnx"):
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    return run_model(model, [a for name, a in zip(node.input, arrays) if name], device, **kwargs)


def supports_device(device: str) -> bool:
    return Device(device).type == DeviceType.CPU


def is_compatible(model: Any, device: str = "CPU", **kwargs: Any) -> bool:
    return supports_device(device)


class TensoreggBackend(Backend):
    """The same entry points as a Backend class, for harnesses that want one."""

    prepare = staticmethod(prepare)  # type: ignore[assignment]
    run_model = staticmethod(run_model)  # type: ignore[assignment]
    run_node = staticmethod(run_node)  # type: ignore[assignment]
    supports_device = staticmethod(supports_device)  # type: ignore[assignment]
