"""The accelerator as the mixed runtime drives it: values copied into its memory, programs run on
what is there, values copied out. ``Driver`` is the interface a real device implements (its memory
and its program queue); ``SimulatorDriver`` keeps the values as numpy arrays and runs each program
in the simulator. Imports numpy and the standard library only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class DeviceProgram(Protocol):
    """What a driver runs: named inputs in, outputs in order (an accelerator segment's program)."""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class Driver(Protocol):
    """One accelerator's memory and program queue, by value name."""

    def copy_in(self, name: str, value: np.ndarray) -> None:
        """Place ``value`` in the device's memory as ``name``."""
        ...

    def copy_out(self, name: str) -> np.ndarray:
        """The value ``name`` from the device's memory, as a host array."""
        ...

    def holds(self, name: str) -> bool:
        """Whether the device's memory holds ``name``."""
        ...

    def run(self, program: DeviceProgram, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        """Run ``program`` on the values ``inputs`` in the device's memory, leaving ``outputs`` there."""
        ...

    def reset(self) -> None:
        """Forget every value (before a new run)."""
        ...


class SimulatorDriver:
    """The simulator behind ``Driver``: device memory is a dict of arrays, copies are copies."""

    def __init__(self) -> None:
        self.memory: dict[str, np.ndarray] = {}

    def copy_in(self, name: str, value: np.ndarray) -> None:
        self.memory[name] = np.array(value, copy=True)

    def copy_out(self, name: str) -> np.ndarray:
        return np.array(self.memory[name], copy=True)

    def holds(self, name: str) -> bool:
        return name in self.memory

    def run(self, program: DeviceProgram, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        results = program.run({name: self.memory[name] for name in inputs})
        self.memory.update(zip(outputs, results))

    def reset(self) -> None:
        self.memory.clear()
