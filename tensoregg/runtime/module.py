"""``Module``: a compiled model with checked inputs, run on numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tensoregg.errors import InputError, ParameterError
from tensoregg.runtime.threads import thread_count

if TYPE_CHECKING:  # types only: a compiled model runs without the compiler
    from tensoregg.ir import Graph, TensorType


class Module:
    """A compiled model. ``run`` takes inputs positionally or by name and returns a list of outputs."""

    def __init__(self, graph: Graph, target: str, program: Any) -> None:
        self.graph = graph
        self.target = target
        self.program = program
        """What the target built: ``run(feeds)`` executes it (``tensoregg.targets.Program``); on
        ``llvm`` a ``tensoregg.targets.llvm.NativeModel``."""
        self.report: Any = None
        """The optimization report (``tensoregg.optimize.OptimizeReport``), when it ran."""

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
        return list(self.graph.inputs)

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        return [t.shape for t in self.graph.inputs.values()]

    @property
    def input_dtypes(self) -> list[np.dtype]:
        return [t.dtype for t in self.graph.inputs.values()]

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    @property
    def output_types(self) -> list[TensorType]:
        return [self.graph.types[n] for n in self.graph.outputs]

    def run(self, *args: Any, **named: Any) -> list[np.ndarray]:
        """Run the model; inputs must match ``input_names``/``input_shapes``/``input_dtypes`` exactly."""
        return list(self.program.run(self.bind_inputs(args, named)))

    def bind_inputs(self, args: Sequence[Any], named: dict[str, Any]) -> dict[str, np.ndarray]:
        names = self.input_names
        if len(args) > len(names):
            raise InputError(f"model takes {len(names)} inputs {names}, got {len(args)} positional")
        feeds = dict(zip(names, args))
        for key, value in named.items():
            if key not in self.graph.inputs:
                raise InputError(f"unknown input {key!r}; inputs are {names}")
            if key in feeds:
                raise InputError(f"input {key!r} given both by position and by name")
            feeds[key] = value
        missing = [n for n in names if n not in feeds]
        if missing:
            raise InputError(f"missing inputs {missing}; inputs are {names}")
        return {n: _check_input(n, feeds[n], self.graph.inputs[n]) for n in names}

    def __repr__(self) -> str:
        ins = ", ".join(f"{n}: {t}" for n, t in self.graph.inputs.items())
        outs = ", ".join(str(t) for t in self.output_types)
        return f"<tensoregg.Module target={self.target} ({ins}) -> ({outs})>"


def _check_input(name: str, value: Any, want: TensorType) -> np.ndarray:
    if isinstance(value, np.ndarray):
        array = value
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
