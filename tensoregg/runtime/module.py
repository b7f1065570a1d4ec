"""``Module``: a compiled model with checked inputs, run on numpy arrays; saved and loaded as an
artifact (``tensoregg.runtime.artifact``)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tensoregg.errors import ArtifactError, InputError, ParameterError
from tensoregg.runtime.artifact import (
    LOADERS,
    Artifact,
    TargetCode,
    build_artifact,
    write_artifact,
)
from tensoregg.runtime.device_arrays import DeviceView, device_view
from tensoregg.runtime.signature import TensorSpec, specs
from tensoregg.runtime.threads import thread_count

if TYPE_CHECKING:  # types only: a compiled model runs without the compiler
    from tensoregg.ir import Graph, TensorType


class Module:
    """A compiled model. ``run`` takes inputs positionally or by name and returns a list of outputs.

    A Module is made by ``tensoregg.compile`` (``graph`` is the optimized Graph; ``export`` is the
    target's save hook, ``Registration.save``) or by ``load`` from an artifact (``graph`` is None:
    the Graph's text is ``graph_text``)."""

    def __init__(self, graph: Graph | None, target: str, program: Any, *,
                 export: Callable[[Any], TargetCode] | None = None, artifact: Artifact | None = None) -> None:
        if graph is not None:
            self.inputs, self.outputs = specs(graph, graph.inputs), specs(graph, graph.outputs)
        elif artifact is not None:
            self.inputs, self.outputs = artifact.inputs, artifact.outputs
        else:
            raise ValueError("a Module needs its Graph or its artifact")
        self.graph = graph
        self.target = target
        self.program = program
        """What the target built: ``run(feeds)`` executes it (``tensoregg.targets.Program``); on
        ``llvm`` a ``tensoregg.targets.llvm.NativeModel`` (``NativeExecutor`` when loaded)."""
        self.report: Any = None
        """The optimization report (``tensoregg.optimize.OptimizeReport``), when it ran."""
        self._export, self._artifact = export, artifact

    @property
    def num_threads(self) -> int:
        """Threads a run uses: settable where the target's program has threads (llvm: default every
        CPU available; from 1 to ``THREADS_PER_CPU`` per CPU, ``tensoregg.runtime.threads``). Set
        while another thread runs the model, it applies from the next run."""
        return int(getattr(self.program, "num_threads", 1))

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        n = thread_count(n)
        if not hasattr(self.program, "num_threads"):
            if n != 1:
                raise ParameterError(f"target {self.target!r} runs on one thread")
            return
        self.program.num_threads = n

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        return [t.shape for t in self.inputs]

    @property
    def input_dtypes(self) -> list[np.dtype]:
        return [t.dtype for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def output_types(self) -> list[TensorType] | list[TensorSpec]:
        """The outputs' types (the Graph's; a loaded Module's specs)."""
        if self.graph is None:
            return list(self.outputs)
        return [self.graph.types[n] for n in self.graph.outputs]

    @property
    def graph_text(self) -> str:
        """The optimized Graph as text."""
        return str(self.graph) if self.graph is not None else self.artifact().graph_text

    def run(self, *args: Any, **named: Any) -> list[Any]:
        """Run the model; inputs must match ``input_names``/``input_shapes``/``input_dtypes`` exactly.
        They are numpy arrays (copied in), or on ``cuda`` arrays in GPU memory (``__cuda_array_interface__``,
        ``__dlpack__``: torch, CuPy) read where they lie, the outputs then of the same kind
        (``tensoregg.runtime.device_arrays``)."""
        feeds = self.bind_inputs(args, named)
        on_device = [n for n, v in feeds.items() if isinstance(v, DeviceView)]
        if on_device and not getattr(self.program, "takes_device_arrays", False):
            raise InputError(f"input {on_device[0]!r}: an array in GPU memory, which target {self.target!r} "
                             "cannot read (cuda modules can): give a numpy array")
        return list(self.program.run(feeds))

    def bind_inputs(self, args: Sequence[Any], named: dict[str, Any]) -> dict[str, np.ndarray | DeviceView]:
        return bind(self.inputs, args, named)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as an artifact (one zip file; ``.tegg`` by convention) that ``load`` runs
        without the compiler; ArtifactError if its target cannot save."""
        return write_artifact(self.artifact(), path)

    def artifact(self) -> Artifact:
        """The model as an artifact (built on first use: for ``llvm`` it compiles the library)."""
        if self._artifact is None:
            if self._export is None or self.graph is None:
                raise ArtifactError(f"target {self.target!r} cannot save artifacts")
            self._artifact = build_artifact(self.target, self.inputs, self.outputs, str(self.graph),
                                            self._export(self.program))
        return self._artifact

    def __repr__(self) -> str:
        ins = ", ".join(f"{t.name}: {_type(t)}" for t in self.inputs)
        outs = ", ".join(_type(t) for t in self.outputs)
        return f"<tensoregg.Module target={self.target} ({ins}) -> ({outs}){self._size()}>"

    def __str__(self) -> str:
        """A summary (target, inputs and outputs with their dtypes and shapes, kernel count) and the
        optimized graph as text: what ``print(module)`` shows."""
        lines = [f"tensoregg.Module for target {self.target}{self._size()}"]
        lines += [f"  input  {t.name}: {_type(t)}" for t in self.inputs]
        lines += [f"  output {t.name}: {_type(t)}" for t in self.outputs]
        return "\n".join([*lines, self.graph_text])

    def _size(self) -> str:
        """``, N kernels`` (the program's compiled functions, where it has them; else the graph's
        nodes), or nothing for a loaded model that does not say."""
        kernels = getattr(self.program, "kernel_names", None)
        if kernels is not None:
            return f", {len(kernels)} kernels"
        return f", {len(self.graph.nodes)} nodes" if self.graph is not None else ""


def from_artifact(artifact: Artifact) -> Module:
    """The Module of a checked artifact (``read_artifact``), run by its target's loader
    (``LOADERS``)."""
    if artifact.target not in LOADERS:
        raise ArtifactError(f"manifest .target: no loader for target {artifact.target!r} "
                            f"(loadable: {', '.join(sorted(LOADERS))})")
    module_name, _, function = LOADERS[artifact.target].partition(":")
    loader = getattr(importlib.import_module(module_name), function)
    return Module(None, artifact.target, loader(artifact), artifact=artifact)


def bind(inputs: Sequence[TensorSpec], args: Sequence[Any], named: dict[str, Any],
         ) -> dict[str, np.ndarray | DeviceView]:
    """The run's inputs, given positionally or by name, checked against ``inputs``: InputError naming
    a missing, unknown or doubly given input or one whose dtype or shape differs."""
    names = [t.name for t in inputs]
    if len(args) > len(names):
        raise InputError(f"model takes {len(names)} inputs {names}, got {len(args)} positional")
    feeds = dict(zip(names, args))
    for key, value in named.items():
        if key not in names:
            raise InputError(f"unknown input {key!r}; inputs are {names}")
        if key in feeds:
            raise InputError(f"input {key!r} given both by position and by name")
        feeds[key] = value
    missing = [n for n in names if n not in feeds]
    if missing:
        raise InputError(f"missing inputs {missing}; inputs are {names}")
    return {t.name: _check_input(t, feeds[t.name]) for t in inputs}


def _type(t: TensorSpec) -> str:
    return f"{t.dtype.name}[{','.join(map(str, t.shape))}]"


def _check_input(want: TensorSpec, value: Any) -> np.ndarray | DeviceView:
    name = want.name
    array: np.ndarray | DeviceView
    if isinstance(value, np.ndarray):
        array = value
    elif (view := device_view(value, name)) is not None:
        array = view
    elif isinstance(value, (list, tuple, int, float, bool, np.generic)):
        array = np.asarray(value, dtype=want.dtype)
    else:
        raise InputError(f"input {name!r}: expected a numpy array, got {type(value).__name__}")
    if array.dtype != want.dtype:
        raise InputError(f"input {name!r}: dtype {array.dtype} does not match the model's {want.dtype}")
    if array.shape != want.shape:
        raise InputError(f"input {name!r}: shape {list(array.shape)} does not match the model's "
                         f"{list(want.shape)}")
    return array
