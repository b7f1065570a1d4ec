"""PyTorch frontend: an ``nn.Module`` with example inputs, or a ``torch.export.ExportedProgram``, ->
a typed, static-shape ``ir.Graph``, read from the core ATen graph (no ONNX detour).

The module is exported with ``torch.export`` and its default decompositions (the core ATen op set);
each ATen node becomes IR nodes through the table in ``tensoregg.frontends.aten``. Parameters,
buffers and lifted constants become initializers named as in the ``state_dict``; graph inputs keep
the names of ``forward``'s arguments. Nodes over constants (a transposed weight) fold at import.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from tensoregg.errors import InvalidModel, ShapeError, UnsupportedOperator
from tensoregg.frontends.aten import ATEN
from tensoregg.ir import Graph, Node, TensorType, get_op, run_node
from tensoregg.ir.bounds import reads_bounded
from tensoregg.ir.dtypes import code_of
from tensoregg.ir.fold import fold_args, live_nodes
from tensoregg.ir.graph import infer_node

_DTYPES: dict[torch.dtype, np.dtype] = {
    torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
    torch.float16: np.dtype(np.float16), torch.bfloat16: np.dtype(ml_dtypes.bfloat16),
    torch.int8: np.dtype(np.int8), torch.int16: np.dtype(np.int16), torch.int32: np.dtype(np.int32),
    torch.int64: np.dtype(np.int64), torch.uint8: np.dtype(np.uint8), torch.bool: np.dtype(np.bool_),
}
"""torch dtype -> numpy dtype, for the dtypes the IR computes in."""


def numpy_dtype(dtype: torch.dtype, where: str) -> np.dtype:
    """The numpy dtype of a torch dtype; UnsupportedOperator naming ``where`` for one the IR lacks."""
    if dtype not in _DTYPES:
        raise UnsupportedOperator(f"dtype {dtype}", detail=where)
    return _DTYPES[dtype]


def from_numpy(a: np.ndarray) -> torch.Tensor:
    """An array as a tensor sharing its memory (bfloat16 through its bits)."""
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as a numpy array of the matching dtype (a copy; bfloat16 through its bits)."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def export(model: torch.nn.Module, example_inputs: Sequence[Any]) -> ExportedProgram:
    """``model`` exported with ``torch.export`` at the example inputs' shapes, then decomposed to the
    core ATen op set. Export failures (data-dependent control flow...) raise InvalidModel."""
    if not isinstance(example_inputs, (tuple, list)):
        raise InvalidModel(f"example_inputs must be a tuple of tensors, got {type(example_inputs).__name__}")
    try:
        with torch.no_grad():
            program = torch.export.export(model, tuple(example_inputs))
            return program.run_decompositions()
    except Exception as e:  # torch raises many kinds (UserError, Unsupported, RuntimeError...)
        raise InvalidModel(f"torch.export failed on {type(model).__name__}: {type(e).__name__}: {e}") from e


def import_torch(model: torch.nn.Module | ExportedProgram,
                 example_inputs: Sequence[Any] | None = None) -> Graph:
    """An ``nn.Module`` (exported at ``example_inputs``) or an ExportedProgram as a Graph."""
    if isinstance(model, ExportedProgram):
        return import_exported(model.run_decompositions())
    if example_inputs is None:
        raise InvalidModel(f"compiling a torch {type(model).__name__} needs example_inputs=(tensor, ...)")
    return import_exported(export(model, example_inputs))


def import_exported(program: ExportedProgram, bind: Mapping[str, torch.Tensor] | None = None) -> Graph:
    """The ATen graph of a decomposed ExportedProgram as a Graph; the inputs named in ``bind``
    become constants of those values (weights a torch.compile graph takes as inputs)."""
    return _Importer(program, dict(bind or {})).run()


def source_line(node: torch.fx.Node) -> str:
    """Where in the model's Python source ``node`` came from (its innermost recorded frame)."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)', node.meta.get("stack_trace") or "")
    if not frames:
        return "no source line recorded"
    path, line, function, code = frames[-1]
    return f"{path}:{line} in {function}: {code.strip()}"


SHAPE_CHECKS = {"aten._assert_scalar.default", "aten.sym_constrain_range_for_size.default"}
"""Export's run-time assertions on sizes: skipped, as the sizes they check are data-dependent outputs."""


class _Importer:
    """Walks the fx graph in order; ``aten.ATEN``'s converters add nodes through it (``aten.Builder``)."""

    def __init__(self, program: ExportedProgram, bind: dict[str, torch.Tensor]) -> None:
        self.program = program
        self.bind = bind
        self.values: dict[torch.fx.Node, Any] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.types: dict[str, TensorType] = {}
        self.bounded: set[str] = set()
        """Values typed at an upper bound of their shape (``tensoregg.ir.bounds``)."""
        self.inputs: dict[str, TensorType] = {}
        self.nodes: list[Node] = []
        self.taken: set[str] = set()
        self.current: torch.fx.Node | None = None
        self.out_shape: tuple[int, ...] = ()
        self.out_dtype = np.dtype(np.float32)

    def run(self) -> Graph:
        signature = self.program.graph_signature
        mutated = [spec.target for spec in signature.output_specs if spec.kind != OutputKind.USER_OUTPUT]
        if mutated:
            raise UnsupportedOperator("state mutation", detail=f"the model writes {mutated[:4]} (a module in "
                                      "training mode? call .eval() first)")
        specs = {spec.arg.name: spec for spec in signature.input_specs}
        outputs: list[str] = []
        for node in self.program.graph.nodes:
            self.current = node
            if node.op == "placeholder":
                self.values[node] = self.placeholder(node, specs[node.name])
            elif node.op == "call_function":
                self.values[node] = self.call(node)
            elif node.op == "output":
                outputs = self.outputs(node)
        nodes = live_nodes(self.nodes, outputs)
        used = {n for node in nodes for n in node.inputs} | set(outputs)
        consts = {k: v for k, v in self.consts.items() if k in used}
        return Graph(self.inputs, consts, nodes, outputs, name=type(self.program.graph_module).__name__)

    def placeholder(self, node: torch.fx.Node, spec: Any) -> str:
        if spec.kind == InputKind.USER_INPUT and node.name in self.bind:
            return self.const(to_numpy(self.bind[node.name]), name=node.name)
        if spec.kind == InputKind.USER_INPUT:
            val = node.meta.get("val")
            if not isinstance(val, torch.Tensor):
                raise UnsupportedOperator(f"non-tensor input {type(val).__name__}",
                                          detail=f"input {node.name!r} (export specializes Python values)")
            shape = tuple(val.shape)
            if not all(isinstance(d, int) for d in shape):
                raise ShapeError(f"input {node.name!r} has symbolic dims {list(shape)}; shapes are "
                                 "static: export without dynamic_shapes")
            name = self.fresh(node.name)
            dtype = numpy_dtype(val.dtype, f"input {name!r}")
            self.inputs[name] = self.types[name] = TensorType(dtype, shape)
            return name
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            tensor = self.program.state_dict.get(spec.target)
            if tensor is None:
                tensor = self.program.constants[spec.target]
            numpy_dtype(tensor.dtype, f"{spec.kind.name.lower()} {spec.target!r}")
            return self.const(to_numpy(tensor), name=spec.target)
        raise UnsupportedOperator(f"{spec.kind.name} input", node=node.name, detail="inference graphs only")

    def outputs(self, node: torch.fx.Node) -> list[str]:
        names = []
        results: Any = node.args[0]
        for arg in results:
            if not isinstance(arg, torch.fx.Node):
                raise UnsupportedOperator(f"{type(arg).__name__} output", detail="outputs must be tensors")
            names.append(self.value_of(arg))
        return names

    def call(self, node: torch.fx.Node) -> Any:
        if node.target is operator.getitem:
            source, index = node.args
            assert isinstance(source, torch.fx.Node) and isinstance(index, int)
            results = self.values[source]
            value = results[index] if isinstance(results, tuple) else None
            if value is None:
                self.unsupported(f"output {index} of {source.target}")
            return value
        if str(node.target) in SHAPE_CHECKS or isinstance(node.meta.get("val"), torch.SymInt | torch.SymBool):
            return None  # export's checks of a data-dependent size (NonMaxSuppression's count), run anyway
        convert = ATEN.get(str(node.target))
        if convert is None:
            raise UnsupportedOperator(str(node.target), node=node.name, detail=f"at {source_line(node)}")
        val = node.meta.get("val")
        if isinstance(val, (tuple, list)) and val:
            val = val[0]  # an op with several results: its first one's shape and dtype
        if isinstance(val, torch.Tensor):  # a data-dependent size (after NMS) as -1: Reshape infers it
            self.out_shape = tuple(-1 if isinstance(d, torch.SymInt) else int(d) for d in val.shape)
            self.out_dtype = numpy_dtype(val.dtype, f"{node.target} node {node.name!r}")
        return convert(self, *node.args, **node.kwargs)

    def value_of(self, arg: torch.fx.Node) -> str:
        value = self.values[arg]
        if not isinstance(value, str):
            raise UnsupportedOperator(str(arg.target), node=arg.name, detail="a tuple used as one tensor")
        return value

    # the aten.Builder protocol

    def tensor(self, x: Any) -> str:
        if not isinstance(x, torch.fx.Node):
            self.unsupported(f"expected a tensor argument, got {type(x).__name__} {x!r:.40}")
        return self.value_of(x)

    def dtype(self, x: Any) -> np.dtype:
        """The dtype of a tensor argument, or of an IR value by name."""
        return self.types[x if isinstance(x, str) else self.tensor(x)].dtype

    def shape(self, x: Any) -> tuple[int, ...]:
        """The shape of a tensor argument, or of an IR value by name."""
        return self.types[x if isinstance(x, str) else self.tensor(x)].shape

    def operand(self, x: Any, dtype: np.dtype) -> str:
        """A tensor or Python scalar argument as a value of ``dtype`` (cast when it differs)."""
        if not isinstance(x, torch.fx.Node):
            return self.const(x, dtype)
        name = self.tensor(x)
        if self.types[name].dtype == dtype:
            return name
        return self.emit("Cast", [name], to=code_of(dtype))

    def promoted(self, x: Any, y: Any) -> np.dtype:
        """The dtype torch computes ``x op y`` in (tensor arguments or Python scalars)."""
        a, c = (v.meta["val"] if isinstance(v, torch.fx.Node) else v for v in (x, y))
        if not isinstance(a, torch.Tensor):
            a, c = c, a
        return numpy_dtype(torch.result_type(a, c), f"{self.current and self.current.target}")

    def const(self, value: Any, dtype: Any = None, name: str | None = None) -> str:
        array = np.asarray(value, dtype=dtype)
        name = self.fresh(name or "const")
        self.consts[name] = array
        self.types[name] = TensorType.of(array)
        return name

    def emit(self, op: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> Any:
        """Add an IR node (folded to constants when its inputs are); its output name(s)."""
        assert self.current is not None
        label = self.current.name
        outs = tuple(self.fresh(label) for _ in range(outputs))
        opdef = get_op(op, node=label)
        node = Node(op, tuple(inputs), outs, opdef.check_attrs(attrs, label), label)
        types = infer_node(opdef, node, self.types, self.consts)
        self.types.update(zip(outs, types))
        args = None if reads_bounded(opdef, node, self.consts, self.bounded) else \
            fold_args(opdef, node, self.types, self.consts)
        if args is None:
            self.nodes.append(node)
        else:
            self.consts.update(zip(outs, run_node(opdef, node, args, types)))
        return outs[0] if outputs == 1 else outs

    def unsupported(self, detail: str) -> Any:
        node = self.current
        assert node is not None
        raise UnsupportedOperator(str(node.target), node=node.name,
                                  detail=f"{detail}, at {source_line(node)}")

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}.{k}"
        self.taken.add(name)
        return name
