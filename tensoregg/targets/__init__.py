"""Targets: what a machine offers (its hardware facts, ``Target``), which rule families it uses, and
the registry through which ``compile`` finds a target by name.

A target is one folder here and one ``register_target`` call: its description, its code generator
and executor (``build``: optimized Graph -> ``Program``), and whether it can run on this machine.
Cost models and lowerings read only the Target. The built-in targets are ``ref`` (the reference
interpreter, ``targets/ref``), ``llvm`` (native code for the host, ``targets/llvm``), ``interp`` (the
loop program executed by numpy, ``targets/interp``), and ``aarch64`` and ``riscv64`` (native code for
those CPUs run under qemu-user, ``targets/cross``), ``accel`` and ``accel-small`` (an int8 accelerator
and its simulator, ``targets/accel``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tensoregg.errors import CompileError
from tensoregg.ir.schedules import Pricer
from tensoregg.ir.target import RULE_FAMILIES, Target
from tensoregg.runtime.artifact import TargetCode

if TYPE_CHECKING:
    import numpy as np

    from tensoregg.ir import Graph

class Program(Protocol):
    """What a target's code generator makes of a Graph: ``run`` takes the inputs by name and returns
    the outputs in the Graph's order. A program that can use several threads has ``num_threads``."""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def runs_anywhere() -> str | None:
    """The ``unavailable`` of a target that needs nothing this machine might lack."""
    return None


@dataclass(frozen=True)
class Registration:
    """A target as ``compile`` finds it by name: its description, its code generator and executor
    (``build``), and whether it can run on this machine."""

    name: str
    summary: str
    """One line: what the target makes and where it runs."""
    describe: Callable[[], Target]
    """The target's hardware description (a host target measures itself on first use)."""
    build: Callable[[Graph, Target], Program]
    """Code generation and loading: an optimized Graph and the description -> a runnable Program."""
    unavailable: Callable[[], str | None] = runs_anywhere
    """Why the target cannot run here (a missing tool or device), or None where it can."""
    schedules: Pricer | None = None
    """Its schedule templates priced by its cost model: the alternatives of every contraction that
    the model's extraction chooses from (None: the target does not tile; contractions stay as the
    graph cost model prices them)."""
    save: Callable[[Program], TargetCode] | None = None
    """Its save hook: a program it built -> the code of an artifact (``Module.save``), loaded back by
    the target's loader (``tensoregg.runtime.artifact.LOADERS``); None: the target cannot save."""


_REGISTRY: dict[str, Registration] = {}


def register_target(name: str, *, summary: str, describe: Callable[[], Target],
                    build: Callable[[Graph, Target], Program],
                    unavailable: Callable[[], str | None] = runs_anywhere,
                    schedules: Pricer | None = None, save: Callable[[Program], TargetCode] | None = None,
                   replace: bool = False) -> Registration:
    """Make target ``name`` known to ``compile``, ``explain`` and the ``tensoregg`` command. A second
    registration of a name is an error unless ``replace``."""
    if name in _REGISTRY and not replace:
        raise CompileError(f"target {name!r} is already registered (pass replace=True to replace it)")
    entry = Registration(name, summary, describe, build, unavailable, schedules, save)
    _REGISTRY[name] = entry
    return entry


def available() -> list[str]:
    """The names of the registered targets."""
    return sorted(_REGISTRY)


def registration(name: str) -> Registration:
    """The registration of target ``name``; CompileError naming the known ones if there is none."""
    if name not in _REGISTRY:
        raise CompileError(f"unknown target {name!r}; available targets: {', '.join(available())}")
    return _REGISTRY[name]


def get_target(name: str) -> Target:
    """The description of target ``name`` (``llvm``: this host, measured on first use)."""
    return registration(name).describe()


from tensoregg.targets import accel, cross, cuda, interp, llvm, ref  # noqa: E402  (the built-in targets register themselves)
from tensoregg.targets.ref import REF  # noqa: E402

__all__ = ["REF", "RULE_FAMILIES", "Program", "Registration", "Target", "accel", "available", "cross", "cuda",
           "get_target", "interp", "llvm", "ref", "register_target", "registration"]
