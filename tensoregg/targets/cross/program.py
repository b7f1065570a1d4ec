"""A Graph compiled for a cross machine and run under qemu-user.

Code generation is the ``llvm`` target's: the same loop program (``tensoregg.ir.program.lower_graph``,
contractions tiled by ``choose_gemm_schedule`` from this target's description) and the same LLVM
modules (``emit_model``), compiled by llvmlite for the machine's triple, CPU and features. The objects
are linked statically with the runner (``runner.py``) by the machine's cross gcc; ``run`` writes the
inputs to files, runs the executable under qemu-user on one thread and reads the outputs back. The
weights blob is written once, when the model is built.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tensoregg.errors import CompileError, CrossRunError, TensoreggError
from tensoregg.ir.graph import Graph
from tensoregg.ir.program import collect_outputs, lower_graph
from tensoregg.targets import Target
from tensoregg.targets.cross.machines import CrossMachine, missing_tools
from tensoregg.targets.cross.runner import RUNNER_C
from tensoregg.targets.llvm.gemm_schedules import choose_gemm_schedule
from tensoregg.targets.llvm.jit import emit_assembly, emit_objects
from tensoregg.targets.llvm.model import emit_model

STDERR_TAIL = 2000
"""Characters of a failed command's stderr an error quotes (its end, where the reason is)."""


class CrossProgram:
    """``graph`` compiled for ``machine`` as ``target`` describes it (see the module docstring)."""

    def __init__(self, graph: Graph, target: Target, machine: CrossMachine) -> None:
        why = missing_tools(machine)
        if why is not None:
            raise CompileError(f"target {machine.name!r} cannot build here: {why}")
        self.graph, self.target, self.machine = graph, target, machine
        self.program = lower_graph(graph, target=target.name, concats=True,
                                   choose=lambda problem: choose_gemm_schedule(problem, target))
        self.plan = self.program.plan
        self.ir = emit_model(self.program, target.lanes)
        self.kernel_names = self.ir.kernel_names
        self._dir = tempfile.TemporaryDirectory(prefix=f"tensoregg-{target.name}-")
        root = Path(self._dir.name)
        objects = []
        codes = emit_objects(self.ir.modules, target.cpu, target.features, triple=machine.triple,
                             abiname=machine.abiname)
        for k, code in enumerate(codes):
            objects.append(root / f"m{k}.o")
            objects[-1].write_bytes(code)
        self.executable = root / "model"
        _check(machine.name, [machine.gcc, "-static", "-o", str(self.executable), str(runner_object(machine)),
                              *map(str, objects), "-lm"], CompileError)
        self.weights = root / "weights.bin"
        self.weights.write_bytes(self.plan.weights_blob[self.plan.weights_base:].tobytes())

    def assembly(self) -> str:
        """The model's assembly text, as its object files are compiled (one module after another)."""
        return "\n".join(emit_assembly(m, self.target.cpu, self.target.features, triple=self.machine.triple,
                                       abiname=self.machine.abiname) for m in self.ir.modules)

    def command(self, arguments: Sequence[str]) -> list[str]:
        """The emulator command that runs the executable with ``arguments``."""
        cpu = self.machine.qemu_cpu.format(vlen=self.target.vector_bits)
        return [self.machine.qemu, "-cpu", cpu, str(self.executable), *arguments]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on ``feeds`` (already checked against the graph's input types) under the emulator."""
        g, places = self.graph, self.plan.places
        with tempfile.TemporaryDirectory(dir=self._dir.name) as tmp:
            inputs = []
            for k, name in enumerate(g.inputs):
                inputs.append(Path(tmp) / f"in{k}")
                inputs[-1].write_bytes(np.ascontiguousarray(feeds[name]).tobytes())
            slots: dict[str, Path] = {}  # a graph output the model writes -> its file
            arguments = [str(self.weights), str(self.plan.work_size), str(len(inputs)), *map(str, inputs),
                         str(len(g.outputs))]
            for k, name in enumerate(g.outputs):
                place = places.get(name)
                if place is not None and place.kind == "output" and place.at == k:
                    slots[name] = Path(tmp) / f"out{k}"
                    arguments += [str(slots[name]), str(place.nbytes)]
                else:
                    arguments += ["-", "0"]
            _check(self.machine.name, self.command(arguments), CrossRunError)
            produced = {name: np.fromfile(path, np.uint8).view(g.types[name].dtype).reshape(
                g.types[name].shape) for name, path in slots.items()}
        return collect_outputs(g, produced, feeds)


def runner_object(machine: CrossMachine) -> Path:
    """The runner compiled by ``machine``'s gcc, cached by the hash of its source and command
    (``$XDG_CACHE_HOME/tensoregg/cross/``)."""
    flags = ["-O2", "-std=c11", "-Wall", "-c"]
    key = hashlib.sha256("\0".join([RUNNER_C, machine.gcc, *flags]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tensoregg" / "cross"
    path = cache / f"runner-{machine.name}-{key}.o"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        source, built = Path(tmp) / "runner.c", Path(tmp) / "runner.o"
        source.write_text(RUNNER_C)
        _check(machine.name, [machine.gcc, *flags, "-o", str(built), str(source)], CompileError)
        os.replace(built, path)  # atomic: concurrent builds agree on the file
    return path


def _check(target: str, command: Sequence[str], error: type[TensoreggError]) -> None:
    """Run ``command``; raise ``error`` naming the target, the command and its stderr's end if it
    fails or is killed."""
    done = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
    if done.returncode == 0:
        return
    how = f"exited with status {done.returncode}"
    if done.returncode < 0:
        number = -done.returncode
        how = f"was killed by {signal.Signals(number).name if number in set(signal.Signals) else number}"
    raise error(f"target {target!r}: `{' '.join(command)}` {how}; stderr: "
                f"{done.stderr[-STDERR_TAIL:].strip() or '(empty)'}")
