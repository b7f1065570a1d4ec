"""Model fuzzing: mutated ONNX models must compile and match the reference, or raise a tensoregg error.

A mutant is a seed model (the example model, small builds of ``tensoregg.testing_models``, the light
zoo models of the onnx wheel) with one to three mutations: of its bytes (bit flips, truncation), its
nodes (dropped, duplicated, rewired, another op or domain, attributes of the wrong type or value),
its initializers (dtype, shape, raw data length, NaN/Inf, empty), its inputs' dtypes and shapes
(huge, zero, symbolic dims), its outputs, its opsets, a cycle, or external data whose location is
absolute, climbs out with ``..``, is a symlink to a file outside, or belongs to a model given as
bytes. Mutant ``(seed, index)`` is rebuilt the same by ``Mutant.build``.

``check_mutant`` compiles a mutant for ``ref`` (not optimized: the oracle) and ``llvm`` in a forked
child with a wall-clock timeout and an address-space limit (and ``TENSOREGG_MEMORY_LIMIT`` below it),
runs both on the same random inputs and compares them. A refusal by a ``tensoregg.errors`` exception
is a pass; a signal, a hang, another exception type (``MemoryError`` included), or outputs that
differ is a bug. Outputs that match except where the reference has an infinity and llvm NaN are
counted apart (``nonfinite``), not as a bug: infinite weights make an infinity meet one of the other
sign (inf - inf) in one formulation and not in an equivalent one (BatchNorm folded into a Conv,
Winograd's transforms), and the reference follows the model's own order.
``python -m tensoregg.testing.modelfuzz --count N`` runs N mutants and reports.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import egglog
import numpy as np
import onnx
import onnx.defs
from onnx import TensorProto, helper, numpy_helper

from tensoregg import testing_models
from tensoregg.api import compile as compile_model
from tensoregg.errors import TensoreggError
from tensoregg.testing import LIGHT_MODELS, NATIVE_SLACK, assert_same, light_model, single_op_model, tolerance

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tinycnn.onnx"
MEMORY_LIMIT = 1 << 30
"""``TENSOREGG_MEMORY_LIMIT`` in the child: what tensoregg must refuse politely."""
ADDRESS_SPACE = 4 << 30
"""The child's address-space limit above what it has mapped at the fork: past tensoregg's limit, so
that reaching it (numpy's ``MemoryError``, LLVM's abort) is a bug found, not a refusal."""
RUN_BYTES = 256 << 20
"""Inputs larger than this are not drawn: the mutant is only compiled."""
OUTCOMES = ("matched", "nonfinite", "refused", "crash", "hang", "exception", "mismatch")
BUGS = frozenset(OUTCOMES[3:])


# ---- seed models ------------------------------------------------------------------------------------

SMALL_SEEDS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": lambda: testing_models.mlp(batch=2, sizes=(16, 8, 4)),
    "encoder_layer": lambda: testing_models.encoder_layer(seq=4, d_model=8, heads=2, ffn=16),
    "small_resnet": lambda: testing_models.small_resnet(widths=(4, 8), classes=5, size=16),
}
LIGHT_SEEDS = ("squeezenet", "shufflenet", "inception_v1", "densenet121", "resnet50", "inception_v2")
"""The light zoo models of the onnx wheel that compile in seconds (AlexNet, VGG-19 and ZFNet-512
carry 60-140 M weights: building and forking them costs more than fuzzing them finds)."""
assert set(LIGHT_SEEDS) <= set(LIGHT_MODELS)


def seed_names() -> list[str]:
    """The seed models: the example model where the source tree has it, the small builds, the light
    zoo models."""
    example = ["tinycnn"] if EXAMPLE.is_file() else []
    return example + list(SMALL_SEEDS) + [f"light:{n}" for n in LIGHT_SEEDS]


@functools.cache
def seed_bytes(name: str) -> bytes:
    """Seed model ``name`` (see ``seed_names``) serialized."""
    if name == "tinycnn":
        return EXAMPLE.read_bytes()
    if name.startswith("light:"):
        return light_model(name.removeprefix("light:")).SerializeToString()
    return SMALL_SEEDS[name]().SerializeToString()


# ---- mutations --------------------------------------------------------------------------------------

Rng = np.random.Generator
T = TypeVar("T")
INTS = (-(1 << 63), -(1 << 31), -7, -2, -1, 0, 1, 2, 3, 5, 64, 1 << 31, 1 << 40, (1 << 63) - 1)
FLOATS = (float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e-30, 0.5, 3.0, 1e30)
DIMS = (0, 1, 2, 3, 7, 64, 1 << 20, 1 << 31, 1 << 40, (1 << 63) - 1, -1, -5)
DTYPES = (0, *range(1, 24), 99, -1)
OPS = sorted({s.name for s in onnx.defs.get_all_schemas() if s.domain == ""})


class Mutation:
    """A mutation of a model: ``apply(model, rng, folder)`` changes ``model`` in place, or returns
    the bytes (or the path of a file in ``folder``) to compile instead."""

    registry: dict[str, Callable[[onnx.ModelProto, Rng, Path], bytes | str | None]] = {}

    @classmethod
    def register(cls, fn: Callable[[onnx.ModelProto, Rng, Path], bytes | str | None]) -> Callable[
            [onnx.ModelProto, Rng, Path], bytes | str | None]:
        cls.registry[fn.__name__.lstrip("_")] = fn
        return fn


def _pick(rng: Rng, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


def _values(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    return [*(i.name for i in g.input), *(t.name for t in g.initializer),
            *(o for n in g.node for o in n.output)]


@Mutation.register
def _bit_flips(model: onnx.ModelProto, rng: Rng, folder: Path) -> bytes:
    data = bytearray(model.SerializeToString())
    for _ in range(int(rng.integers(1, 9))):
        k = int(rng.integers(len(data) * 8))
        data[k // 8] ^= 1 << (k % 8)
    return bytes(data)


@Mutation.register
def _truncate(model: onnx.ModelProto, rng: Rng, folder: Path) -> bytes:
    data = model.SerializeToString()
    return data[:int(rng.integers(len(data)))]


@Mutation.register
def _drop_node(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    if model.graph.node:
        del model.graph.node[int(rng.integers(len(model.graph.node)))]


@Mutation.register
def _duplicate_node(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    nodes = model.graph.node
    if nodes:
        k = int(rng.integers(len(nodes)))
        copy = onnx.NodeProto()
        copy.CopyFrom(nodes[k])
        if rng.random() < 0.5:  # a dead copy; else its outputs are defined twice
            copy.output[:] = [f"{o}_dup" for o in copy.output]
        nodes.insert(k + 1, copy)


@Mutation.register
def _rewire_input(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    nodes = [n for n in model.graph.node if n.input]
    if nodes:
        node = _pick(rng, nodes)
        node.input[int(rng.integers(len(node.input)))] = _pick(rng, [*_values(model), "", "ghost"])


@Mutation.register
def _add_input(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    if model.graph.node:
        _pick(rng, model.graph.node).input.append(_pick(rng, [*_values(model), ""]))


@Mutation.register
def _other_op(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    if model.graph.node:
        _pick(rng, model.graph.node).op_type = _pick(rng, [*OPS, "FrobnicateTensor", ""])


@Mutation.register
def _other_domain(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    if model.graph.node:
        domain = _pick(rng, ["com.example", "ai.onnx.ml", "com.microsoft", "ai.onnx"])
        _pick(rng, model.graph.node).domain = domain
        if rng.random() < 0.5:
            model.opset_import.append(helper.make_opsetid(domain, int(_pick(rng, [1, 3, 17, 999]))))


def _random_attribute(name: str, rng: Rng) -> onnx.AttributeProto:
    """An attribute ``name`` of a random type and value (or a type without a value)."""
    values: list[Callable[[], object]] = [
        lambda: int(_pick(rng, INTS)),
        lambda: float(_pick(rng, FLOATS)),
        lambda: _pick(rng, ["", "zero", "NOTSET", "SAME_UPPER", "linear", "é\x00"]),
        lambda: [int(_pick(rng, INTS)) for _ in range(int(rng.integers(0, 9)))] or onnx.AttributeProto(
            name=name, type=onnx.AttributeProto.INTS),  # an empty list: its type said, not inferred
        lambda: [float(_pick(rng, FLOATS)) for _ in range(int(rng.integers(1, 5)))],
        lambda: numpy_helper.from_array(np.full([1] * int(rng.integers(3)), _pick(rng, FLOATS), np.float32)),
    ]
    kind = int(rng.integers(len(values) + 1))
    if kind < len(values):
        value = values[kind]()
        return value if isinstance(value, onnx.AttributeProto) else helper.make_attribute(name, value)
    return onnx.AttributeProto(name=name, type=_pick(rng, [onnx.AttributeProto.UNDEFINED,
                                                           onnx.AttributeProto.INTS,
                                                           onnx.AttributeProto.GRAPH]))


@Mutation.register
def _attribute_value(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    """An attribute replaced, added (one the op's schema names) or removed."""
    if not model.graph.node:
        return
    node = _pick(rng, model.graph.node)
    try:
        known = list(onnx.defs.get_schema(node.op_type, domain=node.domain).attributes)
    except onnx.defs.SchemaError:
        known = []
    names = [a.name for a in node.attribute] + known + ["bogus"]
    name = _pick(rng, names)
    kept = [a for a in node.attribute if a.name != name]
    new = kept if rng.random() < 0.2 else [*kept, _random_attribute(name, rng)]
    del node.attribute[:]
    node.attribute.extend(new)


def _initializer(model: onnx.ModelProto, rng: Rng) -> TensorProto | None:
    inits = model.graph.initializer
    return _pick(rng, inits) if inits else None


def _to_raw(t: TensorProto) -> None:
    if not t.HasField("raw_data"):
        try:
            array = numpy_helper.to_array(t)
        except Exception:
            return
        t.CopyFrom(numpy_helper.from_array(array, t.name))


@Mutation.register
def _initializer_dtype(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    t = _initializer(model, rng)
    if t is not None:
        _to_raw(t)
        t.data_type = int(_pick(rng, DTYPES))


@Mutation.register
def _initializer_shape(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    t = _initializer(model, rng)
    if t is not None:
        dims = list(t.dims)
        choice = int(rng.integers(4))
        if choice == 0 and dims:
            dims[int(rng.integers(len(dims)))] = int(_pick(rng, DIMS))
        elif choice == 1:
            dims.insert(int(rng.integers(len(dims) + 1)), int(_pick(rng, (1, 2, 0))))
        elif choice == 2 and dims:
            del dims[int(rng.integers(len(dims)))]
        else:
            dims = dims[::-1]
        del t.dims[:]
        t.dims.extend(dims)


@Mutation.register
def _initializer_bytes(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    t = _initializer(model, rng)
    if t is not None:
        _to_raw(t)
        n = len(t.raw_data)
        t.raw_data = t.raw_data[:int(rng.integers(n + 1))] if rng.random() < 0.5 else \
            t.raw_data + bytes(int(rng.integers(1, 17)))


@Mutation.register
def _initializer_values(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    """NaN, infinities, huge or extreme integer values in a weight."""
    t = _initializer(model, rng)
    if t is None:
        return
    try:
        array = numpy_helper.to_array(t).copy()
    except Exception:
        return
    if array.size == 0 or array.dtype == object:
        return
    flat = array.reshape(-1)
    picks = rng.integers(flat.size, size=int(rng.integers(1, min(flat.size, 8) + 1)))
    if flat.dtype.kind == "f":
        flat[picks] = rng.choice(np.array(FLOATS, np.float64), len(picks)).astype(flat.dtype)
    elif flat.dtype.kind in "iu":
        info = np.iinfo(flat.dtype)
        flat[picks] = rng.choice(np.array([info.min, info.max, -1, 0, 1 << 20], np.float64).clip(
            info.min, info.max), len(picks)).astype(flat.dtype)
    t.CopyFrom(numpy_helper.from_array(array, t.name))


@Mutation.register
def _empty_initializer(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    t = _initializer(model, rng)
    if t is not None:
        _to_raw(t)
        dims = list(t.dims) or [1]
        dims[int(rng.integers(len(dims)))] = 0
        del t.dims[:]
        t.dims.extend(dims)
        t.raw_data = b""


def _io(model: onnx.ModelProto, rng: Rng, outputs: bool = False) -> onnx.ValueInfoProto | None:
    weights = {t.name for t in model.graph.initializer}
    values = [v for v in (model.graph.output if outputs else model.graph.input) if v.name not in weights]
    return _pick(rng, values) if values else None


@Mutation.register
def _input_dtype(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    vi = _io(model, rng, outputs=rng.random() < 0.3)
    if vi is not None:
        vi.type.tensor_type.elem_type = int(_pick(rng, DTYPES))


@Mutation.register
def _input_shape(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    """A graph input's (or output's) dims: huge, zero (an empty tensor), negative, symbolic, one
    more or one fewer, or the shape removed."""
    vi = _io(model, rng, outputs=rng.random() < 0.3)
    if vi is None:
        return
    shape = vi.type.tensor_type.shape
    dims = shape.dim
    choice = int(rng.integers(5))
    if choice == 0 and dims:
        dims[int(rng.integers(len(dims)))].dim_value = int(_pick(rng, DIMS))
    elif choice == 1 and dims:
        dims[int(rng.integers(len(dims)))].dim_param = _pick(rng, ["N", "", "batch"])
    elif choice == 2:
        dims.add().dim_value = int(_pick(rng, (1, 2, 0)))
    elif choice == 3 and dims:
        del dims[int(rng.integers(len(dims)))]
    else:
        vi.type.tensor_type.ClearField("shape")


@Mutation.register
def _huge_dim(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    vi = _io(model, rng)
    if vi is not None and vi.type.tensor_type.shape.dim:
        dims = vi.type.tensor_type.shape.dim
        dims[int(rng.integers(len(dims)))].dim_value = int(_pick(rng, (1 << 16, 1 << 24, 1 << 31, 1 << 40)))


@Mutation.register
def _output_name(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    if model.graph.output:
        out = _pick(rng, model.graph.output)
        out.name = _pick(rng, [*_values(model), "ghost", ""])


@Mutation.register
def _cycle(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    nodes = model.graph.node
    if len(nodes) >= 2:
        i, j = sorted(int(k) for k in rng.choice(len(nodes), 2, replace=False))
        if nodes[i].input and nodes[j].output:
            nodes[i].input[int(rng.integers(len(nodes[i].input)))] = _pick(rng, nodes[j].output)
    elif nodes and nodes[0].input and nodes[0].output:  # a node reading its own output
        nodes[0].input[0] = nodes[0].output[0]


@Mutation.register
def _opset(model: onnx.ModelProto, rng: Rng, folder: Path) -> None:
    choice = int(rng.integers(4))
    if choice == 0 or not model.opset_import:
        del model.opset_import[:]
    elif choice == 1:
        model.opset_import.append(helper.make_opsetid("", int(_pick(rng, (1, 7, 13, 21)))))
    elif choice == 2:
        model.ir_version = int(_pick(rng, (0, 1, 3, 99, -1)))
    else:
        model.opset_import[0].version = int(_pick(rng, (-1, 0, 1, 6, 7, 9, 11, 13, 99, 10**6)))


@Mutation.register
def _external_data(model: onnx.ModelProto, rng: Rng, folder: Path) -> bytes | str | None:
    """An initializer moved to an external file: inside the model's folder (which loads), outside
    it by an absolute path, ``..`` or a symlink, missing, with a wrong offset or length; the model
    saved in ``folder`` and given as its path, or given as bytes."""
    t = _initializer(model, rng)
    if t is None:
        return None
    _to_raw(t)
    inside, outside = folder / "model", folder / "outside.bin"
    inside.mkdir(exist_ok=True)
    outside.write_bytes(t.raw_data)
    (inside / "w.bin").write_bytes(t.raw_data)
    if not (inside / "link.bin").is_symlink():
        (inside / "link.bin").symlink_to(outside)
    location = _pick(rng, ["w.bin", "w.bin", str(outside), "../outside.bin", "link.bin", "missing.bin",
                           "sub/../../outside.bin", "/dev/zero", ".", ""])
    entries = {"location": location}
    if rng.random() < 0.3:
        entries[_pick(rng, ["offset", "length"])] = str(_pick(rng, (-1, 1, 3, 1 << 40, 10**30)))
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    for key, value in entries.items():
        t.external_data.add(key=key, value=value)
    if rng.random() < 0.25:
        return model.SerializeToString()
    path = inside / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


MUTATIONS = tuple(sorted(Mutation.registry))
WEIGHTS = {"initializer_values": 4, "attribute_value": 4, "input_shape": 2, "empty_initializer": 2,
           "external_data": 2, "other_op": 2}
"""How much more often than the others (1) a mutation is drawn: those that leave more models that
compile, so that their results are compared."""
BYTE_MUTATIONS = ("bit_flips", "truncate")
"""Mutations of the serialized bytes: the last of a mutant's mutations."""


@dataclass(frozen=True)
class Mutant:
    """Mutant ``index`` of the run seeded ``seed``: its seed model and mutations are drawn from
    both, so ``Mutant(seed, index).build(folder)`` is the same model on every machine."""

    seed: int
    index: int
    models: tuple[str, ...] = ()
    """The seed models to draw from (default: ``seed_names()``)."""

    def plan(self) -> tuple[str, list[str]]:
        """(seed model, mutation names in order)."""
        rng = np.random.default_rng([self.seed, self.index])
        models = self.models or tuple(seed_names())
        model = _pick(rng, models)
        weights = np.array([WEIGHTS.get(m, 1) for m in MUTATIONS], float)
        count = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        picks = [str(m) for m in rng.choice(MUTATIONS, count, p=weights / weights.sum())]
        structural = [m for m in picks if m not in BYTE_MUTATIONS]
        return model, structural + [m for m in picks if m in BYTE_MUTATIONS][:1]

    def build(self, folder: Path) -> bytes | str:
        """The mutant: serialized bytes, or the path of a model file written in ``folder``."""
        name, mutations = self.plan()
        rng = np.random.default_rng([self.seed, self.index, 1])  # the mutations' own stream
        model = onnx.ModelProto()
        model.ParseFromString(seed_bytes(name))
        result: bytes | str | None = None
        for m in mutations:
            if isinstance(result, bytes):
                model = onnx.ModelProto()
                try:
                    model.ParseFromString(result)
                except Exception:
                    return result
            result = Mutation.registry[m](model, rng, folder) or result
        return result if result is not None else model.SerializeToString()

    def __str__(self) -> str:
        name, mutations = self.plan()
        return f"mutant {self.seed}:{self.index} ({name}: {', '.join(mutations)})"


# ---- checking a mutant in a child process -----------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What a mutant did: ``kind`` is one of ``OUTCOMES``; ``detail`` the error or bug."""

    kind: str
    detail: str = ""
    seconds: float = 0.0

    @property
    def bug(self) -> bool:
        return self.kind in BUGS


def compare(model: bytes | str) -> Outcome:
    """Compile ``model`` for ``ref`` (not optimized) and ``llvm``, run both on the same random inputs
    and compare (in this process: ``check_mutant`` runs it in a child)."""
    results, refusals, modules = [], [], []
    for target, optimize in (("ref", False), ("llvm", True)):
        try:
            modules.append(compile_model(model, target, optimize=optimize))
        except TensoreggError as e:
            refusals.append(f"{target} compile: {type(e).__name__}: {e}")
    if not modules:
        return Outcome("refused", refusals[0])
    feeds = _feeds(modules[0])
    if feeds is None:
        return Outcome("refused", "inputs over RUN_BYTES: compiled, not run")
    for module in modules:
        try:
            results.append(module.run(**feeds))
        except TensoreggError as e:
            refusals.append(f"{module.target} run: {type(e).__name__}: {e}")
    if len(results) == 2:
        try:
            if _same(*results):
                return Outcome("nonfinite", "; ".join(refusals))
        except AssertionError as e:
            return Outcome("mismatch", str(e)[:2000])
    return Outcome("refused", "; ".join(refusals)) if refusals else Outcome("matched")


def _feeds(module: object) -> dict[str, np.ndarray] | None:
    rng = np.random.default_rng(0)
    names, shapes, dtypes = module.input_names, module.input_shapes, module.input_dtypes  # type: ignore[attr-defined]
    if sum(int(np.prod(s, dtype=object)) * np.dtype(d).itemsize for s, d in zip(shapes, dtypes)) > RUN_BYTES:
        return None
    feeds = {}
    for name, shape, dtype in zip(names, shapes, dtypes):
        dtype = np.dtype(dtype)
        if dtype.kind in "iu":  # small and non-negative: valid as indices into most axes
            feeds[name] = rng.integers(0, 3, shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.random(shape) < 0.5
        elif dtype.kind == "O":
            feeds[name] = np.full(shape, "a", object)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _same(want: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> int:
    """AssertionError unless ``got`` matches ``want``; returns how many elements the reference has
    as an infinity where ``got`` has NaN (not a mismatch: see the module's docstring)."""
    assert len(got) == len(want), f"llvm gives {len(got)} outputs, ref {len(want)}"
    nonfinite = 0
    for k, (g, w) in enumerate(zip(got, want)):
        w, g = np.asarray(w), np.array(g)
        if w.dtype.kind == "f" and g.shape == w.shape:
            inf_to_nan = np.isinf(w) & np.isnan(g)
            nonfinite += int(inf_to_nan.sum())
            g[inf_to_nan] = w[inf_to_nan]
        rtol, atol = tolerance(w.dtype)
        finite = w[np.isfinite(w)] if w.dtype.kind == "f" else w
        scale = float(np.abs(finite).max()) if finite.size and w.dtype.kind == "f" else 0.0
        assert_same(g, w, f"output {k}", rtol * NATIVE_SLACK * 25, atol * NATIVE_SLACK + 1e-4 * scale)
    return nonfinite


def check_mutant(model: bytes | str | Callable[[], bytes | str], *, timeout: float = 60.0,
                 address_space: int = ADDRESS_SPACE, memory_limit: int = MEMORY_LIMIT) -> Outcome:
    """Run ``compare`` on ``model`` (or on what the callable builds, in the child) in a forked child
    limited to ``timeout`` seconds and ``address_space`` bytes beyond what it has mapped, with
    ``TENSOREGG_MEMORY_LIMIT`` set to ``memory_limit``: a signal, a hang or an out-of-memory death
    is reported here, not suffered."""
    _warm_up()
    read, write = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, then leave without the parent's cleanup
        os.close(read)
        code = 0
        try:
            _keep_egraphs()
            os.environ["TENSOREGG_MEMORY_LIMIT"] = str(memory_limit)
            mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (mapped + address_space, mapped + address_space))
            outcome = compare(model() if callable(model) else model)
        except BaseException as e:  # everything must reach the parent, named by its type
            outcome = Outcome("exception", f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}")
            code = 1
        os.write(write, json.dumps([outcome.kind, outcome.detail[:8000]]).encode())
        os._exit(code)
    os.close(write)
    status = _wait(pid, start + timeout)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read()
    seconds = time.monotonic() - start
    if status is None:
        return Outcome("hang", f"no result after {timeout:g} s", seconds)
    if os.WIFSIGNALED(status):
        return Outcome("crash", f"died of {signal.Signals(os.WTERMSIG(status)).name}", seconds)
    try:
        kind, detail = json.loads(message)
    except ValueError:
        return Outcome("crash", f"exit status {os.waitstatus_to_exitcode(status)} without a result", seconds)
    return Outcome(kind, detail, seconds)


def _keep_egraphs() -> None:
    """In a forked child: no e-graph is ever dropped. Dropping one waits for egglog's thread pool
    (rayon's, started when egglog is imported), whose worker thread a forked child does not have:
    the child would hang. The e-graphs inherited stay unreachable to the collector (``gc.freeze``), and
    those the child makes are kept until it exits."""
    gc.freeze()
    kept: list[egglog.EGraph] = []
    init = egglog.EGraph.__init__

    def keep(self: egglog.EGraph, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        kept.append(self)

    egglog.EGraph.__init__ = keep  # type: ignore[method-assign]


@functools.cache
def _warm_up() -> None:
    """Compile a one-node model here, once, not optimized: the host's description and LLVM are then
    set up before the fork, not again in every child."""
    relu = single_op_model("Relu", [np.zeros((2, 3), np.float32)]).SerializeToString()
    for target in ("ref", "llvm"):
        compile_model(relu, target, optimize=False)


def _wait(pid: int, deadline: float) -> int | None:
    """The child's wait status, or None after killing it at ``deadline``. (The pipe is read after:
    a child that fills it blocks, and is then reported as hanging; results are a few kilobytes.)"""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.02)


def fuzz(count: int, *, seed: int = 0, start: int = 0, models: Sequence[str] = (), timeout: float = 60.0,
         report: Callable[[Mutant, Outcome], None] | None = None) -> Counter[str]:
    """Check mutants ``start .. start + count - 1`` of run ``seed``; count the outcomes (and call
    ``report`` with each)."""
    counts: Counter[str] = Counter()
    for k in range(start, start + count):
        mutant = Mutant(seed, k, tuple(models))
        name, _ = mutant.plan()
        seed_bytes(name)  # built here, once, not in every child
        with tempfile.TemporaryDirectory(prefix="modelfuzz-") as tmp:
            outcome = check_mutant(lambda: mutant.build(Path(tmp)), timeout=timeout)
        counts[outcome.kind] += 1
        if report is not None:
            report(mutant, outcome)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tensoregg.testing.modelfuzz --count N``: check N mutants, print each bug and the
    counts; exit status 1 if there was a bug."""
    parser = argparse.ArgumentParser(prog="python -m tensoregg.testing.modelfuzz",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--count", type=int, default=100, help="mutants to check (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    parser.add_argument("--start", type=int, default=0, help="index of the first mutant (default 0)")
    parser.add_argument("--models", default="", help=f"comma-separated seed models (default all: "
                                                       f"{','.join(seed_names())})")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant (default 60)")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every mutant's outcome")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(seed_names())
    if unknown:
        parser.error(f"unknown seed models {sorted(unknown)}; known: {', '.join(seed_names())}")

    def report(mutant: Mutant, outcome: Outcome) -> None:
        if outcome.bug or args.verbose:
            print(f"{outcome.kind.upper():9} {mutant} {outcome.seconds:.1f}s: {outcome.detail[:600]}",
                  flush=True)

    started = time.monotonic()
    counts = fuzz(args.count, seed=args.seed, start=args.start, models=models, timeout=args.timeout,
                  report=report)
    print(f"{args.count} mutants (seed {args.seed}, from {args.start}) in "
          f"{time.monotonic() - started:.0f} s: " + ", ".join(f"{k} {counts[k]}" for k in OUTCOMES))
    return 1 if any(counts[k] for k in BUGS) else 0


if __name__ == "__main__":
    sys.exit(main())
