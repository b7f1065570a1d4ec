"""Verification helpers: hypothesis strategies for shapes and tensors, and single-op checks.

``check_op`` runs one ONNX operator through tensoregg's importer and reference interpreter and
compares it with ``onnx.reference.ReferenceEvaluator``; the op tests and users' own checks use it.
Needs the ``test`` extra (hypothesis, onnx reference).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import helper

from tensoregg.frontends.onnx import import_onnx
from tensoregg.ir import run_graph
from tensoregg.ir.equivalence import tolerance
from tensoregg.strategies import arrays, broadcastable_shapes, shapes


def assert_same(got: np.ndarray, want: np.ndarray, where: str, rtol: float | None = None,
                atol: float | None = None) -> None:
    """Equal dtype and shape, values within ``tolerance`` (NaN equals NaN)."""
    assert got.shape == want.shape, f"{where}: shape {got.shape} != expected {want.shape}"
    assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != expected {want.dtype}"
    rt, at = tolerance(want.dtype)
    rt, at = (rt if rtol is None else rtol), (at if atol is None else atol)
    if want.dtype.kind == "V":  # ml_dtypes: compare as float32 (floats) or int32 (int4/int2)
        wide = np.float32 if want.dtype.name.startswith(("bfloat", "float")) else np.int32
        got, want = got.astype(wide), want.astype(wide)
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=rt, atol=at, equal_nan=True, err_msg=where)
    else:
        np.testing.assert_array_equal(got, want, err_msg=where)


def assert_identical(got: np.ndarray, want: np.ndarray, where: str) -> None:
    """Equal dtype, shape and values in IEEE terms: floats bit for bit (so -0 != +0 and inf != -inf),
    except that any NaN equals any NaN (payloads and signs of NaNs are not compared)."""
    assert got.shape == want.shape, f"{where}: shape {got.shape} != expected {want.shape}"
    assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != expected {want.dtype}"
    if want.dtype.kind == "f" or (want.dtype.kind == "V" and want.dtype.name.startswith(("bfloat", "float"))):
        nan_got, nan_want = np.isnan(got.astype(np.float64)), np.isnan(want.astype(np.float64))
        bits = np.dtype(f"u{want.dtype.itemsize}")
        same = (got.view(bits) == want.view(bits)) | (nan_got & nan_want)
    else:
        same = (got == want) if want.dtype.kind != "V" else (got.view(np.uint8) == want.view(np.uint8))
    if not np.all(same):
        k = tuple(int(i) for i in np.argwhere(~np.asarray(same))[0])
        raise AssertionError(f"{where}: at {k} got {got[k]!r}, expected {want[k]!r} (IEEE-exact comparison, "
                             f"{int(np.size(same) - np.count_nonzero(same))} of {np.size(same)} differ)")


def single_op_model(op: str, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any] | None = None,
                    *, n_outputs: int = 1, constant: Sequence[int] = (), opset: int | None = None,
                    domain: str = "") -> onnx.ModelProto:
    """A one-node model: input ``i`` is a graph input, or an initializer if ``i`` is in ``constant``;
    ``None`` leaves an optional input out."""
    names, graph_inputs, inits = [], [], []
    for i, a in enumerate(inputs):
        if a is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        if i in constant:
            inits.append(onnx.numpy_helper.from_array(np.asarray(a), name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype), np.shape(a)))
    outs = [f"out{k}" for k in range(n_outputs)]
    node = helper.make_node(op, names, outs, domain=domain or None, **dict(attrs or {}))
    out_infos = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs]
    graph = helper.make_graph([node], op.lower(), graph_inputs, out_infos, inits)
    opsets = [helper.make_opsetid("", opset or onnx.defs.onnx_opset_version())]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = min(model.ir_version, 10)
    return model


def check_op(op: str, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any] | None = None, *,
             n_outputs: int = 1, constant: Sequence[int] = (), opset: int | None = None,
             domain: str = "", rtol: float | None = None, atol: float | None = None,
             expected: Sequence[np.ndarray] | None = None, native: bool = True) -> list[np.ndarray]:
    """Run one operator through tensoregg and compare with ``expected`` or onnx's ReferenceEvaluator.

    Outputs must agree in count, dtype and shape exactly and in value within a dtype-aware
    tolerance (NaN equals NaN). With ``native``, the llvm target's code (with guard regions) must
    also agree with the reference interpreter, where every node has a lowering (see
    ``check_native``). Returns the reference interpreter's outputs.
    """
    model = single_op_model(op, inputs, attrs, n_outputs=n_outputs, constant=constant, opset=opset,
                            domain=domain)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if a is not None and i not in constant}
    graph = import_onnx(model)
    ours = run_graph(graph, feeds)
    if native:
        check_native(graph, feeds, ours, rtol=rtol, atol=atol)
    if expected is None:
        from onnx.reference import ReferenceEvaluator

        expected = [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]
    assert len(ours) == len(expected), f"{op}: {len(ours)} outputs, expected {len(expected)}"
    for k, (got, want) in enumerate(zip(ours, expected)):
        assert_same(got, np.asarray(want), f"{op} output {k}", rtol, atol)
    return ours


def check_native(graph: Any, feeds: Mapping[str, np.ndarray], expected: Sequence[np.ndarray] | None = None,
                 *, rtol: float | None = None, atol: float | None = None, require: bool = False) -> bool:
    """Compile ``graph`` for the llvm target in guard mode (every buffer between poisoned guard
    regions, checked after each kernel), run it on ``feeds`` and compare with ``expected`` (default:
    the reference interpreter's outputs) within the dtype's tolerance. A graph with an op or dtype
    that has no lowering is skipped (returns False) unless ``require``."""
    from tensoregg.errors import UnsupportedOperator
    from tensoregg.targets.llvm import NativeModel

    try:
        model = NativeModel(graph, guard=GUARD_BYTES)
    except UnsupportedOperator:
        if require:
            raise
        return False
    want = run_graph(graph, dict(feeds)) if expected is None else expected
    got = model.run(feeds)
    assert len(got) == len(want), f"native: {len(got)} outputs, expected {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        rt, at = tolerance(np.asarray(w).dtype)
        assert_same(g, np.asarray(w), f"native output {k}", max(rt, rtol or 0) * NATIVE_SLACK,
                    max(at, atol or 0) * NATIVE_SLACK)
    return True


def in_child(check: Callable[[], object], what: str) -> None:
    """Run ``check`` in a forked child process: an exception there fails here with its message, and
    a crash (generated code that faults) fails naming the signal instead of killing this process.
    The child builds what it runs: threads the parent started (a thread team) do not exist there."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        os.close(read)
        status = 0
        try:
            check()
        except BaseException as exc:  # everything must reach the parent
            os.write(write, f"{type(exc).__name__}: {exc}".encode()[:1 << 16])
            status = 1
        os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:  # read before waiting: a full pipe would block the child
        message = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise AssertionError(f"{what}: the process died of {signal.Signals(os.WTERMSIG(status)).name}")
    if os.waitstatus_to_exitcode(status) != 0:
        raise AssertionError(f"{what}: {message}")


GUARD_BYTES = 64
NATIVE_SLACK = 4
"""Native code may round differently from numpy (sums in another order, libm vs numpy's math):
its tolerance is this many times the dtype's."""


UNARY_OPS = ("Relu", "Neg", "Abs", "Sigmoid", "Tanh", "Exp", "LeakyRelu", "HardSigmoid", "Erf")
BINARY_OPS = ("Add", "Sub", "Mul", "Max", "Min")
REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax")


@st.composite
def graphs(draw: Any, max_nodes: int = 6) -> tuple[Any, dict[str, np.ndarray]]:
    """Random well-typed float32 graphs with their inputs: element-wise chains with broadcasting,
    MatMul/Gemm/Conv followed by epilogue-like bias adds and activations (what fusion rewrites),
    reductions, Softmax, and shape ops (Transpose, Flatten, Reshape). Values stay small."""
    from tensoregg.ir import Graph, Node, TensorType

    f32 = np.dtype(np.float32)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    shape = draw(shapes(2, 4, max_side=6))
    feeds = {"x": draw(arrays(np.float32, shape, low=-2, high=2))}
    values: dict[str, tuple[int, ...]] = {"x": shape}
    consts: dict[str, np.ndarray] = {}
    nodes: list[Node] = []

    def const(s: tuple[int, ...]) -> str:
        name = f"c{len(consts)}"
        fan_in = max(1, int(np.prod(s[1:] or (1,))))
        consts[name] = (rng.standard_normal(s) / fan_in ** 0.5).astype(np.float32)
        return name

    def add(op: str, inputs: Sequence[str], out_shape: tuple[int, ...], **attrs: Any) -> None:
        name = f"v{len(nodes)}"
        nodes.append(Node(op, tuple(inputs), (name,), attrs))
        values[name] = out_shape

    for _ in range(draw(st.integers(1, max_nodes))):
        src = draw(st.sampled_from(sorted(values)))
        s = values[src]
        kinds = ["unary", "binary", "linear", "reduce", "shape", "softmax"] if s else ["unary", "binary"]
        kind = draw(st.sampled_from(kinds))
        if kind == "unary":
            add(draw(st.sampled_from(UNARY_OPS)), [src], s)
        elif kind == "binary":
            others = [v for v, t in values.items() if t == s and v != src]
            other = draw(st.sampled_from(others)) if others and draw(st.booleans()) else \
                const(draw(broadcastable_shapes(s)))
            add(draw(st.sampled_from(BINARY_OPS)), [src, other], s)
        elif kind == "linear" and len(s) == 4 and min(s[2:]) >= 3:
            k, m = draw(st.sampled_from([1, 3])), draw(st.integers(1, 6))
            pad = draw(st.integers(0, k // 2))
            out: tuple[int, ...] = (s[0], m, s[2] - k + 1 + 2 * pad, s[3] - k + 1 + 2 * pad)
            add("Conv", [src, const((m, s[1], k, k)), const((m,))], out, pads=(pad,) * 4)
        elif kind == "linear":
            n = draw(st.integers(1, 7))
            add("MatMul", [src, const((s[-1], n))], (*s[:-1], n))
            if draw(st.booleans()):
                add("Add", [f"v{len(nodes) - 1}", const((n,))], (*s[:-1], n))
        elif kind == "reduce":
            axes = sorted(draw(st.sets(st.integers(0, len(s) - 1), min_size=1, max_size=len(s))))
            keep = draw(st.sampled_from([0, 1]))
            out = tuple(1 if a in axes else d for a, d in enumerate(s) if keep or a not in axes)
            consts[f"axes{len(nodes)}"] = np.array(axes, np.int64)
            add(draw(st.sampled_from(REDUCE_OPS)), [src, f"axes{len(nodes)}"], out, keepdims=keep)
        elif kind == "shape":
            perm = tuple(draw(st.permutations(list(range(len(s))))))
            choice = draw(st.sampled_from(["Transpose", "Flatten", "Reshape"]))
            if choice == "Transpose":
                add("Transpose", [src], tuple(s[p] for p in perm), perm=perm)
            elif choice == "Flatten":
                axis = draw(st.integers(0, len(s)))
                add("Flatten", [src], (int(np.prod(s[:axis])), int(np.prod(s[axis:]))), axis=axis)
            else:
                consts[f"shape{len(nodes)}"] = np.array([-1, s[-1]], np.int64)
                add("Reshape", [src, f"shape{len(nodes)}"], (int(np.prod(s[:-1])), s[-1]))
        else:
            add("Softmax", [src], s, axis=draw(st.integers(-len(s), len(s) - 1)))
    outputs = [f"v{len(nodes) - 1}"] if nodes else ["x"]
    graph = Graph({"x": TensorType(f32, shape)}, consts, nodes, outputs)
    return graph, feeds



OpCase = tuple[str, list[Any], dict[str, Any], tuple[int, ...]]


def one_op_cases() -> list[OpCase]:
    """One-op models of every compute family (op, inputs, attributes, which inputs are constants),
    seeded: what a target's code generator is first checked on, against the reference interpreter."""
    from onnx import TensorProto
    R = np.random.default_rng(0)  # noqa: N806
    I64 = np.int64  # noqa: N806

    def f(*shape: int) -> np.ndarray:
        return R.standard_normal(shape).astype(np.float32)

    def ints(dtype: Any, *shape: int, low: int = -100, high: int = 100) -> np.ndarray:
        return R.integers(low, high, shape).astype(dtype)

    def x4(c: int = 4) -> np.ndarray:
        return f(2, c, 7, 6)

    return [
        # element-wise, broadcasting, integers
        ("Add", [f(2, 3, 4), f(3, 1)], {}, ()),
        ("Div", [ints(np.int32, 24),
                 ints(np.int32, 24, low=1, high=9) * R.choice([-1, 1], 24).astype(np.int32)], {}, ()),
        ("Mod", [ints(np.int16, 24), ints(np.int16, 24, low=1, high=9) * np.int16(-1)], {"fmod": 0}, ()),
        ("Mod", [f(24), f(24)], {"fmod": 1}, ()),
        ("BitShift", [ints(np.uint8, 16, low=0, high=255), ints(np.uint8, 16, low=0, high=8)],
         {"direction": "LEFT"}, ()),
        ("Where", [R.random((3, 4)) > 0.5, f(3, 4), f(4)], {}, ()),
        ("Pow", [np.abs(f(10)) + 0.1, f(10)], {}, ()),
        ("Clip", [f(12), np.float32(-0.5), np.float32(0.5)], {}, (1, 2)),
        ("Max", [f(3, 4), f(4), f(3, 1)], {}, ()),
        # activations
        ("Sigmoid", [f(20) * 10], {}, ()),
        ("Gelu", [f(20)], {}, ()),
        ("Erf", [f(20)], {}, ()),
        ("HardSwish", [f(20) * 4], {}, ()),
        ("Elu", [f(20)], {"alpha": 0.7}, ()),
        ("Softmax", [f(3, 5, 6)], {"axis": 1}, ()),
        ("LogSoftmax", [f(4, 9)], {}, ()),
        # casts and quantization
        ("Cast", [f(30) * 300], {"to": TensorProto.INT8}, ()),
        ("Cast", [f(30) * 300], {"to": TensorProto.UINT16}, ()),
        ("Cast", [f(30)], {"to": TensorProto.BFLOAT16}, ()),
        ("Cast", [f(30) * 100], {"to": TensorProto.FLOAT8E4M3FN}, ()),
        ("Cast", [ints(np.int32, 30)], {"to": TensorProto.FLOAT16}, ()),
        ("QuantizeLinear", [f(2, 3, 4) * 50, np.float32(0.3), np.uint8(128)], {}, (1, 2)),
        ("DequantizeLinear", [ints(np.int8, 2, 3), np.array([0.5, 2.0, 0.1], np.float32),
                              np.array([1, -2, 3], np.int8)], {"axis": 1}, (1, 2)),
        # convolutions
        ("Conv", [x4(), f(6, 2, 3, 3), f(6)], {"pads": [1, 0, 1, 2], "strides": [2, 1], "group": 2}, (1, 2)),
        ("Conv", [x4(), f(4, 1, 3, 3)], {"dilations": [2, 1], "group": 4}, (1,)),
        ("ConvTranspose", [x4(), f(4, 3, 3, 2)], {"strides": [2, 2], "pads": [1, 0, 0, 1]}, (1,)),
        # contractions
        ("MatMul", [f(2, 3, 4), f(4, 5)], {}, ()),
        ("Gemm", [f(3, 4), f(5, 4), f(5)], {"transB": 1, "alpha": 0.5}, (1, 2)),
        ("Einsum", [f(2, 3, 4), f(2, 4, 5)], {"equation": "bij,bjk->bik"}, ()),
        # indexing
        ("Gather", [f(5, 4), np.array([[4, 0], [-1, 2]], I64)], {"axis": 0}, ()),
        ("GatherElements", [f(3, 4), ints(I64, 3, 4, low=-4, high=4)], {"axis": 1}, ()),
        ("ScatterElements", [f(4, 3), np.array([[1, 0, 2], [3, 1, 0]], I64), f(2, 3)], {"axis": 0}, ()),
        ("ScatterND", [f(4, 3), np.array([[2], [0]], I64), f(2, 3)], {}, ()),
        ("Slice", [f(6, 8), np.array([1, -1], I64), np.array([5, 0], I64), np.array([0, 1], I64),
                   np.array([2, -3], I64)], {}, (1, 2, 3, 4)),
        # normalization, pooling, reductions
        ("BatchNormalization", [x4(), f(4), f(4), f(4), np.abs(f(4)) + 0.5], {}, (1, 2, 3, 4)),
        ("LayerNormalization", [f(3, 4, 8), f(8), f(8)], {"axis": -1}, (1, 2)),
        ("InstanceNormalization", [x4(), f(4), f(4)], {}, (1, 2)),
        ("LRN", [x4(5)], {"size": 3}, ()),
        ("MaxPool", [x4()], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, ()),
        ("AveragePool", [x4()], {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1], "count_include_pad": 0}, ()),
        ("GlobalAveragePool", [x4()], {}, ()),
        ("ReduceSum", [f(3, 4, 5), np.array([0, 2], I64)], {"keepdims": 0}, (1,)),
        ("ReduceMax", [f(3, 4, 5), np.array([1], I64)], {}, (1,)),
        ("ReduceLogSumExp", [f(3, 4, 5), np.array([-1], I64)], {}, (1,)),
        ("ArgMax", [f(3, 7)], {"axis": 1}, ()),
        ("CumSum", [f(4, 6), np.array(1, I64)], {"reverse": 1}, (1,)),
        ("SoftmaxCrossEntropyLoss", [f(3, 5), np.array([1, 4, 0], I64)], {}, ()),
        # sampling and layout
        ("Resize", [x4(), np.array([], np.float32), np.array([1, 1, 1.5, 2], np.float32)], {"mode": "linear"},
         (1, 2)),
        ("Transpose", [f(2, 3, 4)], {"perm": [2, 0, 1]}, ()),
        ("Concat", [f(2, 3), f(4, 3), f(1, 3)], {"axis": 0}, ()),
        ("Split", [f(6, 4), np.array([2, 4], I64)], {"axis": 0}, (1,)),
        ("Pad", [f(3, 4), np.array([1, 0, 0, 2], I64)], {"mode": "reflect"}, (1,)),
        ("Tile", [f(2, 3), np.array([2, 3], I64)], {}, (1,)),
        ("Expand", [f(3, 1), np.array([2, 3, 4], I64)], {}, (1,)),
        ("DepthToSpace", [f(1, 8, 2, 3)], {"blocksize": 2}, ()),
        ("TopK", [f(3, 9), np.array([4], I64)], {"axis": 1}, (1,)),
    ]

LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                "squeezenet", "vgg19", "zfnet512")


def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """A light zoo architecture shipped in the onnx wheel, with seeded random weights.

    The wheel's copies hold every weight as a ConstantOfShape of 0.02 (and some parameters as graph
    inputs); both become seeded initializers: He-scaled weights, positive variances, small biases,
    so activations stay of order one through the whole network. Only the first input remains.
    """
    import os

    import onnx.backend.test

    path = os.path.join(os.path.dirname(onnx.backend.test.__file__), "data", "light", f"light_{name}.onnx")
    model = onnx.load(path)
    rng = np.random.default_rng(seed)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    weights: dict[str, tuple[int, ...]] = {}
    keep = []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            weights[node.output[0]] = tuple(int(d) for d in inits[node.input[0]])
        else:
            keep.append(node)
    data, *params = [i for i in model.graph.input if i.name not in inits]
    for p in params:
        weights[p.name] = tuple(d.dim_value for d in p.type.tensor_type.shape.dim)
    new_inits = [t for t in model.graph.initializer if any(t.name in n.input for n in keep)]
    for wname, shape in weights.items():
        new_inits.append(onnx.numpy_helper.from_array(_random_weight(wname, shape, rng), wname))
    graph = helper.make_graph(keep, model.graph.name, [data], list(model.graph.output), new_inits)
    out = helper.make_model(graph, opset_imports=model.opset_import, producer_name="tensoregg.testing")
    out.ir_version = model.ir_version
    return out


def _random_weight(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    lname = name.lower()
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if any(k in lname for k in ("var", "riv")):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if any(k in lname for k in ("_s_", "scale", "gamma")) or lname.endswith("_s"):
        return rng.uniform(0.2, 0.6, shape).astype(np.float32)  # damps residual growth
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def _canonical(graph: Any) -> str:
    """The program's text with value names replaced by their order of appearance."""
    names: dict[str, str] = {n: f"in{i}" for i, n in enumerate(graph.inputs)}
    for i, n in enumerate(graph.initializers):
        names[n] = f"c{i}"
    lines = []
    for node in graph.nodes:
        for out in node.outputs:
            if out:
                names.setdefault(out, f"v{len(names)}")
        args = ",".join(names.get(i, "_") for i in node.inputs)
        outs = ",".join(names.get(o, "_") for o in node.outputs)
        lines.append(f"{outs}={node.op}({args}){sorted((k, str(v)) for k, v in node.attrs.items())}")
    return "\n".join([*lines, "->" + ",".join(names[o] for o in graph.outputs)])


def programs(js: Mapping[str, Any], enc: Any, limit: int = 64,
             names: list[dict[str, str]] | None = None) -> list[Any]:
    """Decoded acyclic programs held by a serialized e-graph: every combination of e-node choices
    over the e-classes that hold several (up to ``limit`` combinations). ``names``, if given,
    receives for each program the value name each tensor e-class became."""
    import itertools

    from tensoregg.errors import CompileError
    from tensoregg.ir.terms import decode, first_choice, parse

    base = first_choice(js)
    open_classes = [(c, [n.id for n in nodes]) for c, nodes in parse(js).items() if len(nodes) > 1]
    found = []
    for picks in itertools.islice(itertools.product(*[ids for _, ids in open_classes]), limit):
        choice = dict(base)
        choice.update({c: pick for (c, _), pick in zip(open_classes, picks)})
        named: dict[str, str] = {}
        try:
            found.append(decode(js, choice, enc, names=named))
        except CompileError:  # a cyclic choice
            continue
        if names is not None:
            names.append(named)
    return found


def type_facts(js: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``shape_of`` and ``dtype_of`` facts of a serialized e-graph: per tensor e-class, its
    ``shape`` (a tuple) and ``dtype`` (a name), where the e-graph holds them."""
    from tensoregg.ir.terms import read_literal

    literal: dict[str, str] = {}  # e-class -> a Vec or String node in it
    for node_id, node in js["nodes"].items():
        if node["op"] == "Vec" or node["op"].startswith('"'):
            literal.setdefault(node["eclass"], node_id)
    facts: dict[str, dict[str, Any]] = {}
    for node in js["nodes"].values():
        if node["op"] in ("shape_of", "dtype_of") and node["eclass"] in literal:
            tensor = js["nodes"][node["children"][0]]["eclass"]
            facts.setdefault(tensor, {})[node["op"][:5]] = read_literal(js, literal[node["eclass"]])
    return facts


def assert_type_facts_hold(facts: Mapping[str, Mapping[str, Any]], names: Mapping[str, str], program: Any,
                           where: str) -> None:
    """Every shape/dtype fact of an e-class that ``program`` computes (as value ``names[class]``)
    is the type the program gives that value: a rule that sets a wrong fact misleads later rules."""
    for cid, fact in facts.items():
        t = program.types.get(names.get(cid, ""))
        if t is None:
            continue
        if "shape" in fact and tuple(fact["shape"]) != tuple(t.shape):
            raise AssertionError(f"{where}: the e-graph says {names[cid]} has shape {tuple(fact['shape'])}, "
                                 f"the program computes {tuple(t.shape)}")
        if "dtype" in fact and fact["dtype"] != t.dtype.name:
            raise AssertionError(f"{where}: the e-graph says {names[cid]} has dtype {fact['dtype']}, "
                                 f"the program computes {t.dtype.name}")


def check_rule(rule: Any, graph: Any, feeds: Mapping[str, np.ndarray], *, limit: int = 64,
               must_fire: bool = True) -> int:
    """Prove ``rule`` on one concrete graph: it must fire (unless ``must_fire`` is False: a premise-
    breaking case, where firing is allowed only if sound), add at least one new program, and every
    program the e-graph then holds must compute what ``graph`` computes: bit for bit (NaN equals
    NaN) when ``rule.exact``, else within the dtype's tolerance, and give each value the shape and
    dtype the e-graph's facts say. A tensoregg error from the rewritten programs, or egglog failing
    (or panicking) while it runs the rule, fails the check too (an AssertionError naming the rule).

    Returns how many programs were compared. Use with the rule's ``example`` strategy::

        @given(rule.example())
        def test(case):
            check_rule(rule, *case)
    """
    from tensoregg.errors import TensoreggError
    from tensoregg.ir import run_graph
    from tensoregg.ir.terms import encode, serialize
    from tensoregg.rules import ruleset_of

    enc = encode(graph)
    try:
        report = enc.egraph.run(ruleset_of([rule], name=f"check-{rule.name}"))
        fired = sum(report.num_matches_per_rule.values())
        js = serialize(enc.egraph) if fired else None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # egglog's panics are BaseExceptions (pyo3's PanicException)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise AssertionError(f"rule {rule.name}: egglog failed running it ({type(exc).__name__}: {first})\n"
                             f"{graph}") from exc
    if js is None:
        assert not must_fire, f"rule {rule.name} did not fire on its example:\n{graph}"
        return 0
    names: list[dict[str, str]] = []
    try:
        found = programs(js, enc, limit, names)
    except TensoreggError as exc:
        raise AssertionError(f"rule {rule.name}: the rewritten e-graph cannot be decoded: {exc}\n"
                             f"{graph}") from exc
    original = _canonical(graph)
    new = any(_canonical(g) != original for g in found)
    assert new or not must_fire, f"rule {rule.name} added no new program"
    want = run_graph(graph, feeds)
    same = assert_same if not getattr(rule, "exact", True) else assert_identical
    facts = type_facts(js)
    for g, named in zip(found, names):
        assert_type_facts_hold(facts, named, g, f"rule {rule.name}, program\n{g}")
        try:
            results = run_graph(g, feeds)
        except TensoreggError as exc:
            raise AssertionError(f"rule {rule.name}: a rewritten program fails: {exc}\n{g}") from exc
        for k, (got, ref) in enumerate(zip(results, want)):
            same(got, ref, f"rule {rule.name}, output {k} of\n{g}")
    return len(found)
